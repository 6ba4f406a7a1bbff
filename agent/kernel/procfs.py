"""Reads the kernel's files under a root that is a parameter (/proc, /sys, or a snapshot).

The only module of the observe layer that touches the filesystem: everything it returns is
parsed by the pure modules. Only buddyinfo is required; anything else missing or unreadable is
recorded as a gap that narrows the report.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from agent.base.errors import ParseError
from agent.base.files import read_text
from agent.kernel.buddyinfo import parse_buddyinfo
from agent.kernel.meminfo import parse_meminfo
from agent.kernel.numbers import is_int
from agent.kernel.observation import Observation
from agent.kernel.pagetypeinfo import PageTypeInfo, parse_pagetypeinfo
from agent.kernel.psi import parse_pressure
from agent.kernel.vmstat import parse_vmstat
from agent.kernel.zoneinfo import parse_zoneinfo

T = TypeVar("T")

SYSCTLS = (
    "min_free_kbytes",
    "watermark_scale_factor",
    "compaction_proactiveness",
    "extfrag_threshold",
    "watermark_boost_factor",
)


def gap(path: Path, exc: OSError) -> str:
    """The report's words for a file or directory that could not be read."""
    if isinstance(exc, FileNotFoundError):
        return f"{path}: not present"
    return f"{path}: unreadable ({exc.strerror or exc})"


def optional(path: Path, parse: Callable[[str, str], T], gaps: list[str]) -> T | None:
    """`parse` of the file's text, or None with the gap recorded when it cannot be read."""
    try:
        text = read_text(path)
    except OSError as exc:
        gaps.append(gap(path, exc))
        return None
    return parse(text, str(path))


class ProcReader:
    """Reads one host's (or snapshot's) memory files. Cheap files every poll; pagetypeinfo only
    when asked, because the kernel walks every pageblock to print it."""

    def __init__(self, proc_root: str | Path = "/proc", sys_root: str | Path = "/sys") -> None:
        self.proc = Path(proc_root)
        self.sys = Path(sys_root)
        self.live = self.proc.resolve() == Path("/proc")

    def buddyinfo_text(self) -> str:
        return read_text(self.proc / "buddyinfo")

    def observe(self, with_pagetypeinfo: bool = True) -> Observation:
        """One coherent look. Raises ParseError for malformed content and for a missing or
        unreadable buddyinfo (nothing can be assessed without it)."""
        path = self.proc / "buddyinfo"
        try:
            buddy = parse_buddyinfo(read_text(path), str(path))
        except OSError as exc:
            raise ParseError(str(path), None, f"cannot read: {exc.strerror or exc}") from exc
        gaps: list[str] = []
        pagetype: PageTypeInfo | None = None
        if with_pagetypeinfo:
            pagetype = optional(self.proc / "pagetypeinfo", parse_pagetypeinfo, gaps)
        sysctl: dict[str, int] = {}
        vm = self.proc / "sys" / "vm"
        if vm.is_dir():
            for name in SYSCTLS:
                value = optional(vm / name, _int_file, gaps)
                if value is not None:
                    sysctl[name] = value
        else:
            gaps.append(f"{vm}: not present (vm tunables not reviewed)")
        return Observation(
            buddy=buddy,
            zoneinfo=optional(self.proc / "zoneinfo", parse_zoneinfo, gaps),
            pagetype=pagetype,
            vmstat=optional(self.proc / "vmstat", parse_vmstat, gaps),
            meminfo=optional(self.proc / "meminfo", parse_meminfo, gaps),
            pressure=optional(self.proc / "pressure" / "memory", parse_pressure, gaps),
            sysctl=sysctl,
            page_size=os.sysconf("SC_PAGE_SIZE") if self.live else 4096,
            gaps=tuple(gaps),
        )

    def numa_nodes_with_compact(self) -> tuple[int, ...]:
        """NUMA nodes that offer per-node compaction (needs CONFIG_NUMA)."""
        base = self.sys / "devices" / "system" / "node"
        out = []
        for p in sorted(base.glob("node[0-9]*")):
            if (p / "compact").exists():
                out.append(int(p.name[4:]))
        return tuple(out)


def _int_file(text: str, source: str) -> int:
    value = text.strip()
    if not is_int(value):
        raise ParseError(source, 1, f"expected an integer, got {value!r:.40}")
    return int(value)
