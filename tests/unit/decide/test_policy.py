"""The remediation policy as a pure function with a fake clock."""

from __future__ import annotations

import dataclasses

from agent.assess.tunables import recommend
from agent.assess.verdict import Assessment, Cause, NumaReport, Reason
from agent.base.times import micro_time
from agent.config.model import RemediationConfig
from agent.decide.ladder import Step
from agent.decide.remediation import (
    ActionOutcome,
    PastAction,
    RemedyState,
    after_action,
    decide_remediation,
    in_window,
    merge_history,
)
from agent.kernel.actions import ActionKind
from agent.kernel.psi import Pressure
from agent.kube.leases import Observed, taint_slots

T0 = 1_800_000_000.0  # 2027-01-15T08:00:00Z
STEPS = (
    Step(ActionKind.COMPACT, None, "compaction"),
    Step(ActionKind.DROP_CACHES, 1, "page cache"),
    Step(ActionKind.DROP_CACHES, 2, "slab"),
)
ON = RemediationConfig(mode="on", cooldown_seconds=600, max_actions_per_hour=10)


def assessment(verdict: str = "fragmented", cause: str = "movable") -> Assessment:
    state = "fragmented" if verdict == "fragmented" else "healthy"
    return Assessment(
        verdict=verdict,  # type: ignore[arg-type]
        reason=Reason.FREE_MEMORY_FRAGMENTED,
        message="m",
        order=4,
        exhausted=False,
        cause=Cause(cause, (), "why"),  # type: ignore[arg-type]
        numa=(NumaReport(0, state, 0, 100, ("Normal",)),),  # type: ignore[arg-type]
        zones=(),
        gaps=(),
    )


def pressure(avg10: float) -> Pressure:
    return Pressure(avg10, 0, 0, 0, None, None, None, None)


def climb(
    state: RemedyState, now: float, cfg: RemediationConfig = ON
) -> tuple[str | None, str, RemedyState]:
    d = decide_remediation(now, assessment(), STEPS, state, cfg, None, wall=now)
    if d.step is None:
        return None, d.why, d.state
    return d.step.name, d.why, after_action(d.state, d.step, now, ActionOutcome.NO_EFFECT, 0, 0)


def test_the_ladder_runs_each_step_once_then_stops_and_says_why() -> None:
    state = RemedyState()
    names = []
    for i in range(10):  # many polls, nothing helps
        name, why, state = climb(state, T0 + i * 1000)
        names.append(name)
    assert names[:3] == ["compact", "drop-caches=1", "drop-caches=2"]
    assert names[3:] == [None] * 7
    assert "ran without recovery" in why


def test_recovery_ends_the_episode_and_a_new_one_starts_at_the_bottom() -> None:
    _, _, state = climb(RemedyState(), T0)
    healthy = decide_remediation(
        T0 + 10, assessment("healthy"), STEPS, state, ON, None, wall=T0 + 10
    )
    assert healthy.step is None and not healthy.state.in_episode
    name, _, _ = climb(healthy.state, T0 + 700)  # cooldown of compact (600 s) has passed
    assert name == "compact"


def test_cooldown_holds_across_episodes() -> None:
    _, _, state = climb(RemedyState(), T0)
    healthy = decide_remediation(
        T0 + 10, assessment("healthy"), STEPS, state, ON, None, wall=T0 + 10
    )
    name, why, _ = climb(healthy.state, T0 + 100)
    assert name is None and why == "compact is cooling down (500s left)"


def test_actions_per_hour_cap() -> None:
    cfg = dataclasses.replace(ON, max_actions_per_hour=2, cooldown_seconds=0)
    state = RemedyState()
    seen = []
    for i in range(3):
        name, why, state = climb(state, T0 + i, cfg)
        seen.append(name)
    assert seen == ["compact", "drop-caches=1", None]
    assert why == "2 actions in the last hour (max 2)"
    name, _, _ = climb(state, T0 + 3601, cfg)
    assert name == "drop-caches=2"


def test_mode_off_does_nothing() -> None:
    off = dataclasses.replace(ON, mode="off")
    d = decide_remediation(T0, assessment(), STEPS, RemedyState(), off, None, wall=T0)
    assert d.step is None and "off" in d.why


