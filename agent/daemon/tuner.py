"""Carry out the measured vm tunables (agent.decide.tunables decides): take and renew a slot of
the cluster's budget (a Semaphore, as remediation's, under its own prefix: a trial holds its slot
for two windows and must not starve remediation), keep the trial in the node's record before the
knob is written, write and read it back, put the original back on rollback, on stop and after a
crash.

Where the original lives: the node's record (its Lease), not a file under a state directory. The
record outlives the pod (a crash, an eviction, a rollout's new pod on the same node all find it),
is shared by the node's agent pods (a second pod sees the trial and restores it rather than
starting another), needs no hostPath mount, and is written with the resourceVersion
precondition the record already uses. A node reboot resets the knob to its boot value: a trial
found after one is rolled back only if the knob still reads the trial value. Standalone (no API)
the record is in memory: SIGTERM still restores, a kill -9 mid-trial leaves the trial value."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from agent.assess.tunables import KNOBS, Recommendation, recommend
from agent.assess.verdict import Assessment, Verdict
from agent.config.model import Config
from agent.decide.report import EventReason, EventSpec, EventType
from agent.decide.tunables import (
    Phase,
    Reading,
    TrialResult,
    TuneDecision,
    TuneKind,
    TunerState,
    decide_tuning,
    not_written,
)
from agent.kernel.observation import Observation
from agent.kernel.writes import read_tunable, set_tunable
from agent.kube.errors import ApiError
from agent.kube.leases import NodeRecord, NodeState, RecordedTrial, Semaphore

log = logging.getLogger("memfrag.agent")
Failed = Callable[[str, ApiError], None]
Budget = Callable[[], contextlib.AbstractContextManager[None]]


class Store(Protocol):
    def load(self) -> NodeState: ...
    def save(self, trial: RecordedTrial | None, tuned: tuple[tuple[str, str], ...]) -> None: ...


class RecordStore:
    """The node's record (a Lease): read-modify-write of its two tunable annotations."""

    def __init__(self, record: NodeRecord) -> None:
        self.record = record

    def load(self) -> NodeState:
        return self.record.read()[0]

    def save(self, trial: RecordedTrial | None, tuned: tuple[tuple[str, str], ...]) -> None:
        self.record.update(lambda s: dataclasses.replace(s, trial=trial, tuned=tuned))


class MemoryStore:
    def __init__(self) -> None:
        self.state = NodeState()

    def load(self) -> NodeState:
        return self.state

    def save(self, trial: RecordedTrial | None, tuned: tuple[tuple[str, str], ...]) -> None:
        self.state = dataclasses.replace(self.state, trial=trial, tuned=tuned)


def reading(
    now: float, a: Assessment | None, obs: Observation | None, order: int, disturbed: bool = False
) -> Reading | None:
    """This tick's numbers; None when the node was not assessed or the tick was raised to a
    kernel-log finding's order (its blocks count something else). `disturbed`: a remediation
    step ran this tick."""
    if a is None or obs is None or a.order != order:
        return None
    vm = obs.vmstat or {}
    return Reading(
        now,
        sum(n.blocks_at_target for n in a.numa),
        vm.get("compact_stall"),
        vm.get("pageoutrun"),
        a.verdict == Verdict.FRAGMENTED,
        disturbed,
    )


