"""agent.assess.indices against an independent transcription of the kernel's mm/vmstat.c."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.assess.indices import (
    ContigInfo,
    contig_info,
    fragmentation_index_milli,
    kernel_format,
    unusable_index_milli,
)

# --- the kernel, transcribed (mm/vmstat.c, v6.x) ----------------------------------------------
#
#   static void fill_contig_page_info(struct zone *zone, unsigned int suitable_order,
#                                     struct contig_page_info *info)
#   {
#       info->free_pages = 0; info->free_blocks_total = 0; info->free_blocks_suitable = 0;
#       for (order = 0; order < NR_PAGE_ORDERS; order++) {
#           blocks = zone->free_area[order].nr_free;
#           info->free_blocks_total += blocks;
#           info->free_pages += blocks << order;
#           if (order >= suitable_order)
#               info->free_blocks_suitable += blocks << (order - suitable_order);
#       }
#   }
#
#   static int __fragmentation_index(unsigned int order, struct contig_page_info *info)
#   {
#       unsigned long requested = 1UL << order;
#       if (WARN_ON_ONCE(order > MAX_PAGE_ORDER)) return 0;
#       if (!info->free_blocks_total) return 0;
#       if (info->free_blocks_suitable) return -1000;
#       return 1000 - div_u64((1000 + (div_u64(info->free_pages * 1000ULL, requested))),
#                             info->free_blocks_total);
#   }
#
#   static int unusable_free_index(unsigned int order, struct contig_page_info *info)
#   {
#       if (info->free_pages == 0) return 1000;
#       return div_u64((info->free_pages - (info->free_blocks_suitable << order)) * 1000ULL,
#                      info->free_pages);
#   }
#
#   seq_printf(m, "%d.%03d ", index / 1000, index % 1000);   /* C division: toward zero */

U64 = (1 << 64) - 1


@dataclass
class KernelContig:
    free_pages: int = 0
    free_blocks_total: int = 0
    free_blocks_suitable: int = 0


def k_fill_contig_page_info(nr_free: list[int], suitable_order: int) -> KernelContig:
    info = KernelContig()
    order = 0
    while order < len(nr_free):
        blocks = nr_free[order]
        info.free_blocks_total += blocks
        info.free_pages += blocks * (2**order)
        if order >= suitable_order:
            info.free_blocks_suitable += blocks * (2 ** (order - suitable_order))
        order += 1
    return info


def div_u64(dividend: int, divisor: int) -> int:
    assert 0 <= dividend <= U64, "the kernel's u64 arithmetic would overflow"
    assert 0 < divisor <= U64
    return dividend // divisor


def k_fragmentation_index(order: int, info: KernelContig, max_order: int) -> int:
    requested = 2**order
    if order > max_order:
        return 0
    if info.free_blocks_total == 0:
        return 0
    if info.free_blocks_suitable != 0:
        return -1000
    return 1000 - div_u64(1000 + div_u64(info.free_pages * 1000, requested), info.free_blocks_total)


def k_unusable_free_index(order: int, info: KernelContig) -> int:
    if info.free_pages == 0:
        return 1000
    return div_u64(
        (info.free_pages - info.free_blocks_suitable * (2**order)) * 1000, info.free_pages
    )


def c_div(a: int, b: int) -> int:
    """C's `/` on ints: the quotient truncated toward zero."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


def c_mod(a: int, b: int) -> int:
    return a - c_div(a, b) * b


def k_print(index: int) -> str:
    """ "%d.%03d" of (index / 1000, index % 1000), C semantics."""
    whole, frac = c_div(index, 1000), c_mod(index, 1000)
    frac_s = f"{frac:03d}" if frac >= 0 else "-" + f"{-frac:02d}"  # printf pads after the sign
    return f"{whole}.{frac_s}"


# --- the transcription itself, pinned by hand-computed numbers --------------------------------

SEED_NORMAL = [1163, 1101, 932, 222, 0, 0, 0, 0, 0, 0, 0]
SEED_DMA32 = [2725, 624, 489, 178, 0, 0, 0, 0, 0, 0, 0]
SEED_DMA = [1, 0, 1, 0, 2, 1, 1, 0, 1, 1, 3]


def test_transcription_on_seed_normal() -> None:
    info = k_fill_contig_page_info(SEED_NORMAL, 4)
    # free pages 1163 + 2*1101 + 4*932 + 8*222; blocks 1163 + 1101 + 932 + 222
    assert (info.free_pages, info.free_blocks_total, info.free_blocks_suitable) == (8869, 3418, 0)
    # 1000 - (1000 + 8869000 // 16) // 3418 = 1000 - 555312 // 3418 = 1000 - 162
    assert k_fragmentation_index(4, info, 10) == 838
    assert k_unusable_free_index(4, info) == 1000


def test_seed_normal_order_4() -> None:
    assert contig_info(SEED_NORMAL, 4) == ContigInfo(8869, 3418, 0)
    assert fragmentation_index_milli(SEED_NORMAL, 4) == 838
    assert unusable_index_milli(SEED_NORMAL, 4) == 1000


