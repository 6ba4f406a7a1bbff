"""agent.assess.verdict: verdicts over the real fixture trees and over small synthetic cases."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from agent.assess.verdict import Assessment, assess, find_cause
from agent.config.model import AssessmentConfig
from agent.kernel.buddyinfo import parse_buddyinfo
from agent.kernel.observation import Observation
from agent.kernel.pagetypeinfo import parse_pagetypeinfo
from agent.kernel.procfs import ProcReader
from agent.kernel.zoneinfo import parse_zoneinfo

PROC = Path(__file__).resolve().parents[2] / "fixtures" / "proc"
CFG = AssessmentConfig()
ORDERS = 11


def _assess_tree(tree: str) -> Assessment:
    obs = ProcReader(PROC / tree, PROC / tree / "no-sys").observe()
    return assess(obs, CFG)


def buddy_row(node: int, zone: str, free: Sequence[int]) -> str:
    counts = list(free) + [0] * (ORDERS - len(free))
    return f"Node {node}, zone {zone:>8} " + " ".join(f"{c:6d}" for c in counts) + " \n"


def zone_section(node: int, zone: str, free: int, wmark: tuple[int, int, int], managed: int) -> str:
    lo, mid, hi = wmark
    return (
        f"Node {node}, zone {zone:>8}\n"
        f"  pages free     {free}\n"
        f"        min      {lo}\n"
        f"        low      {mid}\n"
        f"        high     {hi}\n"
        f"        spanned  {managed}\n"
        f"        present  {managed}\n"
        f"        managed  {managed}\n"
    )


PTI_TYPES = ("Unmovable", "Movable", "Reclaimable", "HighAtomic", "Isolate")


def pagetype_text(rows: Sequence[tuple[int, str, str, Sequence[int]]]) -> str:
    out = [
        "Page block order: 9",
        "Pages per block:  512",
        "",
        "Free pages count per migrate type at order " + " ".join(f"{o:6d}" for o in range(ORDERS)),
    ]
    for node, zone, mt, free in rows:
        counts = list(free) + [0] * (ORDERS - len(free))
        out.append(
            f"Node {node:4d}, zone {zone:>8}, type {mt:>12} " + " ".join(f"{c:6d}" for c in counts)
        )
    out += ["", "Number of blocks type     " + " ".join(f"{t:>12}" for t in PTI_TYPES)]
    for node, zone in dict.fromkeys((n, z) for n, z, _, _ in rows):
        out.append(f"Node {node}, zone {zone:>8} " + " ".join(f"{1:12d}" for _ in PTI_TYPES))
    return "\n".join(out) + "\n"


def observe(
    buddy: str,
    zoneinfo: str | None = None,
    pagetype: str | None = None,
    sysctl: dict[str, int] | None = None,
) -> Observation:
    return Observation(
        buddy=parse_buddyinfo(buddy),
        zoneinfo=parse_zoneinfo(zoneinfo) if zoneinfo is not None else None,
        pagetype=parse_pagetypeinfo(pagetype) if pagetype is not None else None,
        sysctl=sysctl or {},
    )


HEALTHY_NORMAL = (500, 400, 300, 200, 100, 50, 20, 10, 5, 3, 40)  # 40 order-10 blocks alone: 2560
FRAGMENTED_NORMAL = (1163, 1101, 932, 222)  # the seed's Normal zone: nothing from order 4 up
RICH_DMA = (1, 0, 1, 0, 2, 1, 1, 0, 1, 1, 3)  # the seed's DMA: 248 blocks at order >= 4
DEPLETED_DMA = (3, 1)


# --- the real fixture trees -------------------------------------------------------------------


def test_seed_incident_is_fragmented() -> None:
    """DMA32 and Normal hold 0 blocks of order >= 4 (< 64): fragmented. Not exhaustion: their
    fragmentation indices are 0.886 and 0.838, above vm.extfrag_threshold (500), i.e. the free
    memory (63 MiB) is there but in small pieces. The DMA zone's 248 blocks are not counted."""
    a = _assess_tree("seed-incident")
    assert (a.verdict, a.reason, a.order, a.exhausted) == (
        "fragmented",
        "FreeMemoryFragmented",
        4,
        False,
    )
    assert a.fragmented_numa_nodes == (0,)
    assert [(z.zone, z.workload, z.blocks_at_target) for z in a.zones] == [
        ("DMA", False, 248),
        ("DMA32", True, 0),
        ("Normal", True, 0),
    ]
    assert [(z.fragindex_milli, z.unusable_milli) for z in a.zones] == [
        (-1000, 1),
        (886, 1000),
        (838, 1000),
    ]
    assert a.numa[0].free_pages == 7353 + 8869
    assert a.cause.kind == "unknown"  # no pagetypeinfo
    assert a.message == (
        "Free memory is fragmented: high-order (order>=4) allocations are likely to fail "
        "(fragmented below 64 blocks). NUMA node 0 (DMA32+Normal): 0 free blocks of "
        "order>=4 (0 KiB), 63 MiB free in smaller blocks, fragmentation index 0.838; "
        "cause: unknown (pagetypeinfo unavailable (it is root-only): cause unknown)"
    )


