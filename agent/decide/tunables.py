"""Measured vm tunables (remediation.apply_tunables): one knob the review recommends at a time,
measured over a window before the change and as long after it, kept only if it helped, rolled
back otherwise. A pure state machine over one tick's reading; the daemon (agent.daemon.tuner)
writes the knob, holds the Lease slot and keeps the original value in the node's record.

    idle --begin (a slot)--> baseline --window--> trial (the knob written) --window--> idle
                                                        \\--fragmented, turned off: roll back

Helped, over equal windows: the free blocks at the target order (their mean) grew by 10 % or
more, or compaction stalls per minute fell by a quarter or more with the blocks not 10 % lower;
and neither stalls rose by more than 10 % (plus one a minute) nor kswapd runs tripled (plus one a
minute). A window in which the node fragmented measures the fragmentation, not the knob: the
baseline starts over, a trial is rolled back; one in which a remediation step ran (a compaction
moves every number) starts over, the knob as it is."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from enum import StrEnum

from agent.assess.tunables import Recommendation
from agent.assess.vmrates import rates
from agent.config.model import RemediationConfig
from agent.decide.report import EventReason, EventSpec, EventType

BLOCKS_GAIN = 0.10
STALLS_DROP = 0.25


class Phase(StrEnum):
    IDLE = "idle"
    BASELINE = "baseline"  # measuring before the change (the slot held)
    TRIAL = "trial"  # the knob at its new value, measuring


class TrialResult(StrEnum):
    KEPT = "kept"
    ROLLED_BACK = "rolled_back"
    FAILED = "failed"  # not written (read-only /proc/sys, the kernel refused the value)


class TuneKind(StrEnum):
    BEGIN = "begin"  # take a slot; nothing written yet
    WRITE = "write"  # the trial value (the node's record names the original first)
    ROLLBACK = "rollback"  # the original value back
    KEEP = "keep"  # nothing to write: the trial value stays
    ABANDON = "abandon"  # a baseline given up: free the slot


@dataclass(frozen=True)
class Reading:
    """One tick's numbers: the vmstat counters are None when the kernel has none."""

    at: float  # monotonic
    blocks: int  # free blocks at the target order, every NUMA node
    compact_stall: int | None
    kswapd_runs: int | None  # vmstat pageoutrun: kswapd's balancing runs
    fragmented: bool
    disturbed: bool = False  # a remediation step ran this tick: its effect is not the knob's


@dataclass(frozen=True)
class Effect:
    blocks: float  # mean over the window
    stalls_per_minute: float | None
    kswapd_per_minute: float | None

    def words(self) -> str:
        def rate(r: float | None) -> str:
            return "n/a" if r is None else f"{r:.1f}"

        return (
            f"blocks {self.blocks:.0f}, compact stalls {rate(self.stalls_per_minute)}/min, "
            f"kswapd runs {rate(self.kswapd_per_minute)}/min"
        )


@dataclass(frozen=True)
class Window:
    first: Reading
    last: Reading
    blocks_sum: int
    samples: int

    @property
    def seconds(self) -> float:
        return self.last.at - self.first.at

    def add(self, r: Reading) -> Window:
        return Window(self.first, r, self.blocks_sum + r.blocks, self.samples + 1)

    def effect(self) -> Effect:
        """The mean blocks, and the counters per minute between the window's ends (the vmstat
        rates' one rule: a counter that went down restarted)."""

        def counters(r: Reading) -> dict[str, int]:
            named = (("compact_stall", r.compact_stall), ("pageoutrun", r.kswapd_runs))
            return {k: v for k, v in named if v is not None}

        got = rates(
            ((self.first.at, counters(self.first)), (self.last.at, counters(self.last))), math.inf
        )
        return Effect(
            self.blocks_sum / max(1, self.samples),
            got.per_minute("compact_stall") if got is not None else None,
            got.per_minute("pageoutrun") if got is not None else None,
        )


def start(r: Reading) -> Window:
    return Window(r, r, r.blocks, 1)


@dataclass(frozen=True)
class Trial:
    name: str  # under /proc/sys/vm
    original: int
    value: int
    why: str


@dataclass(frozen=True)
class TunerState:
    phase: Phase = Phase.IDLE
    trial: Trial | None = None
    window: Window | None = None
    baseline: Effect | None = None
    done: tuple[tuple[str, TrialResult], ...] = ()  # knobs tried, never tried again


@dataclass(frozen=True)
class TuneAction:
    kind: TuneKind
    trial: Trial

    @property
    def value(self) -> int | None:
        """What to write, if anything."""
        if self.kind == TuneKind.WRITE:
            return self.trial.value
        return self.trial.original if self.kind == TuneKind.ROLLBACK else None


@dataclass(frozen=True)
class TuneDecision:
    state: TunerState
    action: TuneAction | None
    events: tuple[EventSpec, ...]
    why: str


