"""agent.decide.tunables: one knob at a time, measured before and after over equal windows on
a fake clock, kept only if it helped, rolled back otherwise (and when the node fragments or the
switch goes off mid-trial)."""

from __future__ import annotations

import dataclasses

from agent.assess.tunables import Recommendation
from agent.config.model import RemediationConfig
from agent.decide.report import EventReason
from agent.decide.tunables import (
    Effect,
    Phase,
    Reading,
    TrialResult,
    TuneKind,
    TunerState,
    decide_tuning,
    judge,
    not_written,
)

WINDOW = 600.0
CFG = dataclasses.replace(
    RemediationConfig(), mode="on", apply_tunables=True, tunables_trial_seconds=WINDOW
)
RECS = (
    Recommendation("watermark_scale_factor", 10, 100, "wider gaps"),
    Recommendation("compaction_proactiveness", 0, 20, "background compaction"),
)


def rd(t: float, blocks: int, stalls: int = 0, kswapd: int = 0, frag: bool = False) -> Reading:
    return Reading(t, blocks, stalls, kswapd, frag)


def drive(
    s: TunerState, start: float, blocks: int, stall_rate: float = 0.0, step: float = 60.0
) -> tuple[TunerState, list[TuneKind], list[EventReason]]:
    """Ticks a minute apart for a window at most, up to the first action; the actions and the
    Event reasons on the way."""
    kinds: list[TuneKind] = []
    reasons: list[EventReason] = []
    t = start
    while t <= start + WINDOW:
        d = decide_tuning(rd(t, blocks, int(stall_rate * t / 60)), RECS, s, CFG)
        s = d.state
        kinds += [d.action.kind] if d.action else []
        reasons += [e.reason for e in d.events]
        if d.action:
            break
        t += step
    return s, kinds, reasons


def test_off_by_default_and_nothing_to_try() -> None:
    d = decide_tuning(rd(0, 100), RECS, TunerState(), RemediationConfig())
    assert d.action is None and "off" in d.why
    d = decide_tuning(rd(0, 100), (), TunerState(), CFG)
    assert d.action is None and d.why == "no tunable left to try"


def test_a_knob_that_helps_is_kept_and_the_next_one_is_tried() -> None:
    d = decide_tuning(rd(0, 100), RECS, TunerState(), CFG)
    assert d.action is not None and d.action.kind == TuneKind.BEGIN
    assert d.state.phase == Phase.BASELINE and d.action.value is None  # nothing written yet
    s, kinds, reasons = drive(d.state, 60, blocks=100, stall_rate=10)
    assert kinds == [TuneKind.WRITE] and reasons == [EventReason.TUNABLE_TRIAL_STARTED]
    assert s.phase == Phase.TRIAL and s.trial is not None and s.trial.value == 100
    s, kinds, reasons = drive(s, 60 + WINDOW + 60, blocks=130, stall_rate=10)
    assert kinds == [TuneKind.KEEP] and reasons == [EventReason.TUNABLE_KEPT]
    assert s.done == (("watermark_scale_factor", TrialResult.KEPT),) and s.phase == Phase.IDLE
    nxt = decide_tuning(rd(5000, 130), RECS, s, CFG)
    assert nxt.action is not None and nxt.action.trial.name == "compaction_proactiveness"


def test_a_knob_that_does_not_help_is_rolled_back_to_the_original() -> None:
    s = decide_tuning(rd(0, 100), RECS, TunerState(), CFG).state
    s, _, _ = drive(s, 60, blocks=100, stall_rate=10)
    s2, kinds, reasons = drive(s, 60 + WINDOW + 60, blocks=101, stall_rate=10)
    assert kinds == [TuneKind.ROLLBACK] and reasons == [EventReason.TUNABLE_ROLLED_BACK]
    assert s2.done == (("watermark_scale_factor", TrialResult.ROLLED_BACK),)
    # the rollback writes the original value
    last = decide_tuning(rd(60 + 2 * WINDOW + 60, 101, 10 * 22), RECS, s, CFG)
    assert last.action is not None and last.action.value == 10
    assert "before: blocks 100" in last.why and "it did not help" in last.why


def test_fragmenting_in_the_trial_rolls_back_and_in_the_baseline_starts_over() -> None:
    s = decide_tuning(rd(0, 100), RECS, TunerState(), CFG).state
    again = decide_tuning(rd(300, 10, frag=True), RECS, s, CFG).state
    assert again.window is not None and again.window.first.at == 300  # the baseline restarts
    s, _, _ = drive(s, 60, blocks=100)
    d = decide_tuning(rd(WINDOW + 200, 10, frag=True), RECS, s, CFG)
    assert d.action is not None and d.action.kind == TuneKind.ROLLBACK
    assert "fragmented" in d.why and d.state.done[-1][1] == TrialResult.ROLLED_BACK
    # and a fragmented node starts no trial
    assert decide_tuning(rd(0, 10, frag=True), RECS, TunerState(), CFG).action is None


def test_turned_off_mid_trial_rolls_back_and_mid_baseline_abandons() -> None:
    s = decide_tuning(rd(0, 100), RECS, TunerState(), CFG).state
    off = dataclasses.replace(CFG, apply_tunables=False)
    d = decide_tuning(rd(60, 100), RECS, s, off)
    assert d.action is not None and d.action.kind == TuneKind.ABANDON
    s, _, _ = drive(s, 60, blocks=100)
    d = decide_tuning(rd(WINDOW + 200, 100), RECS, s, off)
    assert d.action is not None and d.action.kind == TuneKind.ROLLBACK and d.action.value == 10
    assert d.state.phase == Phase.IDLE and d.state.done == ()  # not judged: may be tried again


def test_a_value_that_cannot_be_written_is_not_tried_again() -> None:
    s = decide_tuning(rd(0, 100), RECS, TunerState(), CFG).state
    assert s.trial is not None
    d = not_written(s, s.trial, "not written: read-only file system")
    assert d.state.done == (("watermark_scale_factor", TrialResult.FAILED),)
    assert d.events[0].reason == EventReason.TUNABLE_ROLLED_BACK


def test_judge_blocks_stalls_and_kswapd() -> None:
    base = Effect(100, 10.0, 2.0)
    assert judge(base, Effect(111, 10.0, 2.0))[0]  # blocks +11 %
    assert not judge(base, Effect(105, 10.0, 2.0))[0]  # +5 %: noise
    assert judge(base, Effect(100, 7.0, 2.0))[0]  # stalls -30 %, blocks level
    assert not judge(base, Effect(85, 5.0, 2.0))[0]  # stalls fell but blocks -15 %
    assert not judge(base, Effect(130, 20.0, 2.0))[0]  # more blocks, twice the stalls
    assert not judge(base, Effect(130, 10.0, 9.0))[0]  # kswapd runs more than tripled
    assert judge(Effect(100, None, None), Effect(120, None, None))[0]  # no counters: blocks


def test_a_remediation_in_a_window_starts_it_over_without_judging() -> None:
    s = decide_tuning(rd(0, 100), RECS, TunerState(), CFG).state
    d = decide_tuning(dataclasses.replace(rd(300, 900), disturbed=True), RECS, s, CFG)
    assert d.action is None and d.state.window is not None and d.state.window.first.at == 300
    s, _, _ = drive(s, 60, blocks=100)
    assert s.phase == Phase.TRIAL
    d = decide_tuning(dataclasses.replace(rd(WINDOW + 200, 900), disturbed=True), RECS, s, CFG)
    assert d.action is None and d.state.phase == Phase.TRIAL  # the knob stays, measured anew
    assert d.state.window is not None and d.state.window.first.at == WINDOW + 200
