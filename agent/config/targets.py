"""Hugepage pool targets as operators write them, one grammar for `check --hugepages`, `ready`
and the daemon's assessment.hugepage_targets: `SIZE=COUNT`, optionally `@NUMA_NODE`."""

from __future__ import annotations

import re
from dataclasses import dataclass

from agent.base.errors import MemfragError

_SIZE = re.compile(r"([0-9]{1,9})([kKmMgG])(?:i?B)?")
_UNIT = {"k": 1, "m": 1024, "g": 1024 * 1024}
MAX_TARGETS = 16  # pool sizes times NUMA nodes an operator lists; more is a typo or an attack


@dataclass(frozen=True)
class HugepageTarget:
    size_kib: int
    pages: int
    numa_node: int | None = None  # None: the machine-wide pool


def parse_target(text: str) -> tuple[int, int]:
    """`2M=1024`, `1G=4` or `2048kB=1024` -> (size in KiB, count)."""
    size, sep, count = text.partition("=")
    m = _SIZE.fullmatch(size.strip())
    if not sep or m is None or not count.strip().isdigit() or len(count.strip()) > 9:
        raise MemfragError(f"hugepage target {text!r}: expected SIZE=COUNT, e.g. 2M=1024 or 1G=4")
    return int(m.group(1)) * _UNIT[m.group(2).lower()], int(count)


def parse_targets(text: str) -> tuple[HugepageTarget, ...]:
    """`2M=1024,1G=4@0`: comma-separated SIZE=COUNT[@NUMA_NODE]; '' is none. One size and node
    given twice is an error, not a silent last-wins."""
    out: list[HugepageTarget] = []
    items = [t for t in text.split(",") if t.strip()] if text.strip() else []
    if len(items) > MAX_TARGETS:
        raise MemfragError(f"hugepage targets: {len(items)} given, at most {MAX_TARGETS}")
    for item in items:
        spec, at, node = item.partition("@")
        if at and (not node.strip().isdigit() or len(node.strip()) > 4):
            raise MemfragError(f"hugepage target {item.strip()!r}: @NUMA_NODE must be a number")
        size, pages = parse_target(spec)
        t = HugepageTarget(size, pages, int(node) if at else None)
        if any((o.size_kib, o.numa_node) == (t.size_kib, t.numa_node) for o in out):
            raise MemfragError(f"hugepage target {item.strip()!r}: that pool is given twice")
        out.append(t)
    return tuple(out)


def targets_error(text: str) -> str | None:
    """For the config key's rule: the error in words, or None."""
    try:
        parse_targets(text)
    except MemfragError as exc:
        return str(exc)
    return None