def test_unmovable_one_attempt_then_the_operators_call() -> None:
    steps = (
        Step(ActionKind.DROP_CACHES, 1, "one attempt"),
        Step(ActionKind.COMPACT, None, "one attempt"),
    )
    state, taken = RemedyState(), []
    for i in range(6):
        d = decide_remediation(
            T0 + i * 1000, assessment(cause="unmovable"), steps, state, ON, None, wall=T0 + i * 1000
        )
        state = d.state
        if d.step is not None:
            taken.append(d.step.name)
            state = after_action(state, d.step, T0 + i * 1000, ActionOutcome.NO_EFFECT, 0, 0)
    assert taken == ["drop-caches=1", "compact"]
    assert d.step is None and "one attempt (drop-caches=1, compact)" in d.why
    assert "operator's call" in d.why
    assert "nothing more the agent may do will help" in d.why


def test_dry_run_decides_like_on() -> None:
    dry = dataclasses.replace(ON, mode="dry-run")
    d = decide_remediation(T0, assessment(), STEPS, RemedyState(), dry, None, wall=T0)
    assert d.step == STEPS[0]


def test_memory_pressure_guard() -> None:
    d = decide_remediation(T0, assessment(), STEPS, RemedyState(), ON, pressure(80.0), wall=T0)
    assert d.step is None and "PSI some avg10 80.0% > 50%" in d.why
    d = decide_remediation(T0, assessment(), STEPS, RemedyState(), ON, pressure(10.0), wall=T0)
    assert d.step == STEPS[0]


def test_maintenance_window() -> None:
    assert in_window("", T0)
    assert in_window("07:00-09:00", T0)  # 08:00 UTC
    assert not in_window("09:00-10:00", T0)
    assert in_window("22:00-08:30", T0)  # wraps midnight
    assert not in_window("22:00-07:59", T0)
    cfg = dataclasses.replace(ON, maintenance_window="09:00-10:00")
    d = decide_remediation(T0, assessment(), STEPS, RemedyState(), cfg, None, wall=T0)
    assert d.step is None and "maintenance window 09:00-10:00" in d.why


def test_dry_run_records_do_not_count_against_the_hourly_cap() -> None:
    cfg = dataclasses.replace(ON, max_actions_per_hour=1, cooldown_seconds=0)
    d = decide_remediation(T0, assessment(), STEPS, RemedyState(), cfg, None, wall=T0)
    assert d.step is not None
    state = after_action(d.state, d.step, T0, ActionOutcome.DRY_RUN, 0, 0)
    d2 = decide_remediation(T0 + 1, assessment(), STEPS, state, cfg, None, wall=T0 + 1)
    assert d2.step == STEPS[1]


class FakeClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def lease(rv: str, renew: float, holder: str = "a", duration: int = 30) -> dict[str, object]:
    return {
        "metadata": {"name": "slot-0", "resourceVersion": rv},
        "spec": {
            "holderIdentity": holder,
            "renewTime": micro_time(renew),
            "leaseDurationSeconds": duration,
        },
    }


def test_lease_expiry_is_timed_by_our_clock_from_the_last_change_we_saw() -> None:
    """client-go's observedTime: a lease expires once it has not changed for its duration, by
    the observer's monotonic clock, whatever renewTime another node's clock wrote."""
    mono = FakeClock()
    seen = Observed(mono)
    assert not seen.expired(lease("1", T0))  # first sight: a full duration from now
    mono.t += 29
    assert not seen.expired(lease("1", T0))
    mono.t += 2
    assert seen.expired(lease("1", T0))  # 31 s without a change
    assert not seen.expired(lease("2", T0 + 31))  # renewed: the count starts again
    assert seen.expired({"metadata": {"name": "x"}, "spec": {}})  # nobody holds it


def test_a_clock_301s_ahead_cannot_take_a_held_slot() -> None:
    """The renewing holder's renewTime, as the other node's skewed clocks see it, decides
    nothing: before the fix a node 301 s ahead took the slot at once."""
    mono = FakeClock()
    ahead = Observed(mono)
    for i in range(10):  # the holder renews every 10 s
        assert not ahead.expired(lease(str(i), T0 + 10 * i))
        mono.t += 10


def test_a_holder_an_hour_behind_keeps_its_slot() -> None:
    """renewTime an hour in the past (the holder's clock is behind): still held while it
    renews; before the fix it was taken a second after being acquired."""
    mono = FakeClock()
    seen = Observed(mono)
    assert not seen.expired(lease("1", T0 - 3600))
    mono.t += 1
    assert not seen.expired(lease("1", T0 - 3600))


