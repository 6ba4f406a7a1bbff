"""/proc/buddyinfo: free blocks per order for each (NUMA node, zone).

The only file the agent requires: world-readable, cheap, and enough for both kernel indices.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from agent.base.errors import ParseError
from agent.kernel.limits import check_orders, check_zone, lines
from agent.kernel.numbers import is_uint

_ROW = re.compile(r"^Node\s+([0-9]{1,9}),\s*zone\s+(\S+)\s+(.*)$")


@dataclass(frozen=True)
class ZoneBlocks:
    """Free block counts of one zone; `free[o]` is the number of free blocks of 2**o pages."""

    node: int
    zone: str
    free: tuple[int, ...]

    @property
    def free_pages(self) -> int:
        return sum(n << o for o, n in enumerate(self.free))

    def blocks_at_or_above(self, order: int) -> int:
        """Free memory usable by an order-`order` request, counted in blocks of that order."""
        return sum(n << (o - order) for o, n in enumerate(self.free) if o >= order)


def parse_buddyinfo(text: str, source: str = "/proc/buddyinfo") -> tuple[ZoneBlocks, ...]:
    """Parse buddyinfo text; any number of nodes, zones and orders (the count differs by arch)."""
    zones: list[ZoneBlocks] = []
    seen: set[tuple[int, str]] = set()
    for lineno, line in enumerate(lines(text), 1):
        if not line.strip():
            continue
        m = _ROW.match(line.strip())
        if m is None:
            raise ParseError(
                source, lineno, f"expected 'Node N, zone NAME counts...', got {line!r:.80}"
            )
        fields = m.group(3).split()
        if not fields:
            raise ParseError(source, lineno, "zone row has no free-block counts")
        check_orders(len(fields), source, lineno)
        if not all(is_uint(f) for f in fields):
            raise ParseError(
                source, lineno, f"free-block counts must be integers: {m.group(3)!r:.80}"
            )
        key = (int(m.group(1)), m.group(2))
        check_zone(key[0], key[1], len(zones), source, lineno)
        if key in seen:
            raise ParseError(source, lineno, f"node {key[0]} zone {key[1]} appears twice")
        seen.add(key)
        zones.append(ZoneBlocks(node=key[0], zone=key[1], free=tuple(int(f) for f in fields)))
    if not zones:
        raise ParseError(source, None, "no zone rows")
    return tuple(zones)