def test_vm618_is_healthy() -> None:
    """With zoneinfo, DMA (3840 of 2021941 managed pages) is not a workload zone; DMA32 holds
    48305 blocks of order >= 4 (752 order-10 blocks alone give 48128) and Normal 699."""
    a = _assess_tree("vm-6.18-x86_64")
    assert (a.verdict, a.reason, a.exhausted) == ("healthy", "ContiguousMemoryAvailable", False)
    assert [(z.zone, z.workload, z.blocks_at_target, z.watermark_pages) for z in a.zones] == [
        ("DMA", False, 240, 48),
        ("DMA32", True, 48305, 9686),
        ("Normal", True, 699, 15607),
    ]
    assert a.numa[0].blocks_at_target == 49004
    assert a.cause.kind == "unknown"
    assert a.cause.explanation == "healthy: nothing to attribute"
    # everything but sysctls was readable
    assert a.gaps == (
        f"{PROC / 'vm-6.18-x86_64' / 'sys' / 'vm'}: not present (vm tunables not reviewed)",
    )


def test_fb_3_10_node_1_is_fragmented() -> None:
    """Node 0 (DMA32+Normal) holds 660 + 12924 blocks of order >= 4: healthy. Node 1's Normal
    holds 11 + 8*2 + 2*4 = 35 < 64: fragmented. Its unusable index is 0.917 (92% of its free
    memory is in blocks below order 4). Without zoneinfo no watermark can say 'exhausted', and
    with 35 order-4 blocks the kernel index is -1.000, so the extfrag_threshold test does not
    apply either. The stranded pages of node 1 Normal (pagetypeinfo, orders 0-3) are Movable
    1 + 2919*2 + 1131*4 = 10363, Unmovable 5746 + 3*2 = 5752, Reclaimable 53 + 10*2 = 73:
    movable."""
    a = _assess_tree("fb-prod-2node-3.10")
    assert (a.verdict, a.reason) == ("fragmented", "FreeMemoryFragmented")
    assert [(n.node, n.state, n.blocks_at_target) for n in a.numa] == [
        (0, "healthy", 13584),
        (1, "fragmented", 35),
    ]
    assert a.fragmented_numa_nodes == (1,)
    assert a.cause.kind == "movable"
    assert a.cause.stranded_share == (
        ("Movable", 10363 / 16188),
        ("Reclaimable", 73 / 16188),
        ("Unmovable", 5752 / 16188),
    )