def test_seed_other_zones_and_orders() -> None:
    # DMA32: pages 2725 + 1248 + 1956 + 1424 = 7353, blocks 4016;
    # 1000 - (1000 + 7353000 // 16) // 4016 = 1000 - 460562 // 4016 = 1000 - 114
    assert fragmentation_index_milli(SEED_DMA32, 4) == 886
    # order 3 is served by the 222 order-3 blocks: the request succeeds
    assert fragmentation_index_milli(SEED_NORMAL, 3) == -1000
    # unusable at order 3: (8869 - 222*8) * 1000 // 8869 = 7093000 // 8869
    assert unusable_index_milli(SEED_NORMAL, 3) == 799
    # at order 0 every free page is usable
    assert unusable_index_milli(SEED_NORMAL, 0) == 0
    # DMA: 1 + 4 + 2*16 + 32 + 64 + 256 + 512 + 3*1024 = 3973 free pages; at order 4 the
    # suitable blocks are 2 + 2 + 4 + 16 + 32 + 3*64 = 248, and 3973 - 248*16 = 5 pages are not
    info = contig_info(SEED_DMA, 4)
    assert info == ContigInfo(3973, 11, 248)
    # 5 * 1000 // 3973
    assert unusable_index_milli(SEED_DMA, 4) == 1


def test_edge_cases() -> None:
    empty = [0] * 11
    assert fragmentation_index_milli(empty, 4) == 0  # no blocks at all
    assert unusable_index_milli(empty, 4) == 1000  # no free memory: all of it unusable
    # all memory in order-0 pages: index close to 1 (fragmentation)
    assert fragmentation_index_milli([1000, 0, 0, 0, 0], 4) == 1000 - (1000 + 62500) // 1000
    # ten order-3 blocks, none at order 4: 1000 - (1000 + 80000 // 16) // 10 = 400
    assert fragmentation_index_milli([0, 0, 0, 10, 0], 4) == 400
    # one order-3 block: lack of memory rather than fragmentation
    assert fragmentation_index_milli([0, 0, 0, 1, 0], 4) == 1000 - (1000 + 500) // 1
    assert fragmentation_index_milli([0, 0, 0, 0, 1], 4) == -1000


@pytest.mark.parametrize(
    ("milli", "text"),
    [
        (-1000, "-1.000"),
        (838, "0.838"),
        (1000, "1.000"),
        (0, "0.000"),
        (5, "0.005"),
        (70, "0.070"),
        (999, "0.999"),
        (886, "0.886"),
    ],
)
def test_kernel_format(milli: int, text: str) -> None:
    assert kernel_format(milli) == text
    assert k_print(milli) == text


# --- properties: the product equals the kernel for any free lists ----------------------------

FREE_LISTS = st.lists(st.integers(0, 10**7), min_size=1, max_size=14)


@st.composite
def free_and_order(draw: st.DrawFn) -> tuple[list[int], int]:
    free = draw(
        st.one_of(
            FREE_LISTS,
            # sparse lists: mostly zero, which is where the special cases live
            st.lists(st.sampled_from([0, 0, 0, 1, 2, 3, 10**7]), min_size=1, max_size=14),
        )
    )
    return free, draw(st.integers(0, len(free) - 1))


@settings(max_examples=2000, deadline=None, database=None, derandomize=True)
@given(case=free_and_order())
def test_indices_equal_the_kernel(case: tuple[list[int], int]) -> None:
    free, order = case
    info = k_fill_contig_page_info(free, order)
    assert contig_info(free, order) == ContigInfo(
        info.free_pages, info.free_blocks_total, info.free_blocks_suitable
    )
    frag = fragmentation_index_milli(free, order)
    assert frag == k_fragmentation_index(order, info, len(free) - 1)
    assert unusable_index_milli(free, order) == k_unusable_free_index(order, info)
    # the kernel's formula is not confined to 0..1: few small blocks give a negative index
    assert -1000 <= frag <= 1000
    assert 0 <= unusable_index_milli(free, order) <= 1000


@settings(max_examples=1000, deadline=None, database=None, derandomize=True)
@given(case=free_and_order())
def test_kernel_format_prints_what_the_kernel_prints(case: tuple[list[int], int]) -> None:
    """kernel_format's contract: '%d.%03d' of value/1000, value%1000 with C semantics."""
    free, order = case
    for value in (fragmentation_index_milli(free, order), unusable_index_milli(free, order)):
        assert kernel_format(value) == k_print(value)


def test_negative_fragmentation_index_keeps_its_sign() -> None:
    """One order-3 block and an order-4 request: 1000 - (1000 + 8000 // 16) // 1 = -500.

    The kernel prints that as '0.-500' ("%d.%03d" of 0 and -500); printing '0.500' would turn
    the index's sign around in the FRAGIDX column of `check`.
    """
    assert fragmentation_index_milli([0, 0, 0, 1, 0], 4) == -500
    assert k_print(-500) == "0.-500"
    assert kernel_format(-500) == "0.-500"


@settings(max_examples=500, deadline=None, database=None, derandomize=True)
@given(free=FREE_LISTS)
def test_unusable_index_never_decreases_with_order(free: list[int]) -> None:
    """A larger request can use no more of the free memory than a smaller one."""
    values = [unusable_index_milli(free, o) for o in range(len(free))]
    assert values == sorted(values)
    assert values[0] == (0 if any(free) else 1000)


@settings(max_examples=500, deadline=None, database=None, derandomize=True)
@given(milli=st.integers(0, 1000) | st.just(-1000))
def test_kernel_format_matches_printf_on_the_index_range(milli: int) -> None:
    """-1000 and 0..1000 are the only values the two indices take."""
    assert kernel_format(milli) == k_print(milli)
    assert round(float(kernel_format(milli)) * 1000) == milli
