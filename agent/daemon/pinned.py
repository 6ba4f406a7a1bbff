"""Long-term pinned memory, read only while it can matter: the node fragmented and a remediation
step already run in the episode (the ladder exhausted or about to be). At most PROCS_PER_TICK
/proc/PID/status files a tick (agent.kernel.pinscan); the node-wide FOLL_PIN count comes with
the vmstat the tick already read. The holders' pods come from their cgroups."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping

from agent.assess.pinned import HOLDERS_SHOWN, PinnedMemory, pinned_memory
from agent.assess.verdict import Assessment, Verdict
from agent.decide.remediation import RemedyState
from agent.kernel.cgroupinfo import pod_uid
from agent.kernel.cgroups import CgroupReader
from agent.kernel.pinscan import PinScanner

log = logging.getLogger("memfrag.agent")
PROCS_PER_TICK = 256


class PinnedWatch:
    def __init__(self, scanner: PinScanner, cgroups: CgroupReader) -> None:
        self.scanner = scanner
        self.cgroups = cgroups
        self.reads = 0  # ticks that read /proc/*/status

    def read(
        self, a: Assessment | None, vmstat: Mapping[str, int] | None, remedy: RemedyState
    ) -> PinnedMemory | None:
        if a is None or a.verdict != Verdict.FRAGMENTED or not remedy.in_episode:
            return None
        if not remedy.tried:
            return None
        self.reads += 1
        holders = self.scanner.scan(PROCS_PER_TICK)
        named = []
        for h in holders[:HOLDERS_SHOWN]:
            paths = self.cgroups.of_pid(h.pid)
            path = paths.path if paths is not None else None
            named.append(dataclasses.replace(h, pod_uid=pod_uid(path) if path else None))
        return pinned_memory(a, vmstat, (*named, *holders[HOLDERS_SHOWN:]))