def test_fb_4_0_is_fragmented_by_unmovable_pollution() -> None:
    """Node 0 DMA32+Normal: 0 + 1 block of order >= 4; node 1 Normal: 6. Both < 64. The
    kernel index of DMA32 is 0.892 and the Normal zones have suitable blocks (-1.000), so
    none is exhaustion. Stranded pages below order 4 over both nodes: Unmovable 285334,
    Reclaimable 92686, Movable 89669 (pagetypeinfo): unmovable, which no remedy fixes."""
    a = _assess_tree("fb-prod-2node-4.0-fragmented")
    assert (a.verdict, a.reason, a.exhausted) == ("fragmented", "FreeMemoryFragmented", False)
    assert [(n.node, n.state, n.blocks_at_target) for n in a.numa] == [
        (0, "fragmented", 1),
        (1, "fragmented", 6),
    ]
    assert a.fragmented_numa_nodes == (0, 1)
    assert a.cause.kind == "unmovable"
    total = 285334 + 92686 + 89669
    assert a.cause.stranded_share == (
        ("Movable", 89669 / total),
        ("Reclaimable", 92686 / total),
        ("Unmovable", 285334 / total),
    )


def test_hygon_8_nodes_is_healthy() -> None:
    """Every node's Normal zone holds far more than 512 blocks of order >= 4; the poorest,
    node 6, has 12928 + 2248*2 + 1019*4 + 663*8 + 172*16 + 40*32 + 121*64 = 38580."""
    a = _assess_tree("hygon-8node-pagetypeinfo-capped")
    assert a.verdict == "healthy"
    assert [n.node for n in a.numa] == list(range(8))
    assert {n.state for n in a.numa} == {"healthy"}
    assert a.numa[6].blocks_at_target == 38580
    assert a.fragmented_numa_nodes == ()


def test_arm64_is_healthy() -> None:
    """About 250 free order-13 blocks per node, i.e. 250 * 2**9 = 128000 blocks of order 4."""
    a = _assess_tree("arm64-64k-4node-d05")
    assert a.verdict == "healthy"
    assert [(n.node, n.blocks_at_target) for n in a.numa] == [
        (0, 128731),
        (1, 129844),
        (2, 130408),
        (3, 123525),
    ]
    assert [z.workload for z in a.zones] == [False, True, True, True, True]


# --- the DMA zone never drives the verdict ----------------------------------------------------


def test_depleted_dma_with_healthy_normal_is_healthy() -> None:
    buddy = buddy_row(0, "DMA", DEPLETED_DMA) + buddy_row(0, "Normal", HEALTHY_NORMAL)
    a = assess(observe(buddy), CFG)
    assert a.verdict == "healthy"
    assert [(z.zone, z.workload) for z in a.zones] == [("DMA", False), ("Normal", True)]
    zi = zone_section(0, "DMA", 5, (10, 12, 15), 3840) + zone_section(
        0, "Normal", 200000, (1000, 1250, 1500), 4_000_000
    )
    b = assess(observe(buddy, zi), CFG)
    assert b.verdict == "healthy"
    assert not b.exhausted  # the DMA zone sits at its watermark, which is normal
    assert [(z.zone, z.workload, z.exhausted) for z in b.zones] == [
        ("DMA", False, True),
        ("Normal", True, False),
    ]


def test_rich_dma_with_depleted_normal_is_fragmented() -> None:
    """Counting the DMA zone's 248 blocks would read as at-risk (64 <= 248 < 512)."""
    buddy = buddy_row(0, "DMA", RICH_DMA) + buddy_row(0, "Normal", FRAGMENTED_NORMAL)
    a = assess(observe(buddy), CFG)
    assert (a.verdict, a.numa[0].blocks_at_target, a.numa[0].zones) == (
        "fragmented",
        0,
        ("Normal",),
    )
    zi = zone_section(0, "DMA", 3973, (10, 12, 15), 3840) + zone_section(
        0, "Normal", 8869, (1000, 1250, 1500), 4_000_000
    )
    b = assess(observe(buddy, zi), CFG)
    assert (b.verdict, b.numa[0].zones) == ("fragmented", ("Normal",))


