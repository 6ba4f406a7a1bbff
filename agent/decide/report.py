"""What the Node should say, decided as a pure function of the assessment, the node as last
seen, the agent's small state, the config and the clock. The outer layer only carries it out.

Hysteresis: the condition turns True as soon as the node is fragmented, the taint follows once
the verdict has held for `fragmented_for_seconds`; both clear only after the node has been
healthy for `healthy_for_seconds`. An at-risk node neither sets nor clears them.

Two clocks: `now` is monotonic and times the holds and the heartbeat, so stepping the wall clock
neither stretches nor skips them; `wall` (UTC) only goes into the timestamps written to the API.

The taint is owned by key AND effect: a taint with our key and another effect is another tool's,
unless the node's record says the agent put it there (`owned`: a taint_effect changed since).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from enum import StrEnum

from agent.assess.verdict import Reason, Verdict
from agent.base.times import parse_rfc3339, rfc3339
from agent.config.model import ReportingConfig
from agent.decide.nodeview import (
    UNREMEDIABLE_TYPE,
    Condition,
    ConditionStatus,
    NodeView,
    taint_effects,
)
from agent.decide.summary import Summary, SummaryError, parse_summary


class TaintChange(StrEnum):
    ADD = "add"  # ours, with the configured effect only
    REMOVE = "remove"


TaintAction = TaintChange | None


class EventType(StrEnum):
    NORMAL = "Normal"
    WARNING = "Warning"


class EventReason(StrEnum):
    """Every Event the agent writes, by reason: defined once (alerts and runbooks name them)."""

    FRAGMENTATION_DETECTED = "FragmentationDetected"
    FRAGMENTATION_PREDICTED = "FragmentationPredicted"
    RECOVERED = "Recovered"
    ASSESSMENT_FAILED = "AssessmentFailed"
    NODE_TAINTED = "NodeTainted"
    TAINT_SKIPPED = "TaintSkipped"
    TAINT_REMOVED = "TaintRemoved"
    TAINT_CHANGED = "TaintChanged"
    HIGH_ORDER_ALLOCATION_FAILED = "HighOrderAllocationFailed"
    REMEDIATION_NOT_POSSIBLE = "RemediationNotPossible"
    REMEDIATION_DRY_RUN = "RemediationDryRun"
    REMEDIATION_SUCCEEDED = "RemediationSucceeded"
    REMEDIATION_NO_EFFECT = "RemediationNoEffect"
    REMEDIATION_FAILED = "RemediationFailed"
    STUCK_POD_DELETED = "StuckPodDeleted"
    CONFIG_INVALID = "ConfigInvalid"
    TRACING_FAILED = "TracingFailed"
    TUNABLE_TRIAL_STARTED = "TunableTrialStarted"
    TUNABLE_KEPT = "TunableKept"
    TUNABLE_ROLLED_BACK = "TunableRolledBack"
    UNMOVABLE_KERNEL_MEMORY = "UnmovableKernelMemory"  # on a pod, not the Node


@dataclass(frozen=True)
class PodRef:
    namespace: str
    name: str
    uid: str


@dataclass(frozen=True)
class EventSpec:
    type: EventType
    reason: EventReason
    message: str
    pod: PodRef | None = None  # the Event is about this pod (in its namespace), not the Node


@dataclass(frozen=True)
class ReportState:
    verdict: Verdict | None = None  # last raw verdict, UNKNOWN when the assessment failed
    verdict_since: float = 0.0  # monotonic
    written_at: float | None = None  # monotonic: our last condition write the API took


@dataclass(frozen=True)
class Outcome:
    """Observed facts for one decision. `verdict` 'unknown' means the assessment failed."""

    verdict: Verdict
    reason: Reason
    message: str


@dataclass(frozen=True)
class Escalation:
    """What the second condition (UNREMEDIABLE_TYPE) says: whether nothing the agent may do
    helps (agent.decide.cycle.escalation), with the reason and why in words."""

    status: ConditionStatus
    reason: Reason
    message: str


@dataclass(frozen=True)
class Decision:
    condition: Condition | None  # None: the node already says it; write nothing
    taint: TaintAction
    events: tuple[EventSpec, ...]
    state: ReportState
    # Written with `condition`, in the same PATCH (None: not reported this time).
    unremediable: Condition | None = None
    summary: str | None = None  # the summary annotation


def _words(message: str) -> str:
    """The message without its numbers, and without the unit a size is printed in: "169 MiB"
    becoming "204 KiB" is a number moving (3 of 6 writes in a 30-minute healthy window of
    `make bench` were only that)."""
    return re.sub(r"[0-9][0-9.,]*(?: [KMGT]iB\b)?", "#", message)


def initial_state(view: NodeView | None, now: float, *, wall: float) -> ReportState:
    """Resume from what the Node says instead of resetting it (node-problem-detector resets its
    conditions on restart and leaves a gap): a True condition's transition time is when the
    fragmentation began, so a restarted agent keeps the hysteresis clock (by its age in wall
    time, never negative, placed on the monotonic clock)."""
    if view is None or view.condition is None or view.condition.status != ConditionStatus.TRUE:
        return ReportState()
    since = parse_rfc3339(view.condition.last_transition)
    age = 0.0 if since is None else max(0.0, wall - since)
    return ReportState(verdict=Verdict.FRAGMENTED, verdict_since=now - age)


def decide(
    now: float,
    outcome: Outcome,
    state: ReportState,
    view: NodeView,
    cfg: ReportingConfig,
    may_taint: bool = True,
    *,
    wall: float,
    owned: frozenset[str] = frozenset(),
    escalation: Escalation | None = None,
    summary: Summary | None = None,
) -> Decision:
    """`owned`: taint effects the agent may have put on the node besides the configured one.
    `escalation` and `summary` ride on the condition's write; a change in their words is a
    change too (the numbers wait for the heartbeat)."""
    if outcome.verdict != state.verdict:
        state = replace(state, verdict=outcome.verdict, verdict_since=now)
    held = now - state.verdict_since
    cur = view.condition
    cur_status = cur.status if cur else None
    events: list[EventSpec] = []

    reason: str = outcome.reason  # or the reason the node already shows, while recovering
    message = outcome.message
    # Still tainted after a failed read: recovering all the same, so the hold applies.
    effect = cfg.taint_effect
    mine = taint_effects(view.taints, cfg.taint_key) & (owned | {effect} - {"none"})
    tainted = bool(mine)
    stale = bool(mine - {effect})  # taint_effect changed since we put ours on
    status: ConditionStatus
    if outcome.verdict == Verdict.FRAGMENTED:
        status = ConditionStatus.TRUE
    elif outcome.verdict == Verdict.UNKNOWN:
        status = ConditionStatus.UNKNOWN
    elif (
        cur_status == ConditionStatus.TRUE or (cur_status == ConditionStatus.UNKNOWN and tainted)
    ) and not (outcome.verdict == Verdict.HEALTHY and held >= cfg.healthy_for_seconds):
        # recovering, or at-risk after fragmentation: keep until healthy long enough
        status = ConditionStatus.TRUE
        reason = (
            cur.reason
            if cur and cur_status == ConditionStatus.TRUE
            else Reason.FREE_MEMORY_FRAGMENTED
        )
        healthy = outcome.verdict == Verdict.HEALTHY
        wait = max(0, int(cfg.healthy_for_seconds - held)) if healthy else None
        message = (
            f"Recovering: healthy for {int(held)}s, clears after {int(cfg.healthy_for_seconds)}s "
            f"({wait}s left). {outcome.message}"
            if wait is not None
            else f"Still short of contiguous memory. {outcome.message}"
        )
    else:
        status = ConditionStatus.FALSE

    taint: TaintAction = None
    if effect != "none" and status == ConditionStatus.TRUE and stale:
        taint = TaintChange.ADD
        events.append(
            EventSpec(
                EventType.NORMAL,
                EventReason.TAINT_CHANGED,
                f"Changed {cfg.taint_key} to effect {effect} (reporting.taint_effect)",
            )
        )
    elif cfg.taint_effect != "none" and status == ConditionStatus.TRUE and not tainted:
        if outcome.verdict == Verdict.FRAGMENTED and held >= cfg.fragmented_for_seconds:
            if may_taint:
                taint = TaintChange.ADD
                events.append(
                    EventSpec(
                        EventType.WARNING,
                        EventReason.NODE_TAINTED,
                        f"Tainted {cfg.taint_key}:{cfg.taint_effect} after {int(held)}s "
                        "fragmented, so new pods go elsewhere",
                    )
                )
            else:
                events.append(
                    EventSpec(
                        EventType.WARNING,
                        EventReason.TAINT_SKIPPED,
                        "Fragmented, but tainting would pass the cluster's cap on tainted "
                        "nodes (reporting.max_tainted_percent): reporting only",
                    )
                )
    elif tainted and (status == ConditionStatus.FALSE or cfg.taint_effect == "none"):
        taint = TaintChange.REMOVE
        events.append(
            EventSpec(EventType.NORMAL, EventReason.TAINT_REMOVED, f"Removed {cfg.taint_key}")
        )

    if status != cur_status:
        if status == ConditionStatus.TRUE:
            detected = EventSpec(EventType.WARNING, EventReason.FRAGMENTATION_DETECTED, message)
            events.insert(0, detected)
        elif status == ConditionStatus.FALSE and cur_status == ConditionStatus.TRUE:
            events.insert(0, EventSpec(EventType.NORMAL, EventReason.RECOVERED, message))
        elif status == ConditionStatus.UNKNOWN:
            events.insert(0, EventSpec(EventType.WARNING, EventReason.ASSESSMENT_FAILED, message))

    transition = cur.last_transition if cur and cur_status == status else rfc3339(wall)
    if state.written_at is not None:
        heartbeat_due = now - state.written_at >= cfg.heartbeat_seconds
    else:  # first write since start: by the heartbeat's age; one from the future is due too
        age = wall - (parse_rfc3339(cur.last_heartbeat) or 0.0) if cur else 0.0
        heartbeat_due = cur is None or not 0 <= age < cfg.heartbeat_seconds
    # Rewrite when the words change (a new cause, remediation giving up, stuck pods), not when
    # only the numbers move: those wait for the heartbeat, to keep API writes low.
    changed = (
        cur is None
        or cur_status != status
        or cur.reason != reason
        or _words(cur.message) != _words(message)
    )
    changed = changed or _escalation_changed(view.unremediable, escalation)
    changed = changed or _summary_changed(view.summary, summary)
    condition = unremediable = None
    if changed or heartbeat_due:
        condition = Condition(status, reason, message, transition, rfc3339(wall))
        if escalation is not None:
            was = view.unremediable
            since = (
                was.last_transition
                if was is not None and was.status == escalation.status
                else rfc3339(wall)
            )
            unremediable = Condition(
                escalation.status,
                escalation.reason,
                escalation.message,
                since,
                rfc3339(wall),
                UNREMEDIABLE_TYPE,
            )
    text = summary.to_annotation() if summary is not None and condition is not None else None
    return Decision(condition, taint, tuple(events), state, unremediable, text)


def _escalation_changed(cur: Condition | None, e: Escalation | None) -> bool:
    if e is None:
        return False
    return (
        cur is None
        or cur.status != e.status
        or cur.reason != e.reason
        or _words(cur.message) != _words(e.message)
    )


def _summary_changed(cur: str | None, new: Summary | None) -> bool:
    if new is None:
        return False
    try:
        old = parse_summary(cur)
    except SummaryError:
        return True  # not ours (or garbled): ours replaces it
    return old is None or old.words() != new.words()
