"""Which cgroup (and pod) a process is in, and a pod's kernel memory: pure parsers of the cgroup
files (agent.kernel.cgroups reads them).

cgroup v1 and v2 may both be mounted (this project's VM: v1 controllers, a v2 hierarchy at
/sys/fs/cgroup/unified without the memory controller), so a process has a v1 memory path and a
v2 path: the memory controller's path names where its kernel memory is charged, the v2 one is
used when there is no v1 memory controller. A pod's cgroup path carries its UID
(`.../pod<uid>/...` with the cgroupfs driver, `...-pod<uid_with_underscores>.slice` with systemd).

Kernel memory per pod, the unmovable kind that fragments pageblocks: v2 memory.stat's
slab_unreclaimable + kernel_stack + pagetables + sock + percpu; v1 memory.kmem.usage_in_bytes
(slab, stacks, page tables) + memory.kmem.tcp.usage_in_bytes (socket buffers). v1's memory.stat
has none of the kernel fields (cache, rss, shmem, ...: checked on 6.18), so it adds nothing.
Pure: no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from agent.kernel.numbers import is_uint

MAX_PATH = 4096
MAX_CGROUP_LINES = 64  # one line per hierarchy: a dozen in practice
MAX_PODS = 4096  # far above a node's pod limit (110 by default)
V2_KERNEL_FIELDS = ("slab_unreclaimable", "kernel_stack", "pagetables", "sock", "percpu")
_POD = re.compile(r"pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})")


@dataclass(frozen=True)
class CgroupPaths:
    memory: str | None  # v1 memory controller's path
    unified: str | None  # v2 path ("0::/...")

    @property
    def path(self) -> str | None:
        """The path to attribute memory to: v1 memory's where it exists, else v2's."""
        return self.memory if self.memory is not None else self.unified


def parse_proc_cgroup(text: str) -> CgroupPaths:
    """/proc/PID/cgroup: `id:controllers:path` lines. Total: odd lines are skipped."""
    memory = unified = None
    for line in text.splitlines()[:MAX_CGROUP_LINES]:
        hid, sep, rest = line.partition(":")
        controllers, sep2, path = rest.partition(":")
        if not (sep and sep2) or not path.startswith("/") or len(path) > MAX_PATH:
            continue
        if hid == "0" and controllers == "":
            unified = path
        elif "memory" in controllers.split(","):
            memory = path
    return CgroupPaths(memory, unified)


def pod_uid(path: str) -> str | None:
    """The pod UID a kubelet cgroup path carries (the last one, for nested paths)."""
    found = _POD.findall(path[:MAX_PATH])
    return found[-1].replace("_", "-") if found else None


@dataclass(frozen=True)
class KernelMemory:
    """Unmovable kernel memory charged to one cgroup, bytes; `parts` by source field."""

    total: int
    parts: tuple[tuple[str, int], ...]


def parse_v2_stat(text: str) -> KernelMemory | None:
    """v2 memory.stat → the kernel fields; None when none of them is present."""
    parts = []
    for line in text.splitlines()[:1000]:
        key, _, value = line.partition(" ")
        if key in V2_KERNEL_FIELDS and is_uint(value.strip()):
            parts.append((key, int(value)))
    if not parts:
        return None
    return KernelMemory(sum(v for _, v in parts), tuple(sorted(parts)))


def parse_v1_kmem(text: str, part: str = "kmem") -> KernelMemory | None:
    """v1 memory.kmem.usage_in_bytes or memory.kmem.tcp.usage_in_bytes (one integer)."""
    value = text.strip()
    if not is_uint(value):
        return None
    return KernelMemory(int(value), ((part, int(value)),))


def combined(*parts: KernelMemory | None) -> KernelMemory | None:
    """The sum of the files that could be read; None when none could."""
    got = [p for p in parts if p is not None]
    if not got:
        return None
    return KernelMemory(sum(p.total for p in got), tuple(sorted(x for p in got for x in p.parts)))
