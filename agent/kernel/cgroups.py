"""Reads /proc/PID/cgroup and the pods' memory files (parsed by agent.kernel.cgroupinfo)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

from agent.base.files import read_text
from agent.kernel.cgroupinfo import (
    MAX_PODS,
    CgroupPaths,
    KernelMemory,
    combined,
    parse_proc_cgroup,
    parse_v1_kmem,
    parse_v2_stat,
    pod_uid,
)


class CgroupReader:
    """Reads /proc/PID/cgroup and the pods' memory files under a cgroup root."""

    def __init__(self, cgroup_root: str | Path = "/sys/fs/cgroup", proc_root: str | Path = "/proc"):
        self.root = Path(cgroup_root)
        self.proc = Path(proc_root)

    def of_pid(self, pid: int) -> CgroupPaths | None:
        """None when the process is gone (or its file unreadable)."""
        try:
            return parse_proc_cgroup(read_text(self.proc / str(pid) / "cgroup", limit=1 << 16))
        except (OSError, ValueError):
            return None

    def pod_kernel_memory(self) -> dict[str, KernelMemory]:
        """Per pod UID, its kernel memory: from v2 memory.stat where the memory controller is
        on the v2 hierarchy, else from v1 memory.kmem.usage_in_bytes and .kmem.tcp."""
        out: dict[str, KernelMemory] = {}
        for v2 in (self.root, self.root / "unified"):
            if (v2 / "cgroup.controllers").exists():
                for uid, d in _pod_dirs(v2):
                    km = _read(d / "memory.stat", parse_v2_stat)
                    if km is not None:
                        out.setdefault(uid, km)
        if not out:
            for uid, d in _pod_dirs(self.root / "memory"):
                km = combined(
                    _read(d / "memory.kmem.usage_in_bytes", parse_v1_kmem),
                    _read(d / "memory.kmem.tcp.usage_in_bytes", _tcp),
                )
                if km is not None:
                    out.setdefault(uid, km)
        return out


def _tcp(text: str) -> KernelMemory | None:
    return parse_v1_kmem(text, "kmem_tcp")


def _read(path: Path, parse: Callable[[str], KernelMemory | None]) -> KernelMemory | None:
    try:
        return parse(read_text(path, limit=1 << 20))
    except (OSError, ValueError):
        return None


def _pod_dirs(base: Path, depth: int = 4) -> Iterator[tuple[str, Path]]:
    """Pod-level cgroup directories under the kubelet's roots (kubepods, kubepods.slice), at
    most `depth` levels down and MAX_PODS of them: the walk is bounded."""
    seen = 0
    stack = [(p, 0) for p in _children(base) if p.name.startswith("kubepods")]
    while stack and seen < MAX_PODS:
        d, level = stack.pop()
        uid = pod_uid(d.name)
        if uid is not None:
            seen += 1
            yield uid, d
            continue
        if level < depth:
            stack.extend((c, level + 1) for c in _children(d))


def _children(d: Path) -> list[Path]:
    try:
        with os.scandir(d) as it:
            return [Path(e.path) for e in it if e.is_dir(follow_symlinks=False)][:MAX_PODS]
    except OSError:
        return []
