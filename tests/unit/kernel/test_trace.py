"""The trace_pipe parser on lines recorded on the development VM (tests/fixtures/trace), the GFP
names read from that kernel's format file, and hostile lines (None, never an exception)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.kernel.trace import (
    DEFAULT_NOWARN_NAMES,
    CompactionBegin,
    CompactionEnd,
    DirectCompaction,
    Extfrag,
    Lost,
    MigrateType,
    PageAlloc,
    SlowPath,
    SlowPathKind,
    gfp_names,
    nowarn_names,
    parse_line,
)

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "trace"


def _names() -> frozenset[str]:
    return nowarn_names(gfp_names((FIXTURES / "mm_page_alloc.format").read_text()))


def _parse(name: str) -> list[object]:
    names = _names()
    return [parse_line(line, names) for line in (FIXTURES / name).read_text().splitlines()]


def test_every_recorded_line_parses() -> None:
    for name in (
        "pipes-and-compact-memory.trace",
        "hugetlb-exhausted-thp.trace",
        "anon-fragmented.trace",
        "slow-path.trace",
    ):
        events = _parse(name)
        assert events and None not in events, name


def test_gfp_values_come_from_this_kernels_format() -> None:
    names = gfp_names((FIXTURES / "mm_page_alloc.format").read_text())
    assert names["__GFP_NOWARN"] == 1 << 13
    assert names["__GFP_COMP"] == 1 << 18
    # GFP_TRANSHUGE_LIGHT = GFP_HIGHUSER_MOVABLE | __GFP_COMP | __GFP_NOMEMALLOC | __GFP_NOWARN
    # without __GFP_RECLAIM; GFP_TRANSHUGE adds __GFP_DIRECT_RECLAIM.
    assert names["GFP_TRANSHUGE"] == names["GFP_TRANSHUGE_LIGHT"] | names["__GFP_DIRECT_RECLAIM"]
    # On 6.18 GFP_NOWAIT includes __GFP_NOWARN: only the format file can say so.
    assert _names() == {"__GFP_NOWARN", "GFP_TRANSHUGE", "GFP_TRANSHUGE_LIGHT", "GFP_NOWAIT"}
    assert "GFP_NOWAIT" not in DEFAULT_NOWARN_NAMES


def test_a_failed_thp_allocation_is_the_one_with_no_page() -> None:
    events = _parse("hugetlb-exhausted-thp.trace")
    failed = [e for e in events if isinstance(e, PageAlloc)]
    assert len(failed) == 300 and all(e.failed and e.silent for e in failed)
    e = failed[0]
    assert (e.head.comm, e.head.pid, e.head.cpu) == ("python3", 2954, 1)
    assert (e.order, e.migratetype) == (9, MigrateType.MOVABLE)
    assert e.gfp == "GFP_TRANSHUGE_LIGHT|__GFP_NORETRY|__GFP_THISNODE"
    assert abs(e.head.timestamp - 10854.88) < 1


def test_successful_allocations_have_a_page_and_nowait_is_silent_here() -> None:
    events = [e for e in _parse("pipes-and-compact-memory.trace") if isinstance(e, PageAlloc)]
    assert events and not any(e.failed for e in events)
    kinds = Counter((e.gfp.split("|")[0], e.silent) for e in events)
    assert kinds[("GFP_NOWAIT", True)] > 0  # kube-apiserver's socket buffers
    assert kinds[("GFP_KERNEL", False)] > 0
    assert {e.head.comm for e in events} >= {"<...>", "kube-apiserver"}


def test_pageblock_steals_and_compaction() -> None:
    events = _parse("pipes-and-compact-memory.trace")
    steals = [e for e in events if isinstance(e, Extfrag)]
    assert len(steals) == 476
    first = steals[0]
    assert first.alloc_migratetype is MigrateType.UNMOVABLE
    assert first.fallback_migratetype is MigrateType.MOVABLE
    assert (first.fallback_order, first.fragmenting, first.change_ownership) == (10, False, True)
    begins = [e for e in events if isinstance(e, CompactionBegin)]
    ends = [e for e in events if isinstance(e, CompactionEnd)]
    assert [b.zone_start for b in begins] == [0x1, 0x1000, 0x100000]
    assert [e.status for e in ends] == ["complete", "complete", "contended"]
    assert all(b.sync for b in begins)


def test_direct_compaction_marker() -> None:
    events = _parse("hugetlb-exhausted-thp.trace")
    direct = [e for e in events if isinstance(e, DirectCompaction)]
    assert direct and all(e.order == 9 for e in direct)
    assert any(isinstance(e, CompactionBegin) and not e.sync for e in events)


def test_slow_path_events_carry_their_kind_and_order() -> None:
    events = _parse("slow-path.trace")
    slow = [(e.kind, e.order, e.head.comm) for e in events if isinstance(e, SlowPath)]
    assert slow == [
        (SlowPathKind.WAKEUP_KSWAPD, 9, "python3"),
        (SlowPathKind.WAKEUP_KSWAPD, 9, "python3"),
        (SlowPathKind.DIRECT_RECLAIM, 9, "python3"),
        (SlowPathKind.COMPACTION_DEFERRED, 9, "python3"),
    ]
    assert sum(isinstance(e, DirectCompaction) for e in events) == 1
    odd = b"  a-1 [000] ..... 1.0: mm_vmscan_wakeup_kswapd: nid=0 order=x gfp_flags=GFP_KERNEL"
    assert parse_line(odd) is None


def test_header_variants() -> None:
    body = "mm_compaction_try_to_compact_pages: order=4 gfp_mask=GFP_KERNEL priority=1"
    for line, comm, pid in (
        (f"  runc:[1:CHILD]-4242  [003] d..1. 12.000001: {body}", "runc:[1:CHILD]", 4242),
        (f" kworker/u4:2-7  (      7) [000] ..... 1.5: {body}", "kworker/u4:2", 7),  # tgid
        (f"  DOM Worker-99 [001] 3.25: {body}", "DOM Worker", 99),  # irq-info off
        (f"   a-1-2-3 [000] ..... 1.000000: {body}", "a-1-2", 3),
    ):
        e = parse_line(line)
        assert isinstance(e, DirectCompaction), line
        assert (e.head.comm, e.head.pid) == (comm, pid)
    assert parse_line("CPU:1 [LOST 1234 EVENTS]") == Lost(1, 1234)


def test_lines_that_are_not_ours() -> None:
    for line in (
        "",
        "# tracer: nop",
        "   <idle>-0 [000] ..... 1.0: tracing_mark_write: memfrag-agent: stop",
        "   x-1 [000] ..... 1.0: mm_page_alloc: page=0 pfn=zz order=1",
        "   x-1 [000] ..... 1.0: mm_page_alloc_extfrag: page=00 pfn=0x1 alloc_order=0",
        "   x-1 [000] ..... 1.0: mm_compaction_end: zone_start=0x1 status=complete",
        "CPU:1 [LOST 99999999999999999999999 EVENTS]",
    ):
        assert parse_line(line) is None, line


def test_format_without_flags_or_with_odd_expressions() -> None:
    assert gfp_names('print fmt: "x"') == {}
    assert nowarn_names({}) == DEFAULT_NOWARN_NAMES
    text = (
        '__print_flags(REC->gfp, "|", {( unsigned long)(1UL << 3), "A"}, '
        '{( unsigned long)(foo()), "B"}, {( unsigned long)('
        + "(" * 500
        + "1"
        + ")" * 500
        + '), "C"}, {( unsigned long)(1 << 99999), "D"})'
    )
    assert gfp_names(text) == {"A": 8}


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=400) | st.binary(max_size=400))
def test_any_text_gives_an_event_or_none(line: str | bytes) -> None:
    parse_line(line)


@settings(max_examples=200, deadline=None)
@given(
    comm=st.text(
        alphabet=st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")),
        min_size=1,
        max_size=15,
    ).filter(lambda c: c == c.strip()),
    pid=st.integers(0, 4194304),
    cpu=st.integers(0, 4095),
    order=st.integers(0, 10),
)
def test_failed_allocation_of_any_task(comm: str, pid: int, cpu: int, order: int) -> None:
    line = (
        f"{comm:>16}-{pid:<7} [{cpu:03d}] ..... 10.123456: mm_page_alloc: "
        f"page=0000000000000000 pfn=0x0 order={order} migratetype=0 gfp_flags=GFP_KERNEL"
    )
    e = parse_line(line)
    assert isinstance(e, PageAlloc)
    assert (e.head.comm, e.head.pid, e.head.cpu, e.order) == (comm, pid, cpu, order)
    assert e.failed and not e.silent