def test_actions_of_other_pods_on_the_node_count_against_the_cap() -> None:
    """Two pods on one node (a maxSurge rollout): the node's record holds both pods' actions,
    and each counts the other's; before, each pod's own history allowed 4 per hour."""
    cfg = dataclasses.replace(ON, max_actions_per_hour=4, cooldown_seconds=0)
    wall = T0
    past = tuple(
        PastAction("compact", wall - 5 * i, ActionOutcome.NO_EFFECT, "pod-b") for i in range(4)
    )
    state = merge_history(RemedyState(), past, "pod-a", 500.0, wall)
    d = decide_remediation(500.0, assessment(), STEPS, state, cfg, None, wall=wall)
    assert d.step is None and "4 actions in the last hour (max 4)" in d.why
    mine = merge_history(RemedyState(), past, "pod-b", 500.0, wall)
    assert mine.others == ()  # our own actions we have already, on our own clock


def test_an_action_recorded_in_the_future_counts_as_just_now() -> None:
    """The record's wall time is ahead of ours (our clock stepped back): the action still
    cools down the step; it never looks older than it is."""
    past = (PastAction("compact", T0 + 7200, ActionOutcome.NO_EFFECT, "pod-b"),)
    state = merge_history(RemedyState(), past, "pod-a", 500.0, T0)
    d = decide_remediation(500.0, assessment(), STEPS, state, ON, None, wall=T0)
    assert d.step is None and "compact is cooling down (600s left)" in d.why


def test_cooldown_and_cap_run_on_the_monotonic_clock() -> None:
    """A wall-clock step of an hour neither lifts a cooldown nor the cap (before: `now` was
    the wall clock, so +1 h skipped the cooldown)."""
    d = decide_remediation(100.0, assessment(), STEPS, RemedyState(), ON, None, wall=T0)
    assert d.step is not None and d.step.name == "compact"
    state = after_action(d.state, d.step, 100.0, ActionOutcome.NO_EFFECT, 0, 0)
    state = dataclasses.replace(state, tried=())  # a new episode, same hour
    d = decide_remediation(101.0, assessment(), STEPS, state, ON, None, wall=T0 + 3600)
    assert d.step is None and "cooling down (599s left)" in d.why


def test_taint_slots() -> None:
    assert taint_slots(1, 20) == 1  # the only node may be tainted
    assert taint_slots(9, 20) == 1
    assert taint_slots(10, 20) == 2
    assert taint_slots(5000, 20) == 1000
    assert taint_slots(100, 0) == 1


def test_tunables_only_raise() -> None:
    recs = {
        r.name: r
        for r in recommend(
            {
                "min_free_kbytes": 67584,
                "watermark_scale_factor": 10,
                "compaction_proactiveness": 0,
                "extfrag_threshold": 700,
            },
            24 * 1024 * 1024,
        )
    }
    assert recs["min_free_kbytes"].recommended == 251658
    assert recs["watermark_scale_factor"].recommended == 100
    assert recs["compaction_proactiveness"].recommended == 20
    assert recs["extfrag_threshold"].recommended == 500
    assert (
        recommend(
            {
                "min_free_kbytes": 10**7,
                "watermark_scale_factor": 200,
                "compaction_proactiveness": 20,
                "extfrag_threshold": 500,
            },
            24 * 1024 * 1024,
        )
        == ()
    )


