"""agent.decide.cycle: one tick's decision, remediation and report together, pure. Assessments
come from real captures (tests/fixtures/proc)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

from agent.assess.hugepages import PoolReadiness
from agent.assess.predict import Prediction
from agent.assess.tracing import PodKernelMemory, TraceSummary, summarize
from agent.assess.verdict import Assessment, Reason, Verdict, assess
from agent.config.model import Config
from agent.decide.cycle import (
    POLLUTERS_SHOWN,
    WHERE_MAX,
    Facts,
    TickState,
    decide_tick,
    outcome_of,
    polluters,
    wants_taint_slot,
)
from agent.decide.ladder import ladder
from agent.decide.nodeview import Condition, ConditionStatus, NodeView
from agent.decide.remediation import ActionOutcome, after_action
from agent.decide.report import EventReason, PodRef, ReportState
from agent.kernel.cgroupinfo import CgroupPaths, KernelMemory
from agent.kernel.procfs import ProcReader
from tests.trace_fixtures import POLLUTER_PID, ZONES, recorded

PROC = Path(__file__).resolve().parents[2] / "fixtures" / "proc"
WALL = 1_700_000_000.0


def assessed(fixture: str) -> Assessment:
    return assess(ProcReader(PROC / fixture, "/nonexistent").observe(), Config().assessment)


FRAG, HEALTHY, UNMOVABLE = (
    assessed("seed-incident"),
    assessed("vm-6.18-x86_64"),
    assessed("fb-prod-2node-4.0-fragmented"),
)


def cfg(
    mode: Literal["off", "dry-run", "on"] = "on", delete: bool = True, hold: float = 0.0
) -> Config:
    c = Config()
    return dataclasses.replace(
        c,
        remediation=dataclasses.replace(c.remediation, mode=mode, delete_stuck_pods=delete),
        reporting=dataclasses.replace(
            c.reporting, fragmented_for_seconds=hold, healthy_for_seconds=0.0
        ),
    )


def view(status: ConditionStatus | None, taints: tuple[dict[str, str], ...] = ()) -> NodeView:
    c = None
    if status is not None:
        c = Condition(status, FRAG.reason, "m", "2023-11-14T22:00:00Z", "2023-11-14T22:13:00Z")
    return NodeView("n1", "u", "1", c, taints)


def facts(a: Assessment | None, v: NodeView | None, **kw: object) -> Facts:
    steps = ladder(a, (), True) if a is not None else ()
    return dataclasses.replace(Facts(100.0, WALL, a, steps=steps, view=v), **kw)  # type: ignore[arg-type]


def test_a_fragmented_node_gets_a_step_and_a_true_condition_in_one_decision() -> None:
    d = decide_tick(facts(FRAG, view(ConditionStatus.FALSE)), TickState(), cfg())
    assert d.run is not None and d.run.name == "compact"
    assert d.report is not None and d.report.condition is not None
    assert d.report.condition.status == ConditionStatus.TRUE
    assert d.events[0].reason == EventReason.FRAGMENTATION_DETECTED
    assert not d.delete_stuck and d.state.remedy.in_episode


def test_no_step_puts_the_why_into_the_message_and_says_not_possible_once() -> None:
    c = dataclasses.replace(
        cfg(), remediation=dataclasses.replace(cfg().remediation, allow_drop_caches=False)
    )
    tried = TickState()
    d = decide_tick(facts(UNMOVABLE, view(ConditionStatus.FALSE)), tried, c)
    while d.run is not None:  # every step of the ladder ran without recovery
        remedy = after_action(d.state.remedy, d.run, 100.0, ActionOutcome.NO_EFFECT, 0, 0)
        d = decide_tick(
            facts(UNMOVABLE, view(ConditionStatus.TRUE)),
            dataclasses.replace(d.state, remedy=remedy),
            c,
        )
    assert "Remediation:" in d.outcome.message
    assert EventReason.REMEDIATION_NOT_POSSIBLE in [e.reason for e in d.events]
    again = decide_tick(facts(UNMOVABLE, view(ConditionStatus.TRUE)), d.state, c)
    assert EventReason.REMEDIATION_NOT_POSSIBLE not in [e.reason for e in again.events]
    healthy = decide_tick(facts(HEALTHY, view(ConditionStatus.TRUE)), again.state, c)
    assert not healthy.state.said_not_possible


def test_delete_stuck_is_a_field_set_on_recovery_only() -> None:
    """Before: the daemon deleted stuck pods when an Event's reason string was 'Recovered'."""
    stuck = ("default/web",)
    rec = decide_tick(facts(HEALTHY, view(ConditionStatus.TRUE), stuck=stuck), TickState(), cfg())
    assert rec.delete_stuck
    assert EventReason.RECOVERED in [e.reason for e in rec.events]
    off = decide_tick(facts(HEALTHY, view(ConditionStatus.TRUE)), TickState(), cfg(delete=False))
    assert not off.delete_stuck
    still = decide_tick(facts(FRAG, view(ConditionStatus.TRUE)), TickState(), cfg())
    assert not still.delete_stuck


