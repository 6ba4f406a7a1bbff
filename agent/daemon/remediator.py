"""Carry out a remediation step: under the node's lock (one agent pod remediates a node at a
time, the node's whole action history counted against the caps) and a slot of the cluster-wide
budget, when there is an API; run the kernel write, wait for the kernel to settle, observe once
more and measure. Also the vm tunables review at start."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager

from agent.assess.tracing import CompactionKind
from agent.assess.tunables import recommend
from agent.assess.verdict import Assessment, NodeState, Verdict
from agent.base.errors import MemfragError
from agent.config.model import Config, RemediationConfig
from agent.daemon.observer import Observer
from agent.decide.ladder import Step
from agent.decide.remediation import (
    ActionOutcome,
    PastAction,
    RemedyDecision,
    RemedyState,
    after_action,
    decide_remediation,
    merge_history,
)
from agent.decide.report import EventReason, EventSpec, EventType
from agent.kernel.observation import Observation
from agent.kernel.procfs import ProcReader
from agent.kernel.writes import ActionResult, run_step
from agent.kube.errors import ApiError
from agent.kube.leases import NodeRecord, Semaphore
from agent.kube.leases import NodeState as RecordState

log = logging.getLogger("memfrag.agent")
SETTLE_SECONDS = 1.0
Failed = Callable[[str, ApiError], None]
Runner = Callable[[Step, ProcReader, float], ActionResult]
Redecide = Callable[[RemedyState], RemedyDecision]  # the tick's decision, with the record's history
# Traced compaction seconds by kind between two CLOCK_MONOTONIC times (Tracing.compaction_during)
CompactionDuring = Callable[[float, float], Mapping[CompactionKind, float]]


def _run_step(step: Step, reader: ProcReader, timeout: float) -> ActionResult:
    return run_step(step, reader.proc, reader.sys, timeout)


def troubled(a: Assessment) -> frozenset[int]:
    """The NUMA nodes in trouble (all, if none is)."""
    nodes = [n.node for n in a.numa if n.state != NodeState.HEALTHY] or [n.node for n in a.numa]
    return frozenset(nodes)


def blocks(a: Assessment, nodes: frozenset[int] | None = None) -> int:
    """Free blocks at the target order on `nodes` (default: the NUMA nodes in trouble). An
    action's before and after are counted on the same nodes: once the troubled node recovers,
    "all nodes" would count the healthy one's blocks as gained (the lab's 2-node guest logged
    0 -> 6168 for a compaction of node 1 that reached 1982)."""
    nodes = troubled(a) if nodes is None else nodes
    return sum(n.blocks_at_target for n in a.numa if n.node in nodes)


@dataclasses.dataclass(frozen=True)
class Ran:
    """What carrying out a step came to. `result` None: the node's record said not now."""

    result: ActionOutcome | None
    state: RemedyState
    events: tuple[EventSpec, ...] = ()
    blocks_before: int = 0
    blocks_after: int = 0
    seconds: float | None = None  # of the kernel write, when one ran
    # traced compaction while it ran and settled, by kind; None: tracing off or nothing ran
    compaction: Mapping[CompactionKind, float] | None = None


def compaction_words(seconds: Mapping[CompactionKind, float]) -> str:
    """The action's traced compaction, for its Event: the node's total, then each kind's."""
    total = sum(seconds.values())
    parts = ", ".join(f"{k.value} {v:.3f}s" for k, v in seconds.items() if v > 0)
    return f"the node compacted {total:.3f}s meanwhile (traced" + (f": {parts})" if parts else ")")