def judge(before: Effect, after: Effect) -> tuple[bool, str]:
    """Whether the trial helped, and the numbers in words."""
    gain = (after.blocks - before.blocks) / max(1.0, before.blocks)
    s0, s1 = before.stalls_per_minute, after.stalls_per_minute
    k0, k1 = before.kswapd_per_minute, after.kswapd_per_minute
    stalls_fell = s0 is not None and s1 is not None and s0 > 0 and s1 <= s0 * (1 - STALLS_DROP)
    stalls_rose = s0 is not None and s1 is not None and s1 > s0 * 1.1 + 1
    kswapd_tripled = k0 is not None and k1 is not None and k1 > 3 * k0 + 1
    helped = (gain >= BLOCKS_GAIN or (stalls_fell and gain > -BLOCKS_GAIN)) and not (
        stalls_rose or kswapd_tripled
    )
    words = f"before: {before.words()}; after: {after.words()} (blocks {gain:+.0%})"
    return helped, words


def _event(kind: EventType, reason: EventReason, text: str) -> tuple[EventSpec, ...]:
    return (EventSpec(kind, reason, text),)


def decide_tuning(
    r: Reading | None,
    recs: tuple[Recommendation, ...],
    s: TunerState,
    cfg: RemediationConfig,
) -> TuneDecision:
    on = cfg.apply_tunables and cfg.mode == "on"
    t = s.trial
    if not on:
        if s.phase == Phase.TRIAL and t is not None:
            text = f"vm.{t.name} {t.value} -> {t.original}: rolled back, apply_tunables is off"
            return TuneDecision(
                TunerState(done=s.done),
                TuneAction(TuneKind.ROLLBACK, t),
                _event(EventType.NORMAL, EventReason.TUNABLE_ROLLED_BACK, text),
                text,
            )
        if s.phase == Phase.BASELINE and t is not None:
            return TuneDecision(
                TunerState(done=s.done), TuneAction(TuneKind.ABANDON, t), (), "turned off"
            )
        return TuneDecision(s, None, (), "measured tunables are off (remediation.apply_tunables)")
    if r is None:
        return TuneDecision(s, None, (), "no reading this tick")
    if s.phase == Phase.IDLE or t is None or s.window is None:
        tried = {name for name, _ in s.done}
        rec = next((x for x in recs if x.name not in tried), None)
        if rec is None:
            return TuneDecision(s, None, (), "no tunable left to try")
        if r.fragmented:
            return TuneDecision(s, None, (), "not while the node is fragmented")
        trial = Trial(rec.name, rec.current, rec.recommended, rec.why)
        state = replace(s, phase=Phase.BASELINE, trial=trial, window=start(r), baseline=None)
        return TuneDecision(
            state, TuneAction(TuneKind.BEGIN, trial), (), f"measuring before vm.{rec.name}"
        )
    if r.disturbed and s.phase in (Phase.BASELINE, Phase.TRIAL):
        return TuneDecision(
            replace(s, window=start(r)), None, (), "a remediation ran: the window starts over"
        )
    if s.phase == Phase.BASELINE:
        if r.fragmented:
            return TuneDecision(replace(s, window=start(r)), None, (), "baseline starts over")
        w = s.window.add(r)
        if w.seconds < cfg.tunables_trial_seconds:
            return TuneDecision(replace(s, window=w), None, (), "measuring the baseline")
        base = w.effect()
        text = (
            f"vm.{t.name} {t.original} -> {t.value} for {cfg.tunables_trial_seconds:g}s: {t.why} "
            f"(baseline: {base.words()})"
        )
        return TuneDecision(
            replace(s, phase=Phase.TRIAL, window=start(r), baseline=base),
            TuneAction(TuneKind.WRITE, t),
            _event(EventType.NORMAL, EventReason.TUNABLE_TRIAL_STARTED, text),
            text,
        )
    # the trial
    base = s.baseline or s.window.effect()
    if r.fragmented:
        text = (
            f"vm.{t.name} {t.value} -> {t.original}: rolled back, the node fragmented in the trial"
        )
        return TuneDecision(
            TunerState(done=(*s.done, (t.name, TrialResult.ROLLED_BACK))),
            TuneAction(TuneKind.ROLLBACK, t),
            _event(EventType.WARNING, EventReason.TUNABLE_ROLLED_BACK, text),
            text,
        )
    w = s.window.add(r)
    if w.seconds < cfg.tunables_trial_seconds:
        return TuneDecision(replace(s, window=w), None, (), f"trying vm.{t.name}={t.value}")
    helped, words = judge(base, w.effect())
    result = TrialResult.KEPT if helped else TrialResult.ROLLED_BACK
    done = TunerState(done=(*s.done, (t.name, result)))
    if helped:
        text = f"vm.{t.name}={t.value} kept (was {t.original}): it helped; {words}"
        return TuneDecision(
            done,
            TuneAction(TuneKind.KEEP, t),
            _event(EventType.NORMAL, EventReason.TUNABLE_KEPT, text),
            text,
        )
    text = f"vm.{t.name} {t.value} -> {t.original}: rolled back, it did not help; {words}"
    return TuneDecision(
        done,
        TuneAction(TuneKind.ROLLBACK, t),
        _event(EventType.NORMAL, EventReason.TUNABLE_ROLLED_BACK, text),
        text,
    )


def not_written(s: TunerState, t: Trial, error: str) -> TuneDecision:
    """The daemon could not write (or read back) the trial value: the knob is done, as failed."""
    text = f"vm.{t.name} not tried: {error}"
    return TuneDecision(
        TunerState(done=(*s.done, (t.name, TrialResult.FAILED))),
        None,
        _event(EventType.WARNING, EventReason.TUNABLE_ROLLED_BACK, text),
        text,
    )