def test_without_a_node_the_remediation_is_decided_and_nothing_reported() -> None:
    d = decide_tick(facts(FRAG, None), TickState(), cfg())
    assert d.report is None and d.run is not None and d.state.report is None


def test_a_failed_assessment_is_unknown_with_no_remediation() -> None:
    d = decide_tick(
        facts(None, view(ConditionStatus.FALSE), error="buddyinfo: x"), TickState(), cfg()
    )
    assert d.outcome.verdict == Verdict.UNKNOWN and "buddyinfo: x" in d.outcome.message
    assert d.run is None and d.why is None
    assert d.report is not None and d.report.condition is not None
    assert d.report.condition.status == ConditionStatus.UNKNOWN


def test_the_message_names_stuck_pods_and_suppressed_reports() -> None:
    pods = tuple(f"default/p{i}" for i in range(7))
    msg = outcome_of(facts(FRAG, None, stuck=pods, suppressed=12)).message
    assert "7 pod(s) stuck in ContainerCreating: default/p0" in msg and "and 2 more" in msg
    assert "suppressed 12 more allocation-failure report(s) in the last 10 min" in msg


def test_the_taint_slot_is_wanted_to_put_the_taint_on_or_to_keep_it() -> None:
    rep = cfg(hold=60.0).reporting
    ours = ({"key": rep.taint_key, "effect": rep.taint_effect},)
    held = ReportState(Verdict.FRAGMENTED, verdict_since=0.0)
    empty = frozenset[str]()
    assert not wants_taint_slot(30.0, Verdict.FRAGMENTED, held, view(None), rep, empty)
    assert wants_taint_slot(60.0, Verdict.FRAGMENTED, held, view(None), rep, empty)
    assert not wants_taint_slot(600.0, Verdict.FRAGMENTED, None, view(None), rep, empty)
    assert wants_taint_slot(1.0, Verdict.HEALTHY, None, view(None, ours), rep, empty)
    none = dataclasses.replace(rep, taint_effect="none")
    assert not wants_taint_slot(600.0, Verdict.FRAGMENTED, held, view(None, ours), none, empty)


SOON = Prediction(
    node=0,
    seconds_to_fragmented=5400.0,
    slope_per_hour=-300.0,
    level_now=900.0,
    threshold=64,
    samples=30,
    span_seconds=1800.0,
    z=-5.0,
)


def test_a_prediction_keeps_the_condition_false_with_its_reason_and_one_event() -> None:
    d = decide_tick(
        facts(HEALTHY, view(ConditionStatus.FALSE), predictions=(SOON,)), TickState(), cfg()
    )
    assert d.outcome.reason == Reason.FRAGMENTATION_PREDICTED
    assert d.outcome.verdict == Verdict.HEALTHY and d.run is None
    assert d.report is not None and d.report.condition is not None
    assert d.report.condition.status == ConditionStatus.FALSE
    assert d.report.condition.reason == "FragmentationPredicted"
    assert (
        "NUMA node 0" in d.report.condition.message
        and "in about 1h30m" in d.report.condition.message
    )
    assert [e.reason for e in d.events] == [EventReason.FRAGMENTATION_PREDICTED]
    assert "below 64 in about 1h30m" in d.events[0].message
    # the next ticks of the episode say it in the condition, not in another Event
    later = dataclasses.replace(SOON, seconds_to_fragmented=5000.0)
    again = decide_tick(
        facts(HEALTHY, view(ConditionStatus.FALSE), predictions=(later,), now=160.0), d.state, cfg()
    )
    assert again.outcome.reason == Reason.FRAGMENTATION_PREDICTED and not again.events


