"""/proc/pagetypeinfo: free blocks per migrate type, and pageblocks per migrate type.

Root-only and expensive (the kernel walks every pageblock to print it): callers read it sparingly.
It is what tells *why* a zone is fragmented: free pages stranded in Movable pageblocks can be
gathered by compaction, in Reclaimable ones by dropping slab, in Unmovable ones by neither.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from agent.base.errors import ParseError
from agent.kernel.limits import (
    MAX_MIGRATE_TYPES,
    MAX_ZONE_NAME,
    MAX_ZONE_ROWS,
    check_orders,
    check_zone,
    lines,
)
from agent.kernel.numbers import is_uint

CAP = 100000  # the kernel prints counts above this as ">100000"
_MAX_FREE_ROWS = MAX_ZONE_ROWS * MAX_MIGRATE_TYPES  # one row per zone and migrate type

_FREE_ROW = re.compile(r"^Node\s+([0-9]{1,9}),\s*zone\s+(\S+),\s*type\s+(\S+)\s+(.*)$")
_BLOCK_ROW = re.compile(r"^Node\s+([0-9]{1,9}),\s*zone\s+(\S+)\s+(.*)$")


@dataclass(frozen=True)
class TypeFree:
    """Free blocks per order of one migrate type in one zone. `capped` marks '>100000' values."""

    node: int
    zone: str
    migratetype: str
    free: tuple[int, ...]
    capped: bool

    def pages_below(self, order: int) -> int:
        """Free pages held in blocks smaller than `order`: memory stranded for that order."""
        return sum(n << o for o, n in enumerate(self.free) if o < order)


@dataclass(frozen=True)
class ZoneBlockTypes:
    """Number of pageblocks of each migrate type in one zone."""

    node: int
    zone: str
    blocks: tuple[tuple[str, int], ...]

    def count(self, migratetype: str) -> int:
        return dict(self.blocks).get(migratetype, 0)


@dataclass(frozen=True)
class PageTypeInfo:
    pageblock_order: int
    pages_per_block: int
    free: tuple[TypeFree, ...]
    blocks: tuple[ZoneBlockTypes, ...]


def _count(field: str, source: str, lineno: int) -> tuple[int, bool]:
    if field.startswith(">") and is_uint(field[1:]):
        return int(field[1:]), True
    if is_uint(field):
        return int(field), False
    raise ParseError(source, lineno, f"expected a count, got {field!r:.40}")


def parse_pagetypeinfo(text: str, source: str = "/proc/pagetypeinfo") -> PageTypeInfo:
    """Parse the header, the free-count section and the block-count section.

    Sections this parser does not know (e.g. 'Number of mixed blocks' with PAGE_OWNER) are
    skipped as whole sections; unexpected lines inside known sections are errors.
    """
    header: dict[str, int] = {}
    free: list[TypeFree] = []
    blocks: list[ZoneBlockTypes] = []
    section = "header"
    block_types: list[str] = []
    for lineno, raw in enumerate(lines(text), 1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("Page block order:") or line.startswith("Pages per block:"):
            key, _, value = line.partition(":")
            if not is_uint(value.strip()):
                raise ParseError(source, lineno, f"{key} is not an integer: {value.strip()!r:.40}")
            header[key] = int(value)
            continue
        if line.startswith("Free pages count per migrate type"):
            section = "free"
            continue
        if line.startswith("Number of blocks type"):
            section = "blocks"
            block_types = line[len("Number of blocks type") :].split()
            if not block_types:
                raise ParseError(source, lineno, "block-count header names no migrate type")
            if len(block_types) > MAX_MIGRATE_TYPES or max(map(len, block_types)) > MAX_ZONE_NAME:
                raise ParseError(source, lineno, f"more than {MAX_MIGRATE_TYPES} migrate types")
            continue
        if not line.startswith("Node"):
            section = "unknown"  # a section this parser does not know; skip its rows
            continue
        if section == "free":
            m = _FREE_ROW.match(line)
            if m is None:
                raise ParseError(source, lineno, f"bad free-count row: {line!r:.80}")
            check_zone(int(m.group(1)), m.group(2), len(free), source, lineno, _MAX_FREE_ROWS)
            if len(m.group(3)) > MAX_ZONE_NAME:
                raise ParseError(source, lineno, "migrate type name too long")
            fields = m.group(4).split()
            check_orders(len(fields), source, lineno)
            counts = [_count(f, source, lineno) for f in fields]
            if not counts:
                raise ParseError(source, lineno, "free-count row has no counts")
            free.append(
                TypeFree(
                    node=int(m.group(1)),
                    zone=m.group(2),
                    migratetype=m.group(3),
                    free=tuple(c for c, _ in counts),
                    capped=any(cap for _, cap in counts),
                )
            )
        elif section == "blocks":
            m = _BLOCK_ROW.match(line)
            fields = m.group(3).split() if m else []
            if m is None or len(fields) != len(block_types) or not all(is_uint(f) for f in fields):
                raise ParseError(
                    source, lineno, f"expected {len(block_types)} block counts: {line!r:.80}"
                )
            check_zone(int(m.group(1)), m.group(2), len(blocks), source, lineno)
            blocks.append(
                ZoneBlockTypes(
                    node=int(m.group(1)),
                    zone=m.group(2),
                    blocks=tuple(zip(block_types, (int(f) for f in fields), strict=True)),
                )
            )
        elif section == "header":
            raise ParseError(source, lineno, f"zone row before any section header: {line!r:.80}")
    if "Page block order" not in header or "Pages per block" not in header:
        raise ParseError(source, None, "missing 'Page block order' or 'Pages per block' header")
    if not free:
        raise ParseError(source, None, "no free-count rows")
    return PageTypeInfo(
        pageblock_order=header["Page block order"],
        pages_per_block=header["Pages per block"],
        free=tuple(free),
        blocks=tuple(blocks),
    )