class ClusterLock:
    """The node's lock (its record, shared by the node's agent pods) and the cluster-wide slots
    of remediation.max_concurrent_nodes."""

    def __init__(
        self,
        record: NodeRecord,
        slots: Semaphore,
        holder: str,
        failed: Failed,
        budget: Callable[[], AbstractContextManager[None]],
    ) -> None:
        """`budget`: the time budget each of take and give_back runs in (Kube.budget): the
        kernel write between them is no API call, and may take minutes."""
        self.record, self.slots, self.holder, self.failed = record, slots, holder, failed
        self.budget = budget

    def take(
        self,
        now: float,
        wall: float,
        step: Step,
        before: Assessment,
        steps: tuple[Step, ...],
        obs: Observation,
        remedy: RemedyState,
        cfg: RemediationConfig,
        redecide: Redecide | None = None,
    ) -> tuple[str | None, RemedyState, ActionOutcome | None]:
        """(the slot or None, the remedy state with the node's history, 'skipped' when another
        pod or the cluster's budget holds it, None when the node's record says not now).
        `redecide`: how the step was decided (default: the ladder's policy), asked again with
        the record's history."""
        with self.budget():
            try:
                record = self.record.lock(cfg.lease_seconds)
            except ApiError as exc:
                self.failed("lease", exc)
                return None, remedy, None
            if record is None:
                log.info("another agent pod on this node is remediating; waiting")
                return None, remedy, ActionOutcome.SKIPPED
            # The record may hold actions other pods ran since: decided again with them counted.
            remedy = merge_history(remedy, record.actions, self.holder, now, wall)
            rd = (
                redecide(remedy)
                if redecide is not None
                else decide_remediation(now, before, steps, remedy, cfg, obs.pressure, wall=wall)
            )
            remedy = rd.state
            slot: str | None = None
            skipped: ActionOutcome | None = None
            if rd.step != step:
                log.info(
                    "not running the step: the node's record says otherwise",
                    extra={"action": step.name, "why": rd.why},
                )
            else:
                try:
                    slot = self.slots.acquire(cfg.max_concurrent_nodes, cfg.lease_seconds)
                except ApiError as exc:
                    self.failed("lease", exc)
                if slot is None:
                    log.info(
                        "waiting for a remediation slot (as many nodes remediate already)",
                        extra={
                            "action": step.name,
                            "max_concurrent_nodes": cfg.max_concurrent_nodes,
                        },
                    )
                    skipped = ActionOutcome.SKIPPED
            if slot is None:
                try:
                    self.record.update(lambda s: s, unlock=True)
                except ApiError as exc:
                    self.failed("lease", exc)
            return slot, remedy, skipped

    def give_back(self, slot: str, done: PastAction) -> None:
        """Unlock the node with the action in its record; free the cluster slot."""

        def add(s: RecordState) -> RecordState:
            return dataclasses.replace(s, actions=(*s.actions, done))

        with self.budget():
            try:
                self.record.update(add, unlock=True)
            except ApiError as exc:
                self.failed("lease", exc)
            try:
                self.slots.release(slot)
            except ApiError as exc:
                self.failed("lease", exc)