def test_the_prediction_episode_ends_after_a_quiet_window_or_when_it_came_true() -> None:
    c = cfg()
    window = c.assessment.prediction_window_seconds
    first = decide_tick(facts(HEALTHY, None, predictions=(SOON,)), TickState(), c)
    assert first.state.predicted_at == 100.0
    # a prediction that flickers off and on within the window is the same episode
    off = decide_tick(facts(HEALTHY, None, now=100.0 + window / 2), first.state, c)
    assert off.outcome.reason == Reason.CONTIGUOUS_MEMORY_AVAILABLE and not off.events
    on = decide_tick(facts(HEALTHY, None, predictions=(SOON,), now=100.0 + window), off.state, c)
    assert not on.events
    quiet = decide_tick(facts(HEALTHY, None, now=100.0 + 2 * window), on.state, c)
    assert quiet.state.predicted_at is None
    news = decide_tick(
        facts(HEALTHY, None, predictions=(SOON,), now=100.0 + 2 * window), quiet.state, c
    )
    assert [e.reason for e in news.events] == [EventReason.FRAGMENTATION_PREDICTED]
    came_true = decide_tick(facts(FRAG, None, now=101.0 + 2 * window), news.state, c)
    assert came_true.state.predicted_at is None


def test_a_fragmented_node_reports_fragmentation_not_its_prediction() -> None:
    d = decide_tick(
        facts(FRAG, view(ConditionStatus.FALSE), predictions=(SOON,)), TickState(), cfg()
    )
    assert d.outcome.reason == Reason.FREE_MEMORY_FRAGMENTED
    assert "predicted" not in d.outcome.message
    assert EventReason.FRAGMENTATION_PREDICTED not in [e.reason for e in d.events]
    assert d.state.predicted_at is None


def pool(target: int | None, overcommit: int | None, can_grow: bool | None) -> PoolReadiness:
    return PoolReadiness(
        size_kib=2048,
        order=9,
        nr=0,
        free=0,
        surplus=0,
        overcommit=overcommit,
        target=target,
        allocatable=3,
        can_grow=can_grow,
        message=f"hugepages-2048kB: pool {target} {overcommit} {can_grow}",
    )


def test_the_message_names_the_hugepage_pools_with_a_target_that_cannot_grow() -> None:
    pools = (
        pool(None, 512, False),  # overcommit headroom it cannot give
        pool(8, None, False),  # a target it cannot reach
        pool(None, 0, False),  # nothing asked: no news
        pool(None, 512, True),
    )
    msg = outcome_of(facts(HEALTHY, None, hugepages=pools)).message
    assert "pool None 512 False" in msg and "pool 8 None False" in msg
    assert "pool None 0 False" not in msg and "True" not in msg


# --- the tracing source's window (sources.tracing_enabled) --------------------------------------

POD_UID = "0f1e2d3c-aaaa-bbbb-cccc-0123456789ab"


def traced(*names: str, cgroup: str = f"/kubepods/burstable/pod{POD_UID}/c1") -> TraceSummary:
    """A window of recorded events, the pipe-filling polluter in `cgroup`."""
    events = [e for n in names for e in recorded(n)]
    cgroups = {POLLUTER_PID: CgroupPaths(cgroup, "/")}
    return summarize(events, 600.0, 4, cgroups, ZONES)


def test_traced_failures_are_a_sentence_of_the_message_and_an_event_once_per_episode() -> None:
    t = traced("hugetlb-exhausted-thp.trace")
    assert t.failed == t.silent == 300
    sentence = "300 high-order allocations failed in the last 10 minutes, 300 of them silent"
    d = decide_tick(facts(HEALTHY, view(ConditionStatus.FALSE), traced=t), TickState(), cfg())
    assert sentence in d.outcome.message
    told = [e for e in d.events if e.reason == EventReason.HIGH_ORDER_ALLOCATION_FAILED]
    assert [e.message for e in told] == [f"traced: {sentence}"]
    again = decide_tick(facts(HEALTHY, view(ConditionStatus.FALSE), traced=t), d.state, cfg())
    assert EventReason.HIGH_ORDER_ALLOCATION_FAILED not in [e.reason for e in again.events]
    clear = traced("anon-fragmented.trace")  # steals and compactions, no failure
    quiet = decide_tick(
        facts(HEALTHY, view(ConditionStatus.FALSE), traced=clear), again.state, cfg()
    )
    assert "allocations failed" not in quiet.outcome.message and not quiet.state.said_traced
    anew = decide_tick(facts(HEALTHY, view(ConditionStatus.FALSE), traced=t), quiet.state, cfg())
    assert EventReason.HIGH_ORDER_ALLOCATION_FAILED in [e.reason for e in anew.events]