def test_a_zoneinfo_naming_none_of_buddyinfos_zones_is_ignored_and_said() -> None:
    """A zoneinfo from another machine (issue 13, item 12): none of its zones would match, every
    zone would count as 'not workload', the fallback would count the rich DMA zone and the
    verdict would flip to at-risk. It is set aside instead, and the report says so."""
    buddy = buddy_row(0, "DMA", RICH_DMA) + buddy_row(0, "Normal", FRAGMENTED_NORMAL)
    foreign = zone_section(3, "DMA", 3973, (10, 12, 15), 3840) + zone_section(
        3, "Normal", 8869, (1000, 1250, 1500), 4_000_000
    )
    a = assess(observe(buddy, foreign), CFG)
    assert (a.verdict, a.numa[0].zones) == ("fragmented", ("Normal",))
    assert a.gaps == (
        "zoneinfo names none of buddyinfo's zones: ignored (zones chosen by name, no watermarks)",
    )
    assert all(z.watermark_pages is None for z in a.zones)


def test_a_zoneinfo_lacking_a_numa_node_says_so() -> None:
    """Node 1 missing from zoneinfo: node 1's zones are chosen by name, not all dropped."""
    buddy = (
        buddy_row(0, "DMA", RICH_DMA)
        + buddy_row(0, "Normal", FRAGMENTED_NORMAL)
        + buddy_row(1, "DMA", RICH_DMA)
        + buddy_row(1, "Normal", FRAGMENTED_NORMAL)
    )
    zi = zone_section(0, "DMA", 3973, (10, 12, 15), 3840) + zone_section(
        0, "Normal", 8869, (1000, 1250, 1500), 4_000_000
    )
    a = assess(observe(buddy, zi), CFG)
    assert [(n.node, n.state, n.zones) for n in a.numa] == [
        (0, "fragmented", ("Normal",)),
        (1, "fragmented", ("Normal",)),
    ]
    assert a.gaps == (
        "zoneinfo lacks node 1 zone DMA, node 1 zone Normal: on those NUMA nodes zones are "
        "chosen by name",
    )


def test_small_dma32_does_not_mask_a_fragmented_normal() -> None:
    """DMA32 managing 2.4% of a node (a large machine) is reported but not counted."""
    buddy = (
        buddy_row(0, "DMA", RICH_DMA)
        + buddy_row(0, "DMA32", (1, 2, 4, 2, 5, 4, 3, 3, 4, 2, 752))
        + buddy_row(0, "Normal", FRAGMENTED_NORMAL)
    )
    zi = (
        zone_section(0, "DMA", 3973, (10, 12, 15), 3840)
        + zone_section(0, "DMA32", 772917, (600, 750, 900), 400_000)
        + zone_section(0, "Normal", 8869, (1000, 1250, 1500), 16_000_000)
    )
    a = assess(observe(buddy, zi), CFG)
    assert a.verdict == "fragmented"
    assert [(z.zone, z.workload) for z in a.zones] == [
        ("DMA", False),
        ("DMA32", False),
        ("Normal", True),
    ]


def test_all_memory_in_dma_counts_dma() -> None:
    """ppc64 2.6 (the real zoneinfo fixture): every page is in zone DMA, so DMA is the
    workload zone there; buddyinfo made to match its 'pages free'."""
    zi = (PROC / "ppc64-2node-2.6.20" / "zoneinfo").read_text()
    # node 0: 130474 free pages; node 1: 109610. Node 1 is made fragmented (nothing >= order 4).
    n0 = (130474 - 127 * 1024, 0, 0, 0, 0, 0, 0, 0, 0, 0, 127)
    n1 = (109610 - 4 * 27402, 0, 27402)
    buddy = buddy_row(0, "DMA", n0) + buddy_row(1, "DMA", n1)
    a = assess(observe(buddy, zi), CFG)
    assert [(z.node, z.zone, z.workload, z.free_pages) for z in a.zones] == [
        (0, "DMA", True, 130474),
        (1, "DMA", True, 109610),
    ]
    assert a.verdict == "fragmented"
    assert a.fragmented_numa_nodes == (1,)
    # without zoneinfo, the name rule drops DMA, then the fallback counts it anyway
    b = assess(observe(buddy), CFG)
    assert (b.verdict, b.fragmented_numa_nodes) == ("fragmented", (1,))
    assert [z.workload for z in b.zones] == [True, True]


