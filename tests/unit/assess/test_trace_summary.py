"""The window aggregation: failures per order and GFP class, bounded top-N attribution with
cgroup and pod, steals by migrate type, compaction cost per node and kind, the sentence."""

from __future__ import annotations

from pathlib import Path

from agent.assess.tracing import CompactionKind, span, summarize, top_pods
from agent.kernel.cgroupinfo import CgroupPaths, KernelMemory
from agent.kernel.trace import (
    CompactionBegin,
    CompactionEnd,
    DirectCompaction,
    Extfrag,
    Header,
    Lost,
    MigrateType,
    PageAlloc,
    TraceEvent,
    gfp_names,
    nowarn_names,
    parse_line,
)

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "trace"
ZONES = {0x1: 0, 0x1000: 0, 0x100000: 0}
POD = "0f1e2d3c-aaaa-bbbb-cccc-0123456789ab"


def _recorded(name: str) -> list[TraceEvent]:
    names = nowarn_names(gfp_names((FIXTURES / "mm_page_alloc.format").read_text()))
    out = []
    for line in (FIXTURES / name).read_text().splitlines():
        e = parse_line(line, names)
        assert e is not None
        out.append(e)
    return out


def _h(comm: str, pid: int, ts: float = 1.0) -> Header:
    return Header(comm, pid, 0, ts)


def _fail(comm: str, pid: int, order: int, silent: bool) -> PageAlloc:
    return PageAlloc(_h(comm, pid), order, MigrateType.UNMOVABLE, "G", True, silent)


def test_recorded_thp_failures_and_direct_compaction() -> None:
    s = summarize(_recorded("hugetlb-exhausted-thp.trace"), 300, 4, {}, ZONES)
    assert (s.failed, s.silent) == (300, 300)
    assert [(o.order, o.failed, o.silent) for o in s.by_order] == [(9, 300, 300)]
    assert s.failing[0].who.comm == "python3" and s.failing[0].who.cgroup is None
    kinds = {c.kind for c in s.compaction}
    assert CompactionKind.DIRECT in kinds and all(c.node == 0 for c in s.compaction)
    assert s.sentence() == (
        "300 high-order allocations failed in the last 5 minutes, 300 of them silent"
    )


def test_recorded_manual_compaction_and_pipe_steals() -> None:
    events = _recorded("pipes-and-compact-memory.trace")
    pids = {e.head.pid for e in events if isinstance(e, Extfrag)}
    cgroups = {pid: CgroupPaths(f"/kubepods/burstable/pod{POD}/c", "/") for pid in pids}
    s = summarize(events, 5, 3, cgroups, ZONES)
    assert s.failed == 0  # successes are not failures
    assert s.steals == 476
    assert s.steals_by_type[0].alloc is MigrateType.UNMOVABLE
    assert s.polluters[0].who.pod_uid == POD and s.polluters[0].who.comm == "python"
    manual = [c for c in s.compaction if c.kind is CompactionKind.MANUAL]
    assert len(manual) == 1 and manual[0].runs == 3
    assert dict(manual[0].results) == {"complete": 2, "contended": 1}
    assert 0.14 < manual[0].seconds < 0.16 and s.unpaired == 0


def test_recorded_kcompactd() -> None:
    s = summarize(_recorded("anon-fragmented.trace"), 60, 4, {}, ZONES)
    assert {c.kind for c in s.compaction} == {CompactionKind.KCOMPACTD}
    assert s.steals == sum(st.count for st in s.steals_by_type) > 0


def test_threshold_and_gfp_class() -> None:
    events: list[TraceEvent] = [
        _fail("a", 1, 3, True),
        _fail("a", 1, 4, True),
        _fail("b", 2, 4, False),
        _fail("b", 2, 6, False),
        PageAlloc(_h("c", 3), 9, MigrateType.MOVABLE, "G", False, True),  # a success
    ]
    s = summarize(events, 60, 4, {}, {})
    assert (s.failed, s.silent) == (3, 1)
    assert [(o.order, o.failed, o.silent) for o in s.by_order] == [(4, 2, 1), (6, 1, 0)]
    assert (
        s.sentence() == "3 high-order allocations failed in the last 60 seconds, 1 of them silent"
    )


def test_top_n_is_bounded_and_the_rest_summed() -> None:
    events = [_fail(f"p{i}", i, 5, True) for i in range(1000) for _ in range(1 + i % 3)]
    s = summarize(events, 60, 4, {}, {}, top_n=3)
    assert len(s.failing) == 3 and all(r.count == 3 for r in s.failing)
    assert sum(r.count for r in s.failing) + s.failing_other == s.failed
    assert len(summarize(events, 60, 4, {}, {}, top_n=10**9).failing) == 50


def test_steals_count_only_fragmenting_or_ownership_changes() -> None:
    def steal(frag: bool, own: bool) -> Extfrag:
        return Extfrag(_h("x", 1), 0, 3, MigrateType.UNMOVABLE, MigrateType.MOVABLE, frag, own)

    s = summarize([steal(True, False), steal(False, True), steal(False, False)], 1, 4, {}, {})
    assert s.steals == 2


def test_compaction_kinds_and_pairing() -> None:
    events: list[TraceEvent] = [
        DirectCompaction(_h("java", 5, 1.0), 9),
        CompactionBegin(_h("java", 5, 1.0), 0x100000, 0x640000, False),
        CompactionEnd(_h("java", 5, 1.5), 0x100000, 0x640000, False, "success"),
        # the same task compacting the same zone again without a new marker: manual
        CompactionBegin(_h("java", 5, 2.0), 0x100000, 0x640000, True),
        CompactionEnd(_h("java", 5, 4.0), 0x100000, 0x640000, True, "complete"),
        CompactionBegin(_h("kcompactd0", 35, 3.0), 0x1000, 0x100000, True),
        CompactionEnd(_h("kcompactd0", 35, 3.25), 0x1000, 0x100000, True, "success"),
        CompactionEnd(_h("sh", 9, 3.0), 0x1, 0x1000, True, "complete"),  # begin not seen
        CompactionBegin(_h("sh", 10, 3.0), 0x1, 0x1000, True),  # end not yet seen
        CompactionBegin(_h("x", 11, 3.0), 0x777, 0x1000, True),
        CompactionEnd(_h("x", 11, 3.5), 0x777, 0x1000, True, "complete"),  # unknown zone
    ]
    s = summarize(events, 60, 4, {}, ZONES)
    got = {(c.node, c.kind): (c.runs, c.seconds) for c in s.compaction}
    assert got == {
        (0, CompactionKind.DIRECT): (1, 0.5),
        (0, CompactionKind.MANUAL): (1, 2.0),
        (0, CompactionKind.KCOMPACTD): (1, 0.25),
        (None, CompactionKind.MANUAL): (1, 0.5),
    }
    assert s.unpaired == 2


def test_lost_events_make_the_sentence_a_lower_bound() -> None:
    s = summarize([_fail("a", 1, 5, True), Lost(0, 12)], 600, 4, {}, {})
    assert s.lost == 12
    assert s.sentence().endswith("1 of them silent (at least: 12 trace events lost)")
    assert "1 high-order allocation failed in the last 10 minutes" in s.sentence()
    assert span(1) == "1 second"


def test_top_pods_by_kernel_memory() -> None:
    pods = {f"uid{i}": KernelMemory(i * 100, (("kmem", i * 100),)) for i in range(20)}
    top = top_pods(pods, 3)
    assert [p.pod_uid for p in top] == ["uid19", "uid18", "uid17"]