def test_without_tracing_the_message_and_events_are_as_before() -> None:
    f = facts(FRAG, view(ConditionStatus.FALSE))
    with_empty = dataclasses.replace(f, traced=traced("anon-fragmented.trace"))
    assert outcome_of(f) == outcome_of(with_empty)  # FRAG's cause is not unmovable
    assert (
        decide_tick(f, TickState(), cfg()).events
        == decide_tick(with_empty, TickState(), cfg()).events
    )


def test_an_unmovable_cause_names_the_polluters_and_their_pod() -> None:
    t = traced("pipes-and-compact-memory.trace")
    pods = {POD_UID: "shop/cart-7d9f"}
    msg = outcome_of(facts(UNMOVABLE, None, traced=t, pods=pods)).message
    n = t.polluters[0].count
    assert f"pageblock steals in the last 10 minutes by python (pod shop/cart-7d9f): {n}" in msg
    unnamed = outcome_of(facts(UNMOVABLE, None, traced=t)).message
    assert f"python (pod {POD_UID})" in unnamed  # the informer does not know it (yet)
    assert "pageblock steals" not in outcome_of(facts(FRAG, None, traced=t)).message


def test_the_polluters_named_are_bounded() -> None:
    """Five ranked processes and more: three named, the rest counted; a long cgroup path cut."""
    long = "/" + "x" * 5000
    t = traced("pipes-and-compact-memory.trace", "anon-fragmented.trace", cgroup=long)
    t = dataclasses.replace(t, polluters=t.polluters * 3, polluters_other=7)
    text = polluters(t, {})
    assert len(text) < 600
    shown = t.polluters[:POLLUTERS_SHOWN]
    rest = 7 + sum(r.count for r in t.polluters[POLLUTERS_SHOWN:])
    assert text.endswith(f" and {rest} by others")
    assert "x" * WHERE_MAX not in text and "..." in text
    assert text.count("): ") == len(shown)


def _kernel_pods() -> tuple[PodKernelMemory, ...]:
    big = KernelMemory(300 << 20, (("slab_unreclaimable", 250 << 20), ("sock", 50 << 20)))
    small = KernelMemory(12 << 20, (("kmem", 12 << 20),))
    return (PodKernelMemory("uid-a", big), PodKernelMemory("uid-b", small))


def test_an_unmovable_cause_names_the_pods_holding_kernel_memory_and_tells_each_once() -> None:
    pods = {"uid-a": "shop/cart"}  # uid-b: not in the informer (yet)
    f = facts(UNMOVABLE, view(ConditionStatus.TRUE), kernel_pods=_kernel_pods(), pods=pods)
    assert UNMOVABLE.verdict == Verdict.FRAGMENTED
    d = decide_tick(f, TickState(), cfg())
    assert "unmovable kernel memory by pod: shop/cart 300.0 MiB, uid-b 12.0 MiB" in (
        d.outcome.message
    )
    (ev,) = [e for e in d.events if e.reason == EventReason.UNMOVABLE_KERNEL_MEMORY]
    assert ev.pod == PodRef("shop", "cart", "uid-a")  # uid-b: no namespace to put it in
    assert "300.0 MiB of unmovable kernel memory (slab_unreclaimable 250.0 MiB, sock 50.0" in (
        ev.message
    )
    again = decide_tick(f, d.state, cfg())
    assert not [e for e in again.events if e.reason == EventReason.UNMOVABLE_KERNEL_MEMORY]
    # the episode ends: the next one tells them again
    healthy = decide_tick(facts(HEALTHY, view(ConditionStatus.TRUE)), again.state, cfg())
    assert not healthy.state.said_kernel_pods
    third = decide_tick(f, healthy.state, cfg())
    assert [e.pod for e in third.events if e.pod is not None] == [PodRef("shop", "cart", "uid-a")]


def test_kernel_memory_pods_are_not_named_for_another_cause() -> None:
    f = facts(FRAG, view(ConditionStatus.TRUE), kernel_pods=_kernel_pods(), pods={})
    d = decide_tick(f, TickState(), cfg())
    assert "kernel memory by pod" not in d.outcome.message
    assert not [e for e in d.events if e.pod is not None]