# --- exhaustion is not fragmentation -----------------------------------------------------------


def test_free_pages_at_high_watermark_is_exhaustion() -> None:
    # 500 + 200*2 + 50*4 + 10*8 = 1180 free pages, no block of order >= 4; the kernel index
    # 1000 - (1000 + 1180000 // 16) // 760 = 902 says fragmentation, but the zone is at its
    # high watermark (1180): it is short of memory, compaction cannot help.
    normal = (500, 200, 50, 10)
    buddy = buddy_row(0, "DMA", DEPLETED_DMA) + buddy_row(0, "Normal", normal)
    zi = zone_section(0, "DMA", 5, (10, 12, 15), 3840) + zone_section(
        0, "Normal", 1180, (800, 1000, 1180), 4_000_000
    )
    a = assess(observe(buddy, zi), CFG)
    assert (a.verdict, a.reason, a.exhausted) == ("at-risk", "FreeMemoryExhausted", True)
    assert a.numa[0].state == "exhausted"
    (z,) = [z for z in a.zones if z.zone == "Normal"]
    assert (z.fragindex_milli, z.watermark_pages, z.exhausted) == (902, 1180, True)
    assert a.fragmented_numa_nodes == ()
    assert a.message.startswith("Free memory is exhausted (at the zone watermarks)")
    # one page above the watermark: fragmented
    zi_above = zone_section(0, "DMA", 5, (10, 12, 15), 3840) + zone_section(
        0, "Normal", 1180, (800, 1000, 1179), 4_000_000
    )
    b = assess(observe(buddy, zi_above), CFG)
    assert (b.verdict, b.reason, b.exhausted) == ("fragmented", "FreeMemoryFragmented", False)


def test_exhaustion_watermark_is_configurable() -> None:
    normal = (500, 200, 50, 10)  # 1180 pages
    buddy = buddy_row(0, "Normal", normal)
    zi = zone_section(0, "Normal", 1180, (800, 1000, 1500), 4_000_000)
    assert assess(observe(buddy, zi), CFG).reason == "FreeMemoryExhausted"
    low = AssessmentConfig(exhaustion_watermark="low")
    assert assess(observe(buddy, zi), low).reason == "FreeMemoryFragmented"


def test_kernel_extfrag_threshold_marks_lack_of_memory() -> None:
    """Ten order-3 blocks, none of order 4: index 1000 - (1000 + 80000 // 16) // 10 = 400, at
    or below vm.extfrag_threshold (500): the kernel would reclaim, not compact."""
    buddy = buddy_row(0, "Normal", (0, 0, 0, 10))
    a = assess(observe(buddy), CFG)
    assert (a.verdict, a.reason, a.exhausted) == ("at-risk", "FreeMemoryExhausted", True)
    assert a.zones[0].fragindex_milli == 400
    strict = assess(observe(buddy, sysctl={"extfrag_threshold": 399}), CFG)
    assert (strict.verdict, strict.reason) == ("fragmented", "FreeMemoryFragmented")


# --- NUMA --------------------------------------------------------------------------------------


def test_only_numa_node_1_fragmented() -> None:
    buddy = (
        buddy_row(0, "DMA", RICH_DMA)
        + buddy_row(0, "Normal", HEALTHY_NORMAL)
        + buddy_row(1, "Normal", FRAGMENTED_NORMAL)
    )
    a = assess(observe(buddy), CFG)
    assert (a.verdict, a.reason) == ("fragmented", "FreeMemoryFragmented")
    assert a.fragmented_numa_nodes == (1,)
    # 100 + 50*2 + 20*4 + 10*8 + 5*16 + 3*32 + 40*64 = 3096
    assert [(n.node, n.state, n.blocks_at_target) for n in a.numa] == [
        (0, "healthy", 3096),
        (1, "fragmented", 0),
    ]