class Remediator:
    def __init__(
        self,
        reader: ProcReader,
        observer: Observer,
        lock: ClusterLock | None,
        stop: threading.Event,
        monotonic: Callable[[], float],
        holder: str,
        runner: Runner = _run_step,
        settle: float = SETTLE_SECONDS,
        compaction: CompactionDuring | None = None,
    ) -> None:
        """`lock` None: no API (standalone), the host's own agent is the only one.
        `compaction`: the tracing part's measure of compaction over the action (None: off)."""
        self.reader, self.observer, self.lock, self.stop = reader, observer, lock, stop
        self.monotonic, self.holder, self.runner, self.settle = monotonic, holder, runner, settle
        self.compaction = compaction

    def carry_out(
        self,
        now: float,
        wall: float,
        step: Step,
        obs: Observation,
        before: Assessment,
        order: int,
        steps: tuple[Step, ...],
        remedy: RemedyState,
        cfg: Config,
        redecide: Redecide | None = None,
    ) -> Ran:
        rcfg = cfg.remediation
        if rcfg.mode == "dry-run":
            log.info(
                "dry-run: would run",
                extra={"action": step.name, "why": step.why, "result": ActionOutcome.DRY_RUN},
            )
            ev = EventSpec(
                EventType.NORMAL,
                EventReason.REMEDIATION_DRY_RUN,
                f"Would run {step.name}: {step.why} (remediation.mode dry-run)",
            )
            done = after_action(remedy, step, now, ActionOutcome.DRY_RUN, 0, 0)
            return Ran(ActionOutcome.DRY_RUN, done, (ev,))
        slot: str | None = None
        if self.lock is not None:
            slot, remedy, skipped = self.lock.take(
                now, wall, step, before, steps, obs, remedy, rcfg, redecide
            )
            if slot is None:
                return Ran(skipped, remedy)
        ran = Ran(ActionOutcome.FAILED, remedy)
        try:
            ran = self._run(now, step, obs, before, order, remedy, cfg)
        finally:
            if self.lock is not None and slot is not None:
                assert ran.result is not None
                self.lock.give_back(slot, PastAction(step.name, wall, ran.result, self.holder))
        return ran

    def _run(
        self,
        now: float,
        step: Step,
        obs: Observation,
        before: Assessment,
        order: int,
        remedy: RemedyState,
        cfg: Config,
    ) -> Ran:
        cached_before = (obs.meminfo or {}).get("Cached", 0)
        # Said before the write: if the kernel stalls the node, the log shows what was running.
        log.info("remediation starting", extra={"action": step.name, "why": step.why})
        # The trace clock is CLOCK_MONOTONIC, not the (injectable) tick clock.
        began = time.monotonic()
        res = self.runner(step, self.reader, cfg.remediation.action_timeout_seconds)
        # The write returns when the kernel is done, but kswapd/kcompactd may still be merging
        # what it set in motion: measure a moment later to count the action's whole effect.
        self.stop.wait(self.settle)
        compacted = None if self.compaction is None else self.compaction(began, time.monotonic())
        where = troubled(before)
        b0 = blocks(before, where)
        try:  # one observation after: the blocks, the verdict and the page cache
            after_obs, after = self.observer.observe(self.monotonic(), cfg, order, urgent=True)
            b1, recovered = blocks(after, where), after.verdict != Verdict.FRAGMENTED
            cached_after = (after_obs.meminfo or {}).get("Cached", 0)
        except MemfragError:
            b1, recovered, cached_after = b0, False, cached_before
        dropped = max(0, cached_before - cached_after) // 1024
        result = (
            (ActionOutcome.TIMEOUT if res.timed_out else ActionOutcome.FAILED)
            if not res.ok
            else (ActionOutcome.OK if b1 > b0 else ActionOutcome.NO_EFFECT)
        )
        early = before.verdict != Verdict.FRAGMENTED  # on a prediction: nothing to recover
        detail = (
            f"{step.name}: order>={order} blocks {b0} -> {b1} in {res.seconds:.1f}s, "
            f"page cache dropped {dropped} MiB"
            + (", ahead of the predicted fragmentation" if early else "")
            + ("" if early else ", recovered" if recovered else ", still fragmented")
            + (f"; {res.error}" if res.error else "")
            + (f"; {compaction_words(compacted)}" if compacted is not None else "")
        )
        log.info(
            "remediation done",
            extra={
                "action": step.name,
                "result": result,
                "blocks_before": b0,
                "blocks_after": b1,
                "seconds": round(res.seconds, 3),
                "cache_dropped_mib": dropped,
                "recovered": recovered,
                "error": res.error,
                "compaction_seconds": None
                if compacted is None
                else {k.value: round(v, 4) for k, v in compacted.items()},
            },
        )
        reason = {
            ActionOutcome.OK: EventReason.REMEDIATION_SUCCEEDED,
            ActionOutcome.NO_EFFECT: EventReason.REMEDIATION_NO_EFFECT,
        }.get(result, EventReason.REMEDIATION_FAILED)
        kind = EventType.NORMAL if result == ActionOutcome.OK else EventType.WARNING
        ev = EventSpec(kind, reason, detail)
        state = after_action(remedy, step, now, result, b0, b1)
        return Ran(result, state, (ev,), b0, b1, res.seconds, compacted)

    def review_tunables(self, obs: Observation, cfg: RemediationConfig) -> None:
        """Log what the vm tunables review recommends; with remediation.apply_tunables (and mode
        on) agent.daemon.tuner tries them one at a time, measured."""
        total = (obs.meminfo or {}).get("MemTotal")
        trying = cfg.apply_tunables and cfg.mode == "on"
        for r in recommend(obs.sysctl, total):
            log.info(
                "tunable recommended",
                extra={
                    "tunable": f"vm.{r.name}",
                    "current": r.current,
                    "recommended": r.recommended,
                    "why": r.why,
                    "to_be_tried": trying,  # measured, one at a time (agent.daemon.tuner)
                },
            )
