"""Tests for the /proc parsers: every fixture tree, exact spot checks, errors, hostile input."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.base.errors import ParseError
from agent.kernel.buddyinfo import ZoneBlocks, parse_buddyinfo
from agent.kernel.meminfo import parse_meminfo
from agent.kernel.pagetypeinfo import CAP, PageTypeInfo, parse_pagetypeinfo
from agent.kernel.procfs import ProcReader
from agent.kernel.psi import Pressure, parse_pressure
from agent.kernel.vmstat import parse_vmstat
from agent.kernel.zoneinfo import ZoneWatermarks, parse_zoneinfo

PROC = Path(__file__).resolve().parents[2] / "fixtures" / "proc"

Parser = Callable[[str, str], object]
PARSERS: dict[str, Parser] = {
    "buddyinfo": parse_buddyinfo,
    "pagetypeinfo": parse_pagetypeinfo,
    "zoneinfo": parse_zoneinfo,
    "vmstat": parse_vmstat,
    "meminfo": parse_meminfo,
    "pressure/memory": parse_pressure,
}

# Which file each fixture tree holds (README.md and each SOURCE.md): a missing one is a failure.
EXPECTED_FILES: dict[str, set[str]] = {
    "arm64-64k-4node-d05": {"buddyinfo"},
    "fb-prod-2node-3.10": {"buddyinfo", "pagetypeinfo"},
    "fb-prod-2node-4.0-fragmented": {"buddyinfo", "pagetypeinfo"},
    "hygon-8node-pagetypeinfo-capped": {"buddyinfo", "pagetypeinfo"},
    "kvm-2node-6.6-cma-isolate": {"pagetypeinfo", "zoneinfo"},
    "ppc64-2node-2.6.20": {"zoneinfo"},
    "seed-incident": {"buddyinfo"},
    "vm-6.18-x86_64": set(PARSERS),
    "x220-3.7-rc6-kswapd": {"zoneinfo", "meminfo"},
}


def _fixture_files() -> list[tuple[str, str]]:
    return [
        (d.name, name)
        for d in sorted(PROC.iterdir())
        if d.is_dir()
        for name in PARSERS
        if (d / name).is_file()
    ]


FIXTURE_FILES = _fixture_files()


def _text(tree: str, name: str) -> str:
    return (PROC / tree / name).read_text(encoding="utf-8")


def _buddy(tree: str) -> tuple[ZoneBlocks, ...]:
    return parse_buddyinfo(_text(tree, "buddyinfo"), "buddyinfo")


def _ptype(tree: str) -> PageTypeInfo:
    return parse_pagetypeinfo(_text(tree, "pagetypeinfo"), "pagetypeinfo")


def _zones(tree: str) -> tuple[ZoneWatermarks, ...]:
    return parse_zoneinfo(_text(tree, "zoneinfo"), "zoneinfo")


def _row(zones: tuple[ZoneBlocks, ...], node: int, zone: str) -> tuple[int, ...]:
    (hit,) = [z.free for z in zones if (z.node, z.zone) == (node, zone)]
    return hit


# --- every parser over every fixture file -----------------------------------------------------


def test_every_expected_fixture_file_is_present() -> None:
    found: dict[str, set[str]] = {}
    for tree, name in FIXTURE_FILES:
        found.setdefault(tree, set()).add(name)
    for tree, names in EXPECTED_FILES.items():
        assert found.get(tree, set()) == names, tree


@pytest.mark.parametrize(("tree", "name"), FIXTURE_FILES)
def test_parser_accepts_real_fixture(tree: str, name: str) -> None:
    """Each real file parses, and the result is internally consistent."""
    parsed = PARSERS[name](_text(tree, name), name)
    if isinstance(parsed, tuple) and parsed and isinstance(parsed[0], ZoneBlocks):
        orders = {len(z.free) for z in parsed}
        assert len(orders) == 1  # one kernel, one MAX_ORDER per file
        assert all(n >= 0 for z in parsed for n in z.free)
    elif isinstance(parsed, PageTypeInfo):
        assert parsed.pages_per_block == 1 << parsed.pageblock_order
        assert {len(r.free) for r in parsed.free} == {11}
        assert parsed.blocks
        capped_lines = [ln for ln in _text(tree, name).splitlines() if ">" in ln]
        assert sum(r.capped for r in parsed.free) == len(capped_lines)
    elif isinstance(parsed, tuple) and parsed and isinstance(parsed[0], ZoneWatermarks):
        for w in parsed:
            assert w.min <= w.low <= w.high, w
            assert w.managed <= w.present <= w.spanned, w
    elif isinstance(parsed, Pressure):
        assert parsed.full_total_us is not None
    else:
        assert isinstance(parsed, dict)
        assert len(parsed) > 40
        assert all(isinstance(v, int) for v in parsed.values())


# --- buddyinfo spot checks --------------------------------------------------------------------


def test_buddyinfo_seed_rows() -> None:
    zones = _buddy("seed-incident")
    assert [(z.node, z.zone) for z in zones] == [(0, "DMA"), (0, "DMA32"), (0, "Normal")]
    assert _row(zones, 0, "DMA") == (1, 0, 1, 0, 2, 1, 1, 0, 1, 1, 3)
    assert _row(zones, 0, "DMA32") == (2725, 624, 489, 178, 0, 0, 0, 0, 0, 0, 0)
    assert _row(zones, 0, "Normal") == (1163, 1101, 932, 222, 0, 0, 0, 0, 0, 0, 0)
    # 1163 + 1101*2 + 932*4 + 222*8
    assert zones[2].free_pages == 8869
    assert zones[2].blocks_at_or_above(4) == 0
    assert zones[2].blocks_at_or_above(3) == 222
    # DMA at order 4: 2 + 1*2 + 1*4 + 0 + 1*16 + 1*32 + 3*64
    assert zones[0].blocks_at_or_above(4) == 248


def test_buddyinfo_vm618_rows() -> None:
    zones = _buddy("vm-6.18-x86_64")
    assert _row(zones, 0, "DMA") == (0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 3)
    assert _row(zones, 0, "DMA32") == (1, 2, 4, 2, 5, 4, 3, 3, 4, 2, 752)
    assert _row(zones, 0, "Normal") == (6506, 4216, 1795, 99, 193, 39, 1, 1, 2, 2, 5)


def test_buddyinfo_equals_pagetypeinfo_sums_on_vm618() -> None:
    """The quiet vm-6.18 capture reconciles exactly (checked by hand: SOURCE.md says so too)."""
    buddy = _buddy("vm-6.18-x86_64")
    ptype = _ptype("vm-6.18-x86_64")
    for z in buddy:
        rows = [r.free for r in ptype.free if (r.node, r.zone) == (z.node, z.zone)]
        assert len(rows) == 5  # Unmovable Movable Reclaimable HighAtomic Isolate
        assert tuple(sum(col) for col in zip(*rows, strict=True)) == z.free


def test_buddyinfo_arm64_has_14_orders() -> None:
    zones = _buddy("arm64-64k-4node-d05")
    assert [(z.node, z.zone) for z in zones] == [
        (0, "DMA"),
        (0, "Normal"),
        (1, "Normal"),
        (2, "Normal"),
        (3, "Normal"),
    ]
    assert {len(z.free) for z in zones} == {14}
    assert [z.free[13] for z in zones] == [0, 250, 252, 253, 237]
    # the last line has no trailing space, the others do: both parse the same way
    assert _row(zones, 3, "Normal") == (74, 95, 117, 66, 43, 29, 20, 16, 7, 11, 6, 6, 1, 237)


def test_buddyinfo_hygon_has_8_nodes() -> None:
    zones = _buddy("hygon-8node-pagetypeinfo-capped")
    assert len(zones) == 10
    assert sorted({z.node for z in zones}) == list(range(8))
    assert [z.zone for z in zones if z.node == 0] == ["DMA", "DMA32", "Normal"]
    assert _row(zones, 0, "DMA") == (4, 6, 3, 2, 3, 3, 1, 1, 2, 3, 1)
    assert _row(zones, 7, "Normal") == (
        34185,
        256886,
        249560,
        95547,
        54526,
        51022,
        28180,
        9757,
        2038,
        1351,
        280,
    )


def test_buddyinfo_fb_rows() -> None:
    old = _buddy("fb-prod-2node-3.10")
    assert _row(old, 1, "Normal") == (5956, 15, 5, 28, 11, 8, 2, 0, 0, 0, 0)
    new = _buddy("fb-prod-2node-4.0-fragmented")
    assert _row(new, 1, "Normal") == (190988, 77269, 3896, 332, 6, 0, 0, 0, 0, 0, 0)
    assert _row(new, 0, "DMA32") == (9462, 6148, 2297, 27, 0, 0, 0, 0, 0, 0, 0)


# --- pagetypeinfo spot checks -----------------------------------------------------------------


def test_pagetypeinfo_vm618() -> None:
    p = _ptype("vm-6.18-x86_64")
    assert (p.pageblock_order, p.pages_per_block) == (9, 512)
    assert len(p.free) == 15
    assert [b.zone for b in p.blocks] == ["DMA", "DMA32", "Normal"]
    assert p.blocks[2].blocks == (
        ("Unmovable", 105),
        ("Movable", 2131),
        ("Reclaimable", 196),
        ("HighAtomic", 0),
        ("Isolate", 0),
    )
    assert p.blocks[2].count("CMA") == 0  # no CMA column on this kernel
    assert not any(r.capped for r in p.free)


def test_pagetypeinfo_old_types_and_repeated_headers() -> None:
    p = _ptype("fb-prod-2node-3.10")
    assert len(p.free) == 20
    assert [(b.node, b.zone) for b in p.blocks] == [
        (0, "DMA"),
        (0, "DMA32"),
        (0, "Normal"),
        (1, "Normal"),
    ]
    assert p.blocks[3].blocks == (
        ("Unmovable", 868),
        ("Reclaimable", 433),
        ("Movable", 31465),
        ("Reserve", 2),
        ("Isolate", 0),
    )
    (movable,) = [r for r in p.free if (r.node, r.zone, r.migratetype) == (1, "Normal", "Movable")]
    assert movable.free == (1, 2919, 1131, 0, 0, 0, 0, 0, 0, 0, 0)
    # stranded below order 4: 1 + 2919*2 + 1131*4
    assert movable.pages_below(4) == 10363


def test_pagetypeinfo_cma_column_on_4_0() -> None:
    p = _ptype("fb-prod-2node-4.0-fragmented")
    assert len(p.free) == 24
    assert p.blocks[2].blocks == (
        ("Unmovable", 6634),
        ("Reclaimable", 3757),
        ("Movable", 21351),
        ("Reserve", 2),
        ("CMA", 0),
        ("Isolate", 0),
    )
    assert {r.migratetype for r in p.free} == {
        "Unmovable",
        "Reclaimable",
        "Movable",
        "Reserve",
        "CMA",
        "Isolate",
    }


def test_pagetypeinfo_capped_rows_are_flagged() -> None:
    p = _ptype("hygon-8node-pagetypeinfo-capped")
    assert len(p.free) == 50  # node 0: 3 zones x 5 types; nodes 1-7: 1 zone x 5 types
    assert len(p.blocks) == 10
    capped = [r for r in p.free if r.capped]
    assert [(r.node, r.zone, r.migratetype) for r in capped] == [
        (n, "Normal", "Movable") for n in range(8)
    ]
    assert sum(1 for r in capped for c in r.free if c == CAP) == 23  # SOURCE.md: 23 cells
    (n0,) = [r for r in capped if r.node == 0]
    assert n0.free == (21088, CAP, CAP, CAP, CAP, 90231, 37197, 9379, 1552, 83, 1)
    (n3,) = [r for r in capped if r.node == 3]
    assert n3.free == (23396, 48450, CAP, CAP, 99802, 77850, 47910, 20587, 4796, 428, 5)
    assert p.blocks[-1].blocks == (
        ("Unmovable", 1262),
        ("Movable", 31265),
        ("Reclaimable", 241),
        ("HighAtomic", 0),
        ("Isolate", 0),
    )


def test_pagetypeinfo_isolate_is_kept() -> None:
    p = _ptype("kvm-2node-6.6-cma-isolate")
    (iso,) = [r for r in p.free if (r.node, r.zone, r.migratetype) == (1, "Normal", "Isolate")]
    assert iso.free == (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3)
    assert p.blocks[3].count("Isolate") == 8
    assert p.blocks[3].count("CMA") == 0
    assert p.blocks[3].count("Movable") == 3977


def test_pagetypeinfo_mixed_blocks_section_is_skipped() -> None:
    """CONFIG_PAGE_OWNER adds 'Number of mixed blocks' (format from mm/vmstat.c); skip it."""
    base = _text("vm-6.18-x86_64", "pagetypeinfo")
    types = ("Unmovable", "Movable", "Reclaimable", "HighAtomic", "Isolate")
    mixed = "\n" + f"{'Number of mixed blocks ':<23}" + "".join(f"{t:>12} " for t in types) + "\n"
    for zone, counts in (("DMA", (0, 1, 0, 0, 0)), ("Normal", (3, 17, 2, 0, 0))):
        mixed += f"Node 0, zone {zone:>8} " + "".join(f"{c:12d} " for c in counts) + "\n"
    assert parse_pagetypeinfo(base + mixed) == parse_pagetypeinfo(base)


# --- zoneinfo, vmstat, meminfo, pressure spot checks ------------------------------------------


def _wm(zones: tuple[ZoneWatermarks, ...], node: int, zone: str) -> tuple[int, ...]:
    (w,) = [w for w in zones if (w.node, w.zone) == (node, zone)]
    return (w.free, w.min, w.low, w.high, w.spanned, w.present, w.managed)


def test_zoneinfo_vm618() -> None:
    zones = _zones("vm-6.18-x86_64")
    assert [z.zone for z in zones] == ["DMA", "DMA32", "Normal", "Movable", "Device"]
    assert _wm(zones, 0, "DMA") == (3840, 32, 40, 48, 4095, 3998, 3840)
    assert _wm(zones, 0, "DMA32") == (772917, 6458, 8072, 9686, 1044480, 782336, 772917)
    assert _wm(zones, 0, "Normal") == (33917, 10405, 13006, 15607, 5505024, 5505024, 1245184)
    assert _wm(zones, 0, "Movable") == (0, 32, 32, 32, 0, 0, 0)
    assert _wm(zones, 0, "Device") == (0, 0, 0, 0, 0, 0, 0)


def test_zoneinfo_kvm_two_nodes_with_empty_zones() -> None:
    zones = _zones("kvm-2node-6.6-cma-isolate")
    assert [(z.node, z.zone) for z in zones] == [
        (n, zone) for n in (0, 1) for zone in ("DMA", "DMA32", "Normal", "Movable")
    ]
    assert _wm(zones, 1, "DMA") == (0, 0, 0, 0, 0, 0, 0)
    assert _wm(zones, 0, "Normal") == (1360836, 8473, 10591, 12709, 1572864, 1572864, 1552266)
    assert _wm(zones, 1, "Normal") == (1829073, 11345, 14181, 17017, 2097152, 2097152, 2086594)


def test_zoneinfo_ppc64_2_6_without_managed() -> None:
    zones = _zones("ppc64-2node-2.6.20")
    # no 'managed' before 3.8: 'present' stands in for it
    assert _wm(zones, 0, "DMA") == (130474, 571, 713, 856, 147456, 145440, 145440)
    assert _wm(zones, 1, "DMA") == (109610, 444, 555, 666, 114688, 113120, 113120)
    assert len(zones) == 2


def test_zoneinfo_x220_3_7() -> None:
    zones = _zones("x220-3.7-rc6-kswapd")
    assert [z.zone for z in zones] == ["DMA", "DMA32", "Normal"]
    assert _wm(zones, 0, "Normal") == (2318, 2066, 2582, 3099, 124416, 122472, 122472)
    assert _wm(zones, 0, "DMA32") == (208727, 14763, 18453, 22144, 1044480, 874976, 874976)


def test_vmstat_vm618() -> None:
    v = parse_vmstat(_text("vm-6.18-x86_64", "vmstat"))
    assert len(v) == 192
    assert v["nr_free_pages"] == 810558
    assert v["nr_free_pages_blocks"] == 780800
    assert (v["drop_pagecache"], v["drop_slab"]) == (1, 2)
    assert v["compact_stall"] == v["compact_fail"] == v["compact_success"] == 0


def test_meminfo_fixtures() -> None:
    m = parse_meminfo(_text("vm-6.18-x86_64", "meminfo"))
    assert len(m) == 54
    assert (m["MemTotal"], m["MemFree"], m["MemAvailable"]) == (24684092, 19838508, 23839792)
    old = parse_meminfo(_text("x220-3.7-rc6-kswapd", "meminfo"))
    assert len(old) == 42
    assert "MemAvailable" not in old  # added in 3.14
    assert (old["MemTotal"], old["MemFree"], old["SReclaimable"]) == (3934452, 865764, 86612)
    assert (old["HugePages_Total"], old["Hugepagesize"]) == (0, 2048)


def test_pressure_vm618_and_synthetic() -> None:
    p = parse_pressure(_text("vm-6.18-x86_64", "pressure/memory"))
    assert p == Pressure(0.0, 0.0, 0.0, 0, 0.0, 0.0, 0.0, 0)
    q = parse_pressure(
        "some avg10=12.50 avg60=3.01 avg300=0.75 total=123456789\n"
        "full avg10=1.00 avg60=0.50 avg300=0.10 total=4242\n"
    )
    assert q == Pressure(12.5, 3.01, 0.75, 123456789, 1.0, 0.5, 0.1, 4242)
    only_some = parse_pressure("some avg10=0.10 avg60=0.20 avg300=0.30 total=7\n")
    assert only_some.full_avg10 is None
    assert only_some.full_total_us is None
    assert only_some.some_total_us == 7


def test_zoneinfo_only_trees_cannot_be_observed() -> None:
    """buddyinfo is the one required file: its absence names it."""
    for tree in ("kvm-2node-6.6-cma-isolate", "ppc64-2node-2.6.20", "x220-3.7-rc6-kswapd"):
        with pytest.raises(ParseError) as info:
            ProcReader(PROC / tree, PROC / tree / "nosys").observe()
        assert info.value.source == str(PROC / tree / "buddyinfo")
        assert info.value.line is None
        assert (
            str(info.value)
            == f"{PROC / tree / 'buddyinfo'}: cannot read: No such file or directory"
        )


# --- malformed input: ParseError naming file and line -----------------------------------------

BAD: list[tuple[str, str, str]] = [
    # (parser, text, expected str(ParseError) prefix)
    ("buddyinfo", "Node 0, zone DMA 1 2 3\nbogus line\n", "buddyinfo:2: expected 'Node N"),
    ("buddyinfo", "Node 0, zone DMA 1 2 3\nNode 0, zone Normal 1 x 3\n", "buddyinfo:2: free-block"),
    ("buddyinfo", "Node 0, zone DMA 1 -2 3\n", "buddyinfo:1: free-block counts"),
    ("buddyinfo", "\nNode 0, zone DMA 1\n\nNode 0, zone DMA 2\n", "buddyinfo:4: node 0 zone DMA"),
    ("buddyinfo", "", "buddyinfo: no zone rows"),
    ("buddyinfo", "   \n\n", "buddyinfo: no zone rows"),
    ("buddyinfo", "Node 0, zone DMA\n", "buddyinfo:1: expected"),
    ("pagetypeinfo", "Page block order: nine\n", "pagetypeinfo:1: Page block order is not"),
    (
        "pagetypeinfo",
        "Page block order: 9\nPages per block: 512\nNode 0, zone DMA, type Movable 1\n",
        "pagetypeinfo:3: zone row before any section header",
    ),
    (
        "pagetypeinfo",
        "Page block order: 9\nPages per block: 512\n\n"
        "Free pages count per migrate type at order 0 1\n"
        "Node 0, zone DMA, type Movable 1 2\n"
        "Node 0, zone DMA, type Unmovable 1 x\n",
        "pagetypeinfo:6: expected a count, got 'x'",
    ),
    (
        "pagetypeinfo",
        "Page block order: 9\nPages per block: 512\n\n"
        "Free pages count per migrate type at order 0 1\n"
        "Node 0, zone DMA, typo Movable 1 2\n",
        "pagetypeinfo:5: bad free-count row",
    ),
    (
        "pagetypeinfo",
        "Page block order: 9\nPages per block: 512\n"
        "Free pages count per migrate type at order 0 1\n"
        "Node 0, zone DMA, type Movable 1 2\n"
        "Number of blocks type Unmovable Movable\n"
        "Node 0, zone DMA 1\n",
        "pagetypeinfo:6: expected 2 block counts",
    ),
    (
        "pagetypeinfo",
        "Page block order: 9\nPages per block: 512\n"
        "Free pages count per migrate type at order 0 1\n"
        "Node 0, zone DMA, type Movable 1 2\n"
        "Number of blocks type\n",
        "pagetypeinfo:5: block-count header names no migrate type",
    ),
    (
        "pagetypeinfo",
        "Free pages count per migrate type at order 0 1\nNode 0, zone DMA, type Movable 1 2\n",
        "pagetypeinfo: missing 'Page block order'",
    ),
    ("pagetypeinfo", "Page block order: 9\nPages per block: 512\n", "pagetypeinfo: no free-count"),
    (
        "zoneinfo",
        "Node 0, zone DMA\n  pages free 5\n        min 1\n        low 2\n        high 3\n"
        "        spanned 10\n        present 10\nNode 0, zone Normal\n  pages free 5\n",
        "zoneinfo:8: zone Normal lacks min, low, high, spanned, present",
    ),
    (
        "zoneinfo",
        "Node 0, zone DMA\n  pages free 5\n        min 1\n        low x2\n",
        "zoneinfo:4: low is not an integer",
    ),
    ("zoneinfo", "nothing here\n", "zoneinfo: no 'Node N, zone NAME' sections"),
    ("vmstat", "nr_free_pages 1\nnr_dirty\n", "vmstat:2: expected 'name value'"),
    ("vmstat", "nr_free_pages 1 2\n", "vmstat:1: expected 'name value'"),
    ("vmstat", "\n\nnr_free_pages 1.5\n", "vmstat:3: expected 'name value'"),
    ("meminfo", "MemTotal: 1 kB\nMemFree 2 kB\n", "meminfo:2: expected 'Key: value [kB]'"),
    ("meminfo", "MemTotal: 1 kB extra\n", "meminfo:1: expected 'Key: value [kB]'"),
    ("meminfo", ": 1 kB\n", "meminfo:1: expected"),
    ("meminfo", "MemTotal: -1 kB\n", "meminfo:1: expected"),
    (
        "pressure/memory",
        "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\nmedium avg10=1\n",
        "pressure/memory:2: expected 'some' or 'full'",
    ),
    (
        "pressure/memory",
        "some avg10=0.00 avg60=0.00 avg300=0.00\n",
        "pressure/memory:1: bad pressure line",
    ),
    ("pressure/memory", "some avg10 avg60=1\n", "pressure/memory:1: bad pressure line"),
    (
        "pressure/memory",
        "full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
        "pressure/memory: no 'some' line",
    ),
]


@pytest.mark.parametrize(("name", "text", "prefix"), BAD)
def test_malformed_input_names_file_and_line(name: str, text: str, prefix: str) -> None:
    with pytest.raises(ParseError) as info:
        PARSERS[name](text, name)
    assert str(info.value).startswith(prefix), str(info.value)
    assert info.value.source == name


def test_parse_error_str_format() -> None:
    assert str(ParseError("buddyinfo", 2, "bad")) == "buddyinfo:2: bad"
    assert (
        str(ParseError("/proc/buddyinfo", None, "no zone rows")) == "/proc/buddyinfo: no zone rows"
    )


def test_default_sources_are_proc_paths() -> None:
    with pytest.raises(ParseError, match=r"^/proc/buddyinfo:1: "):
        parse_buddyinfo("x")
    with pytest.raises(ParseError, match=r"^/proc/pressure/memory: no 'some' line"):
        parse_pressure("")


# Characters that `str.isdigit()` accepts but `int()` rejects (superscripts, circled digits), and
# digit strings longer than CPython's int-conversion limit: a /proc snapshot can hold anything.
NOT_INT_DIGITS = ["\u00b2", "\u2460", "\u00b9\u00b3"]
HUGE = "9" * 5000

HOSTILE: list[tuple[str, str]] = [
    *[("buddyinfo", f"Node 0, zone DMA 1 {d}\n") for d in NOT_INT_DIGITS],
    ("buddyinfo", f"Node 0, zone DMA 1 {HUGE}\n"),
    ("buddyinfo", f"Node {HUGE}, zone DMA 1\n"),
    *[("pagetypeinfo", f"Page block order: {d}\n") for d in NOT_INT_DIGITS],
    (
        "pagetypeinfo",
        "Page block order: 9\nPages per block: 512\n"
        "Free pages count per migrate type at order 0 1\n"
        "Node 0, zone DMA, type Movable 1 >\u00b2\n",
    ),
    (
        "pagetypeinfo",
        "Page block order: 9\nPages per block: 512\n"
        "Free pages count per migrate type at order 0 1\n"
        f"Node 0, zone DMA, type Movable 1 {HUGE}\n",
    ),
    *[("zoneinfo", f"Node 0, zone DMA\n  pages free {d}\n") for d in NOT_INT_DIGITS],
    ("zoneinfo", f"Node 0, zone DMA\n  pages free {HUGE}\n"),
    *[("vmstat", f"nr_free_pages {d}\n") for d in NOT_INT_DIGITS],
    ("vmstat", f"nr_free_pages -{HUGE}\n"),
    *[("meminfo", f"MemTotal: {d} kB\n") for d in NOT_INT_DIGITS],
    ("meminfo", f"MemTotal: {HUGE} kB\n"),
    ("pressure/memory", f"some avg10=0 avg60=0 avg300=0 total={HUGE}\n"),
    ("pressure/memory", "some avg10=0 avg60=0 avg300=0 total=\u00b2\n"),
]


@pytest.mark.parametrize(
    ("name", "text"), HOSTILE, ids=[f"{n}-{i}" for i, (n, _) in enumerate(HOSTILE)]
)
def test_hostile_numbers_raise_parse_error(name: str, text: str) -> None:
    """Bad numbers are bad input: ParseError with file and line, never ValueError."""
    with pytest.raises(ParseError) as info:
        PARSERS[name](text, name)
    assert str(info.value).startswith(f"{name}:"), str(info.value)


# --- properties: any text either parses or raises ParseError ----------------------------------

FIXTURE_TEXTS: dict[str, list[str]] = {
    name: [_text(tree, n) for tree, n in FIXTURE_FILES if n == name] for name in PARSERS
}

_TOKENS = [
    "0",
    "1",
    "7",
    "9",
    " ",
    "  ",
    "\t",
    "\n",
    "\r\n",
    "\x0b",
    "\x1c",
    "\x85",
    "\u2028",
    "\x00",
    ",",
    ":",
    ">",
    "-",
    "=",
    ".",
    "e",
    "_",
    "\u00b2",
    "\u0663",
    "\u2460",
    "\ufffd",
    "Node ",
    "Node 0, zone Normal ",
    ", type ",
    ">100000",
    "99999999999999999999",
    HUGE,
    "Page block order: ",
    "Pages per block: ",
    "Number of blocks type ",
    "Number of mixed blocks ",
    "Free pages count per migrate type at order ",
    "pages free ",
    "managed ",
    "present ",
    "some ",
    "full ",
    "avg10=",
    "total=",
    "nan",
    "inf",
    ": ",
    " kB",
]
TOKEN = st.sampled_from(_TOKENS) | st.text(min_size=1, max_size=4)
# What a number field may turn into: the values parsers must reject (or accept) with care.
NUMBER_TOKEN = st.sampled_from(
    [
        "",
        "-",
        "-1",
        "1.5",
        "0x1f",
        "1e3",
        ">",
        ">100000",
        "> 5",
        "\u00b2",
        "\u2460",
        "\u0663",
        "\uff11",
        "1_000",
        "99999999999999999999",
        HUGE,
        " ",
        "nan",
    ]
) | st.text(max_size=3)


def _apply(text: str, op: str, pos: int, n: int, token: str, number: str) -> str:
    if op == "number":  # edit one number of the file: replace it, or put something next to it
        runs = list(re.finditer(r"[0-9]+", text))
        if not runs:
            return text
        r = runs[pos % len(runs)]
        start, end = r.span()
        if n % 3 == 0:
            return text[:start] + number + text[end:]
        if n % 3 == 1:
            return text[:start] + number + text[start:]
        return text[:end] + number + text[end:]
    if op == "truncate":
        return text[: pos % (len(text) + 1)]
    lines = text.splitlines(keepends=True)
    if op in ("dup_line", "drop_line", "swap_lines") and lines:
        i = pos % len(lines)
        j = (pos + n) % len(lines)
        if op == "dup_line":
            return "".join([*lines[: i + 1], lines[i], *lines[i + 1 :]])
        if op == "drop_line":
            return "".join(lines[:i] + lines[i + 1 :])
        lines[i], lines[j] = lines[j], lines[i]
        return "".join(lines)
    p = pos % (len(text) + 1)
    if op == "insert":
        return text[:p] + token + text[p:]
    if op == "delete":
        return text[:p] + text[p + n :]
    return text[:p] + token + text[p + n :]  # replace


OPS = st.tuples(
    st.sampled_from(
        (
            "number",
            "number",
            "insert",
            "delete",
            "replace",
            "truncate",
            "dup_line",
            "drop_line",
            "swap_lines",
        )
    ),
    st.integers(0, 1 << 20),
    st.integers(1, 40),
    TOKEN,
    NUMBER_TOKEN,
)


@st.composite
def mutated(draw: st.DrawFn, name: str) -> str:
    text = draw(st.sampled_from(FIXTURE_TEXTS[name]))
    for op in draw(st.lists(OPS, min_size=1, max_size=6)):
        text = _apply(text, *op)
    return text


def _parse_or_parse_error(name: str, text: str) -> None:
    source = f"fuzz/{name}"
    try:
        PARSERS[name](text, source)
    except ParseError as exc:
        assert exc.source == source
        assert str(exc).startswith(source + (f":{exc.line}: " if exc.line is not None else ": "))
        if exc.line is not None:
            assert 1 <= exc.line <= len(text.splitlines())


PROPERTY = settings(
    max_examples=400,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.mark.parametrize("name", list(PARSERS))
@PROPERTY
@given(data=st.data())
def test_mutated_fixture_parses_or_raises_parse_error(name: str, data: st.DataObject) -> None:
    _parse_or_parse_error(name, data.draw(mutated(name)))


@pytest.mark.parametrize("name", list(PARSERS))
@PROPERTY
@given(text=st.text())
def test_arbitrary_text_parses_or_raises_parse_error(name: str, text: str) -> None:
    _parse_or_parse_error(name, text)


@pytest.mark.parametrize("name", list(PARSERS))
@PROPERTY
@given(parts=st.lists(TOKEN, max_size=40))
def test_token_soup_parses_or_raises_parse_error(name: str, parts: list[str]) -> None:
    """Text built from the formats' own words reaches deeper than uniform random text."""
    _parse_or_parse_error(name, "".join(parts))


@PROPERTY
@given(
    rows=st.lists(
        st.tuples(
            st.integers(0, 63),
            st.sampled_from(("DMA", "DMA32", "Normal", "Movable")),
            st.lists(st.integers(0, 10**9), min_size=1, max_size=14),
        ),
        min_size=1,
        max_size=12,
        unique_by=lambda r: (r[0], r[1]),
    ),
    trailing=st.sampled_from(("", " ", "  ")),
)
def test_buddyinfo_roundtrip(rows: list[tuple[int, str, list[int]]], trailing: str) -> None:
    """Whatever the kernel could print (any orders, nodes, trailing space) parses back exactly."""
    text = "".join(
        f"Node {n}, zone {z:>8} " + " ".join(f"{c:6d}" for c in counts) + trailing + "\n"
        for n, z, counts in rows
    )
    parsed = parse_buddyinfo(text)
    assert [(z.node, z.zone, z.free) for z in parsed] == [(n, z, tuple(c)) for n, z, c in rows]
    for z, (_, _, counts) in zip(parsed, rows, strict=True):
        assert z.free_pages == sum(c * 2**o for o, c in enumerate(counts))
