"""The pods holding the most unmovable kernel memory, read from the cgroup files when the cause
is unmovable (agent.kernel.cgroups), at most every REFRESH_SECONDS: a walk of the kubelet's pod
cgroups (one or two small files per pod) is cheap, but it is never done for a node that does
not need it. reporting.kernel_memory_pods bounds how many are named (0: never read)."""

from __future__ import annotations

import logging

from agent.assess.tracing import PodKernelMemory, top_pods
from agent.assess.verdict import Assessment, CauseKind
from agent.kernel.cgroups import CgroupReader

log = logging.getLogger("memfrag.agent")
REFRESH_SECONDS = 60.0


class KernelMemoryPods:
    def __init__(self, cgroups: CgroupReader) -> None:
        self.cgroups = cgroups
        self._at: float | None = None
        self._top: tuple[PodKernelMemory, ...] = ()
        self.reads = 0

    def top(self, now: float, a: Assessment | None, n: int) -> tuple[PodKernelMemory, ...]:
        if n <= 0 or a is None or a.cause.kind != CauseKind.UNMOVABLE:
            self._at, self._top = None, ()
            return ()
        if self._at is None or now - self._at >= REFRESH_SECONDS:
            self._at, self.reads = now, self.reads + 1
            by_pod = self.cgroups.pod_kernel_memory()
            if not by_pod:
                log.info(
                    "no pod cgroups with kernel memory",
                    extra={"cgroup_root": str(self.cgroups.root)},
                )
            self._top = top_pods(by_pod, n) if by_pod else ()
        return self._top[:n]