def test_fragmented_outranks_exhausted_and_at_risk() -> None:
    buddy = (
        buddy_row(0, "Normal", (0, 0, 0, 10))  # exhausted (index 400)
        + buddy_row(1, "Normal", (0, 0, 0, 0, 100))  # at-risk: 100 blocks
        + buddy_row(2, "Normal", FRAGMENTED_NORMAL)  # fragmented
    )
    a = assess(observe(buddy), CFG)
    assert [n.state for n in a.numa] == ["exhausted", "at-risk", "fragmented"]
    assert (a.verdict, a.reason, a.exhausted) == ("fragmented", "FreeMemoryFragmented", True)
    assert a.fragmented_numa_nodes == (2,)
    two = assess(
        observe(buddy_row(0, "Normal", (0, 0, 0, 10)) + buddy_row(1, "Normal", (0, 0, 0, 0, 100))),
        CFG,
    )
    assert (two.verdict, two.reason) == ("at-risk", "FreeMemoryExhausted")


def test_at_risk_band() -> None:
    for blocks, verdict in (
        (63, "fragmented"),
        (64, "at-risk"),
        (511, "at-risk"),
        (512, "healthy"),
    ):
        a = assess(observe(buddy_row(0, "Normal", (7, 0, 0, 0, blocks))), CFG)
        assert (a.verdict, a.numa[0].blocks_at_target) == (verdict, blocks)
    assert assess(observe(buddy_row(0, "Normal", (7, 0, 0, 0, 64))), CFG).reason == (
        "ContiguousMemoryLow"
    )


def test_order_override_and_gap_above_max_order() -> None:
    buddy = buddy_row(0, "Normal", FRAGMENTED_NORMAL)
    assert assess(observe(buddy), CFG, order=3).numa[0].blocks_at_target == 222
    a = assess(observe(buddy), CFG, order=11)
    assert a.order == 11
    assert a.gaps == ("order 11 is above this kernel's largest order 10",)


# --- cause, from pagetypeinfo ------------------------------------------------------------------


def _cause_case(stranded: dict[str, Sequence[int]]) -> Assessment:
    rows: list[tuple[int, str, str, Sequence[int]]] = [
        # the DMA zone is not a workload zone: its huge Unmovable count must be ignored
        (0, "DMA", "Unmovable", (90000, 90000)),
        (0, "DMA", "Movable", (0,)),
    ]
    for mt in PTI_TYPES:
        rows.append((0, "Normal", mt, stranded.get(mt, (0,))))
    buddy = buddy_row(0, "DMA", RICH_DMA) + buddy_row(0, "Normal", FRAGMENTED_NORMAL)
    return assess(observe(buddy, pagetype=pagetype_text(rows)), CFG)


def test_cause_movable() -> None:
    a = _cause_case(
        {
            "Movable": (
                100,
                50,
                0,
                0,
                0,
                7,
            ),  # 200 pages below order 4; the order-5 ones don't count
            "Unmovable": (10,),
            "Reclaimable": (20,),
            "HighAtomic": (5000,),  # neither cause nor remedy: ignored
            "Isolate": (5000,),
        }
    )
    assert a.verdict == "fragmented"
    assert a.cause.kind == "movable"
    assert a.cause.stranded_share == (
        ("Movable", 200 / 230),
        ("Reclaimable", 20 / 230),
        ("Unmovable", 10 / 230),
    )
    assert a.cause.explanation == (
        "87% of the free memory in blocks below order 4 (920 KiB) sits in Movable pageblocks: "
        "compaction can merge them"
    )


def test_cause_reclaimable() -> None:
    a = _cause_case({"Movable": (10,), "Reclaimable": (30, 20, 10, 5), "Unmovable": (50,)})
    # Reclaimable: 30 + 40 + 40 + 40 = 150 pages
    assert a.cause.kind == "reclaimable"
    assert dict(a.cause.stranded_share)["Reclaimable"] == 150 / 210


