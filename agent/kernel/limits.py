"""Bounds on what a /proc snapshot may hold: far above any real kernel, far below what would hurt.

`check --proc-root` reads files from other machines; without bounds a crafted buddyinfo with
1,040 orders overflowed the renderer and 47,000 NUMA nodes took minutes. Beyond these the
parsers refuse the file with a ParseError naming the line.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from agent.base.errors import ParseError

# The kernel's MAX_NUMNODES is 1 << CONFIG_NODES_SHIFT, and NODES_SHIFT is at most 10.
MAX_NUMA_NODES = 1024
# A NUMA node has at most a handful of zones (DMA, DMA32, Normal, HighMem, Movable, Device).
MAX_ZONES_PER_NODE = 8
MAX_ZONE_ROWS = MAX_NUMA_NODES * MAX_ZONES_PER_NODE
# Orders 0..MAX_PAGE_ORDER: 11 on x86-64, up to 16 or so with large pages; 32 leaves room and
# keeps `count << order` pages within what a float (MiB in the table) can hold.
MAX_ORDERS = 32
# Zone names are short kernel identifiers.
MAX_ZONE_NAME = 32
# Migrate types per zone in pagetypeinfo (6 to 8 in practice).
MAX_MIGRATE_TYPES = 16
# Lines of a key-value file (vmstat has ~200 counters, meminfo ~60).
MAX_COUNTERS = 10000


def check_orders(count: int, source: str, lineno: int) -> None:
    if count > MAX_ORDERS:
        raise ParseError(source, lineno, f"{count} orders: more than {MAX_ORDERS}")


def check_zone(
    node: int, zone: str, rows: int, source: str, lineno: int, max_rows: int = MAX_ZONE_ROWS
) -> None:
    """The bounds every per-zone file shares: node number, zone name, row count."""
    if node >= MAX_NUMA_NODES:
        raise ParseError(
            source, lineno, f"NUMA node {node}: the kernel numbers them below {MAX_NUMA_NODES}"
        )
    if len(zone) > MAX_ZONE_NAME:
        raise ParseError(source, lineno, f"zone name longer than {MAX_ZONE_NAME} characters")
    if rows >= max_rows:
        raise ParseError(source, lineno, f"more than {max_rows} rows")


# str.splitlines()'s line boundaries, matched one line at a time.
_LINE = re.compile(
    r"([^\n\r\v\f\x1c-\x1e\x85\u2028\u2029]*)(?:\r\n|[\n\r\v\f\x1c-\x1e\x85\u2028\u2029])"
)


# Text up to this long is split in one call: its list of lines is small whatever it holds
# (a /proc file of a real node is a few KiB; splitting it line by line in Python cost a
# tenth of an idle agent's tick).
SPLIT_AT_ONCE_CHARS = 1 << 16


def lines(text: str) -> Iterator[str]:
    """text.splitlines(), lazily past SPLIT_AT_ONCE_CHARS: a file of millions of short lines is
    refused at the first row past a bound, without first building a list of every line."""
    if len(text) <= SPLIT_AT_ONCE_CHARS:
        return iter(text.splitlines())
    return _lazy_lines(text)


def _lazy_lines(text: str) -> Iterator[str]:
    end = 0
    for m in _LINE.finditer(text):
        yield m.group(1)
        end = m.end()
    if end < len(text):
        yield text[end:]
