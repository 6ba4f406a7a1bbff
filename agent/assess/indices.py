"""The kernel's own fragmentation indices, transcribed from mm/vmstat.c.

Integer arithmetic exactly as the kernel does it, scaled by 1000 ("milli"), so our numbers equal
/sys/kernel/debug/extfrag/{unusable_index,extfrag_index} for the same buddyinfo.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class ContigInfo:
    """fill_contig_page_info(): totals over every order for one requested order."""

    free_pages: int
    free_blocks_total: int
    free_blocks_suitable: int


def contig_info(free: Sequence[int], order: int) -> ContigInfo:
    pages = total = suitable = 0
    for o, blocks in enumerate(free):
        total += blocks
        pages += blocks << o
        if o >= order:
            suitable += blocks << (o - order)
    return ContigInfo(pages, total, suitable)


def unusable_index_milli(free: Sequence[int], order: int) -> int:
    """unusable_free_index(): thousandths of free memory that cannot serve an order-k request."""
    info = contig_info(free, order)
    if info.free_pages == 0:
        return 1000
    return (info.free_pages - (info.free_blocks_suitable << order)) * 1000 // info.free_pages


def fragmentation_index_milli(free: Sequence[int], order: int) -> int:
    """__fragmentation_index(): -1000 if the request would succeed, else 0 (lack of memory)
    to 1000 (fragmentation). The kernel's WARN on order > MAX_PAGE_ORDER returns 0 too."""
    if order >= len(free):
        return 0
    info = contig_info(free, order)
    if info.free_blocks_total == 0:
        return 0
    if info.free_blocks_suitable:
        return -1000
    requested = 1 << order
    return 1000 - (1000 + info.free_pages * 1000 // requested) // info.free_blocks_total


def kernel_format(milli: int) -> str:
    """Exactly what debugfs prints: C's '%d.%03d' of value / 1000 and value % 1000, both
    truncating toward zero, so -1000 prints '-1.000' and -500 (possible: the formula goes
    negative when free pages outnumber blocks) prints '0.-500'."""
    whole = abs(milli) // 1000 * (1 if milli >= 0 else -1)
    return f"{whole}.{milli - whole * 1000:03d}"