def test_cause_unmovable() -> None:
    a = _cause_case({"Movable": (10, 10), "Reclaimable": (5,), "Unmovable": (0, 0, 0, 100)})
    assert a.cause.kind == "unmovable"
    assert dict(a.cause.stranded_share)["Unmovable"] == 800 / 835
    assert a.cause.explanation.endswith(
        "sits in Unmovable pageblocks: their neighbours are kernel memory that neither "
        "compaction nor dropping caches frees (one short attempt may still help where page "
        "cache shares the blocks)"
    )


def test_cause_looks_only_at_troubled_nodes() -> None:
    """Node 0 is healthy with lots of stranded Unmovable pages; node 1 (fragmented) is
    Reclaimable: the cause is node 1's."""
    buddy = buddy_row(0, "Normal", HEALTHY_NORMAL) + buddy_row(1, "Normal", FRAGMENTED_NORMAL)
    rows: list[tuple[int, str, str, Sequence[int]]] = [
        (0, "Normal", "Unmovable", (100000,)),
        (1, "Normal", "Reclaimable", (1000, 1000)),
        (1, "Normal", "Movable", (500,)),
        (1, "Normal", "Unmovable", (100,)),
    ]
    a = assess(observe(buddy, pagetype=pagetype_text(rows)), CFG)
    assert a.fragmented_numa_nodes == (1,)
    assert a.cause.kind == "reclaimable"
    assert a.cause.stranded_share == (
        ("Movable", 500 / 3600),
        ("Reclaimable", 3000 / 3600),
        ("Unmovable", 100 / 3600),
    )


def test_cause_unknown_without_data() -> None:
    assert find_cause(None, [(0, "Normal")], 4).kind == "unknown"
    pti = parse_pagetypeinfo(pagetype_text([(0, "Normal", "Movable", (0, 0, 0, 0, 9))]))
    nothing = find_cause(pti, [(0, "Normal")], 4)
    assert (nothing.kind, nothing.stranded_share) == ("unknown", ())
    assert nothing.explanation == "no free pages below the target order in pagetypeinfo"


# --- missing optional files narrow the report ---------------------------------------------------


def test_missing_optional_files_are_gaps(tmp_path: Path) -> None:
    (tmp_path / "buddyinfo").write_text(
        buddy_row(0, "DMA", RICH_DMA) + buddy_row(0, "Normal", FRAGMENTED_NORMAL)
    )
    (tmp_path / "pagetypeinfo").mkdir()  # present but unreadable as a file
    a = assess(ProcReader(tmp_path, tmp_path / "sys").observe(), CFG)
    assert (a.verdict, a.reason) == ("fragmented", "FreeMemoryFragmented")
    assert a.gaps == (
        f"{tmp_path}/pagetypeinfo: unreadable (Is a directory)",
        f"{tmp_path}/sys/vm: not present (vm tunables not reviewed)",
        f"{tmp_path}/zoneinfo: not present",
        f"{tmp_path}/vmstat: not present",
        f"{tmp_path}/meminfo: not present",
        f"{tmp_path}/pressure/memory: not present",
    )


def test_sysctls_are_read_and_used(tmp_path: Path) -> None:
    (tmp_path / "buddyinfo").write_text(buddy_row(0, "Normal", (0, 0, 0, 10)))
    vm = tmp_path / "sys" / "vm"
    vm.mkdir(parents=True)
    (vm / "extfrag_threshold").write_text("300\n")
    (vm / "min_free_kbytes").write_text("67584\n")
    obs = ProcReader(tmp_path, tmp_path / "sys").observe()
    assert obs.sysctl == {"min_free_kbytes": 67584, "extfrag_threshold": 300}
    assert f"{vm}/watermark_scale_factor: not present" in obs.gaps
    # index 400 > 300: now fragmentation, not lack of memory
    assert assess(obs, CFG).verdict == "fragmented"


@pytest.mark.parametrize("tree", ["seed-incident", "vm-6.18-x86_64"])
def test_pagetypeinfo_can_be_skipped(tree: str) -> None:
    obs = ProcReader(PROC / tree, PROC / tree / "no-sys").observe(with_pagetypeinfo=False)
    assert obs.pagetype is None
    assert not any("pagetypeinfo" in g for g in obs.gaps)
