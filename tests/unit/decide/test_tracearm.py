"""When the per-allocation failure counter is armed (agent.decide.tracearm): the signs in a
tick's assessment and vmstat, the slow-path events that arm it between ticks, and the
hysteresis on a fake clock (arms at once, disarms only after a quiet spell, never flaps)."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

from agent.assess.verdict import Assessment, Verdict, assess
from agent.assess.vmrates import Rate, VmstatRates
from agent.config.model import Config, SourcesConfig
from agent.decide.tracearm import (
    DISARM_AFTER_SECONDS,
    MARGIN,
    ArmPolicy,
    ArmState,
    Risk,
    risks,
    step,
    triggers,
)
from agent.kernel.procfs import ProcReader
from agent.kernel.trace import DirectCompaction, Header, SlowPath, SlowPathKind
from tests.trace_fixtures import recorded

PROC = Path(__file__).resolve().parents[2] / "fixtures" / "proc"
AT_RISK_BELOW = Config().assessment.at_risk_below_blocks
HEAD = Header("python3", 7, 0, 1.0)


def assessed(fixture: str) -> Assessment:
    return assess(ProcReader(PROC / fixture, "/nonexistent").observe(), Config().assessment)


def with_blocks(a: Assessment, blocks: int) -> Assessment:
    numa = tuple(dataclasses.replace(n, blocks_at_target=blocks) for n in a.numa)
    return dataclasses.replace(a, numa=numa)


def vm(**per_minute: float) -> VmstatRates:
    return VmstatRates(15.0, 15.0, tuple(Rate(c, v) for c, v in per_minute.items()))


def test_the_policy_names_are_the_config_keys_values() -> None:
    hint = typing.get_type_hints(SourcesConfig)["tracing_alloc_failures"]
    assert set(typing.get_args(hint)) == {p.value for p in ArmPolicy}
    assert ArmPolicy(Config().sources.tracing_alloc_failures) is ArmPolicy.AT_RISK


def test_a_healthy_node_with_room_above_the_margin_shows_no_sign() -> None:
    healthy = assessed("vm-6.18-x86_64")
    assert healthy.verdict == Verdict.HEALTHY
    assert risks(healthy, None, AT_RISK_BELOW) == ()
    assert risks(healthy, vm(compact_stall=0.0, allocstall=40.0), AT_RISK_BELOW) == ()
    # free blocks just above the margin: still nothing; at it: few-blocks
    assert risks(with_blocks(healthy, MARGIN * AT_RISK_BELOW), None, AT_RISK_BELOW) == ()
    assert risks(with_blocks(healthy, MARGIN * AT_RISK_BELOW - 1), None, AT_RISK_BELOW) == (
        Risk.FEW_BLOCKS,
    )


def test_the_signs_of_a_tick() -> None:
    healthy = assessed("vm-6.18-x86_64")
    assert risks(None, None, AT_RISK_BELOW) == (Risk.UNASSESSED,)
    assert risks(assessed("seed-incident"), None, AT_RISK_BELOW)[:1] == (Risk.VERDICT,)
    assert Risk.EXHAUSTED in risks(
        dataclasses.replace(healthy, exhausted=True), None, AT_RISK_BELOW
    )
    assert risks(healthy, vm(compact_stall=4.0), AT_RISK_BELOW) == (Risk.COMPACTION,)
    assert risks(healthy, vm(compact_fail=4.0), AT_RISK_BELOW) == (Risk.COMPACTION,)
    assert risks(healthy, vm(thp_fault_fallback=8.0), AT_RISK_BELOW) == (Risk.THP_FALLBACK,)
    # a fallback for a cgroup's charge is not a failed allocation
    both = vm(thp_fault_fallback=8.0, thp_fault_fallback_charge=8.0)
    assert risks(healthy, both, AT_RISK_BELOW) == ()


def test_slow_path_events_at_the_order_trigger_and_below_it_do_not() -> None:
    events = recorded("slow-path.trace")
    assert {e.kind for e in events if isinstance(e, SlowPath)} == set(SlowPathKind)
    assert all(triggers(e, 9) for e in events)
    assert not any(triggers(e, 10) for e in events)
    assert not triggers(SlowPath(HEAD, SlowPathKind.WAKEUP_KSWAPD, 3), 4)
    assert triggers(DirectCompaction(HEAD, 4), 4)
    assert not triggers(DirectCompaction(HEAD, 2), 4)  # traced at every order, for the pairing
    alloc = next(e for e in recorded("hugetlb-exhausted-thp.trace") if not triggers(e, 0))
    assert not triggers(alloc, 0)


def test_arms_at_once_and_disarms_only_after_a_quiet_spell() -> None:
    s = step(ArmState(), 0.0, ArmPolicy.AT_RISK, ())
    assert s == ArmState()  # disarmed at rest
    s = step(s, 10.0, ArmPolicy.AT_RISK, (Risk.SLOW_PATH, Risk.FEW_BLOCKS))
    assert (s.armed, s.since, s.last_risk, s.why) == (True, 10.0, 10.0, Risk.SLOW_PATH)
    s = step(s, 25.0, ArmPolicy.AT_RISK, (Risk.FAILURES,))
    assert (s.armed, s.since, s.last_risk, s.why) == (True, 10.0, 25.0, Risk.SLOW_PATH)
    s = step(s, 25.0 + DISARM_AFTER_SECONDS - 1, ArmPolicy.AT_RISK, ())
    assert s.armed  # not yet
    s = step(s, 25.0 + DISARM_AFTER_SECONDS, ArmPolicy.AT_RISK, ())
    assert (s.armed, s.since, s.why) == (False, 25.0 + DISARM_AFTER_SECONDS, None)
    assert step(s, 5000.0, ArmPolicy.AT_RISK, ()) == s


def test_a_sign_every_few_minutes_keeps_it_armed_without_flapping() -> None:
    s, changes, t = ArmState(), 0, 0.0
    for i in range(200):  # a tick every 15 s; a sign every 5 minutes
        t = i * 15.0
        new = step(s, t, ArmPolicy.AT_RISK, (Risk.FEW_BLOCKS,) if i % 20 == 0 else ())
        changes += new.armed != s.armed
        s = new
    assert s.armed and changes == 1


def test_always_arms_from_the_start_and_never_disarms() -> None:
    s = step(ArmState(), 0.0, ArmPolicy.ALWAYS, ())
    assert (s.armed, s.why) == (True, Risk.ALWAYS)
    s = step(s, 10 * DISARM_AFTER_SECONDS, ArmPolicy.ALWAYS, ())
    assert s.armed and s.since == 0.0
    # a reload back to at-risk: disarmed once the node has been quiet long enough
    s = step(s, 11 * DISARM_AFTER_SECONDS, ArmPolicy.AT_RISK, ())
    assert not s.armed