def test_a_ladder_that_changes_mid_episode_never_repeats_a_step() -> None:
    """Dropping page cache can turn an unmovable cause into a movable one: the new ladder
    starts with steps already run, and those are skipped, not repeated."""
    cfg = dataclasses.replace(ON, cooldown_seconds=0)
    unmovable = (
        Step(ActionKind.DROP_CACHES, 1, "one attempt"),
        Step(ActionKind.COMPACT, None, "one attempt"),
    )
    d = decide_remediation(
        T0, assessment(cause="unmovable"), unmovable, RemedyState(), cfg, None, wall=T0
    )
    assert d.step is not None and d.step.name == "drop-caches=1"
    state = after_action(d.state, d.step, T0, ActionOutcome.OK, 11, 15)
    d = decide_remediation(
        T0 + 15, assessment(cause="movable"), STEPS, state, cfg, None, wall=T0 + 15
    )
    assert d.step is not None and d.step.name == "compact"
    state = after_action(d.state, d.step, T0 + 15, ActionOutcome.NO_EFFECT, 15, 15)
    d = decide_remediation(
        T0 + 30, assessment(cause="movable"), STEPS, state, cfg, None, wall=T0 + 30
    )
    assert d.step is not None and d.step.name == "drop-caches=2"  # =1 already ran
    state = after_action(d.state, d.step, T0 + 30, ActionOutcome.NO_EFFECT, 15, 15)
    d = decide_remediation(
        T0 + 45, assessment(cause="movable"), STEPS, state, cfg, None, wall=T0 + 45
    )
    assert d.step is None and d.state.climbed


RECLAIMABLE = (
    Step(ActionKind.DROP_CACHES, 2, "slab"),
    Step(ActionKind.COMPACT, None, "compaction"),
)


def test_a_drop_that_recovers_is_finished_by_one_compaction_then_the_episode_ends() -> None:
    d = decide_remediation(
        T0, assessment(cause="reclaimable"), RECLAIMABLE, RemedyState(), ON, None, wall=T0
    )
    assert d.step is not None and d.step.name == "drop-caches=2"
    state = after_action(d.state, d.step, T0, ActionOutcome.OK, 5, 780)
    # recovered: the ladder is () for a healthy node, the kept compaction still runs, once
    d = decide_remediation(T0 + 15, assessment("healthy"), (), state, ON, None, wall=T0 + 15)
    assert d.step is not None and d.step.name == "compact"
    assert "recovered after drop-caches=2" in d.why and "drops no page cache" in d.why
    state = after_action(d.state, d.step, T0 + 15, ActionOutcome.OK, 780, 1200)
    d = decide_remediation(T0 + 30, assessment("healthy"), (), state, ON, None, wall=T0 + 30)
    assert d.step is None and d.why == "not fragmented" and not d.state.in_episode
    assert [r.step for r in d.state.history] == ["drop-caches=2", "compact"]


def test_no_finish_when_compaction_already_ran_or_the_node_is_short_of_memory() -> None:
    # movable: compaction first, the drop after it; a drop that recovers needs no finish
    state = RemedyState()
    for i in range(2):
        d = decide_remediation(T0 + i, assessment(), STEPS, state, ON, None, wall=T0 + i)
        assert d.step is not None
        state = after_action(d.state, d.step, T0 + i, ActionOutcome.NO_EFFECT, 0, 0)
    assert state.tried == ("compact", "drop-caches=1")
    d = decide_remediation(T0 + 20, assessment("healthy"), (), state, ON, None, wall=T0 + 20)
    assert d.step is None and not d.state.in_episode
    # a drop that leaves the node exhausted: no compaction on top
    d = decide_remediation(
        T0, assessment(cause="reclaimable"), RECLAIMABLE, RemedyState(), ON, None, wall=T0
    )
    assert d.step is not None
    state = after_action(d.state, d.step, T0, ActionOutcome.OK, 5, 780)
    short = dataclasses.replace(assessment("healthy"), exhausted=True)
    d = decide_remediation(T0 + 15, short, (), state, ON, None, wall=T0 + 15)
    assert d.step is None and not d.state.in_episode


def test_the_finish_keeps_the_guards_and_is_not_retried() -> None:
    d = decide_remediation(
        T0, assessment(cause="reclaimable"), RECLAIMABLE, RemedyState(), ON, None, wall=T0
    )
    assert d.step is not None
    state = after_action(d.state, d.step, T0, ActionOutcome.OK, 5, 780)
    d = decide_remediation(
        T0 + 15, assessment("healthy"), (), state, ON, pressure(80.0), wall=T0 + 15
    )
    assert d.step is None and "not finishing with compact: memory pressure is high" in d.why
    assert not d.state.in_episode  # not now means not at all
    d = decide_remediation(T0 + 30, assessment("healthy"), (), d.state, ON, None, wall=T0 + 30)
    assert d.step is None
    off = dataclasses.replace(ON, mode="off")
    d = decide_remediation(T0 + 15, assessment("healthy"), (), state, off, None, wall=T0 + 15)
    assert d.step is None and d.why == "not fragmented"