class Tuner:
    def __init__(
        self,
        proc: Path,
        store: Store,
        slots: Semaphore | None,
        holder: str,
        wall: Callable[[], float],
        failed: Failed,
        budget: Budget,
        ended: Callable[[str, TrialResult], None] = lambda name, result: None,
    ) -> None:
        """`ended`: told of every trial that ended (the metric)."""
        self.proc, self.store, self.slots, self.holder = proc, store, slots, holder
        self.wall, self.failed, self.budget, self.ended = wall, failed, budget, ended
        self.state = TunerState()
        self.slot: str | None = None

    # --- start and stop ------------------------------------------------------------------------
    def resume(self) -> list[EventSpec]:
        """The record's tried knobs, and a trial an earlier run left (a crash, or another pod):
        its original back if the knob still reads the trial value."""
        try:
            with self.budget():
                rec = self.store.load()
        except ApiError as exc:
            self.failed("lease", exc)
            return []
        done = tuple((n, TrialResult(r)) for n, r in rec.tuned if r in set(TrialResult))
        self.state = TunerState(done=done)
        t = rec.trial
        if t is None:
            return []
        now = read_tunable(self.proc, t.name)
        tuned = (*rec.tuned, (t.name, TrialResult.ROLLED_BACK.value))
        if now != t.value:
            log.info(
                "tunable trial found ended: dropped",
                extra={"tunable": f"vm.{t.name}", "current": now, "trial_value": t.value},
            )
            self._save(None, tuned)
            self.state = TunerState(done=(*done, (t.name, TrialResult.ROLLED_BACK)))
            return []
        err = set_tunable(self.proc, t.name, t.original)
        text = (
            f"vm.{t.name} {t.value} -> {t.original}: rolled back, the trial (by {t.by}) was "
            "interrupted" + (f"; {err}" if err else "")
        )
        log.warning("tunable trial rolled back", extra={"text": text})
        if err is None:
            self._save(None, tuned)
            self.state = TunerState(done=(*done, (t.name, TrialResult.ROLLED_BACK)))
        return [EventSpec(EventType.WARNING, EventReason.TUNABLE_ROLLED_BACK, text)]

    def stop(self) -> list[EventSpec]:
        """SIGTERM: a trial in progress is not judged; its original goes back."""
        t = self.state.trial
        events: list[EventSpec] = []
        if self.state.phase == Phase.TRIAL and t is not None:
            err = set_tunable(self.proc, t.name, t.original)
            text = f"vm.{t.name} {t.value} -> {t.original}: rolled back, the agent is stopping"
            text += f"; {err}" if err else ""
            log.info("tunable trial rolled back", extra={"text": text})
            events.append(EventSpec(EventType.NORMAL, EventReason.TUNABLE_ROLLED_BACK, text))
            if err is None:
                self._save(None, self._tuned(self.state.done))
        self.state = TunerState(done=self.state.done)
        self._release()
        return events

    # --- one tick ------------------------------------------------------------------------------
    def tick(
        self,
        now: float,
        a: Assessment | None,
        obs: Observation | None,
        cfg: Config,
        disturbed: bool = False,
    ) -> list[EventSpec]:
        r = reading(now, a, obs, cfg.assessment.target_order, disturbed)
        recs: tuple[Recommendation, ...] = ()
        if obs is not None:
            total = (obs.meminfo or {}).get("MemTotal")
            recs = tuple(x for x in recommend(obs.sysctl, total) if x.name in KNOBS)
        before = self.state
        d = decide_tuning(r, recs, before, cfg.remediation)
        return self._carry_out(d, before, cfg)

    def _carry_out(self, d: TuneDecision, before: TunerState, cfg: Config) -> list[EventSpec]:
        events = self._carry(d, before, cfg)
        for name, result in self.state.done[len(before.done) :]:
            self.ended(name, result)
        return events

    def _carry(self, d: TuneDecision, before: TunerState, cfg: Config) -> list[EventSpec]:
        act = d.action
        events = list(d.events)
        if act is None:
            self.state = d.state
            if d.state.phase != Phase.IDLE:
                self._renew(cfg)
            return events
        t = act.trial
        if act.kind == TuneKind.BEGIN:
            if not self._renew(cfg):
                log.info("tunable trial waits for a slot", extra={"tunable": f"vm.{t.name}"})
                return events  # state stays idle: asked again next tick
            log.info(
                "tunable trial: measuring the baseline first",
                extra={
                    "tunable": f"vm.{t.name}",
                    "seconds": cfg.remediation.tunables_trial_seconds,
                },
            )
            self.state = d.state
            return events
        if act.kind == TuneKind.WRITE:
            recorded = RecordedTrial(t.name, t.original, t.value, self.holder, self.wall())
            if not self._save(recorded, self._tuned(before.done)):
                return []  # the original is not safe in the record: do not write; try again
            err = set_tunable(self.proc, t.name, t.value)
            if err is not None:
                if read_tunable(self.proc, t.name) != t.original:
                    set_tunable(self.proc, t.name, t.original)
                nd = not_written(before, t, err)
                log.warning("tunable not written", extra={"text": nd.why})
                self.state = nd.state
                self._save(None, self._tuned(nd.state.done))
                self._release()
                return list(nd.events)
            log.info("tunable trial", extra={"text": d.why})
            self.state = d.state
            self._renew(cfg)
            return events
        if act.kind == TuneKind.ROLLBACK:
            err = set_tunable(self.proc, t.name, t.original)
            if err is not None:
                events.append(
                    EventSpec(
                        EventType.WARNING,
                        EventReason.TUNABLE_ROLLED_BACK,
                        f"vm.{t.name}: cannot put {t.original} back: {err}",
                    )
                )
        log.info("tunable trial ended", extra={"text": d.why, "action": act.kind})
        self.state = d.state
        if act.kind in (TuneKind.ROLLBACK, TuneKind.KEEP):
            self._save(None, self._tuned(d.state.done))
        self._release()
        return events

    # --- the record and the slot ---------------------------------------------------------------
    @staticmethod
    def _tuned(done: tuple[tuple[str, TrialResult], ...]) -> tuple[tuple[str, str], ...]:
        return tuple((n, r.value) for n, r in done)

    def _save(self, trial: RecordedTrial | None, tuned: tuple[tuple[str, str], ...]) -> bool:
        try:
            with self.budget():
                self.store.save(trial, tuned)
        except ApiError as exc:
            self.failed("lease", exc)
            return False
        return True

    def _renew(self, cfg: Config) -> bool:
        """Take or renew our slot; True when held (always, without an API)."""
        if self.slots is None:
            return True
        rc = cfg.remediation
        try:
            with self.budget():
                self.slot = self.slots.acquire(rc.max_concurrent_nodes, rc.lease_seconds)
        except ApiError as exc:
            self.failed("lease", exc)
            return self.slot is not None
        return self.slot is not None

    def _release(self) -> None:
        if self.slots is None or self.slot is None:
            return
        try:
            with self.budget():
                self.slots.release(self.slot)
        except ApiError as exc:
            self.failed("lease", exc)
        self.slot = None
