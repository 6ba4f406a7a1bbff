"""One tick's decision, remediation and report together, as a pure function: what the Node
should say, whether to climb the remediation ladder, the Events, and whether to delete the stuck
pods. The daemon gathers the facts first (the findings, the observation and assessment, the
stuck pods, the node as last seen, whether a slot of the cluster's taint cap is held) and carries
out the decision after: `decide_report` runs once per tick."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from agent.assess.hugepages import PoolReadiness, TargetReadiness
from agent.assess.pinned import PinnedMemory
from agent.assess.predict import Prediction
from agent.assess.tracing import PodKernelMemory, Ranked, TraceSummary, span
from agent.assess.verdict import Assessment, CauseKind, Reason, Verdict
from agent.assess.vmrates import VmstatRates
from agent.config.model import AssessmentConfig, Config, ReportingConfig
from agent.decide.contiguity import LabelChange, label_change
from agent.decide.ladder import Step
from agent.decide.nodeview import ConditionStatus, NodeView, taint_effects
from agent.decide.remediation import RemedyDecision, RemedyState, decide_early, decide_remediation
from agent.decide.report import (
    Decision,
    Escalation,
    EventReason,
    EventSpec,
    EventType,
    Outcome,
    PodRef,
    ReportState,
    initial_state,
)
from agent.decide.report import decide as decide_report
from agent.decide.summary import summary_of
from agent.kernel.psi import Pressure

STUCK_SHOWN = 5  # pods named in the condition's message; the rest are counted
POLLUTERS_SHOWN = 3  # processes stealing pageblocks named when the cause is unmovable
WHERE_MAX = 80  # characters of a cgroup path in the message


@dataclass(frozen=True)
class Facts:
    now: float  # monotonic: every duration
    wall: float  # UTC: timestamps for the API, the maintenance window
    assessment: Assessment | None  # None: the node could not be assessed (`error` says why)
    error: str | None = None
    pressure: Pressure | None = None
    steps: tuple[Step, ...] = ()  # the remediation ladder for this assessment
    stuck: tuple[str, ...] = ()  # namespace/name of the pods stuck in ContainerCreating
    suppressed: int = 0  # allocation-failure reports the kernel suppressed lately
    suppressed_window: float = 600.0
    view: NodeView | None = None  # the Node as last seen; None: no API (standalone) or unknown
    may_taint: bool = True  # a slot of the cluster's cap on tainted nodes is held
    owned: frozenset[str] = frozenset()  # taint effects the node's record says are ours
    predictions: tuple[Prediction, ...] = ()  # NUMA nodes whose trend crosses the line soon
    hugepages: tuple[PoolReadiness, ...] = ()  # the pools as last read (pagetypeinfo cadence)
    targets: tuple[TargetReadiness, ...] = ()  # assessment.hugepage_targets against the pools
    traced: TraceSummary | None = None  # the tracing source's window; None: tracing off
    pods: Mapping[str, str] = field(default_factory=dict)  # pod UID -> namespace/name
    compactable: tuple[int, ...] = ()  # NUMA nodes with a per-node compact file
    vmstat: VmstatRates | None = None  # /proc/vmstat rates; None: fewer than two samples
    # the pods holding the most unmovable kernel memory (read only for an unmovable cause)
    kernel_pods: tuple[PodKernelMemory, ...] = ()
    # long-term pinned memory (read only while fragmented after a step ran: daemon.pinned)
    pinned: PinnedMemory | None = None


@dataclass(frozen=True)
class TickState:
    report: ReportState | None = None  # None: not resumed from the Node yet
    remedy: RemedyState = field(default_factory=RemedyState)
    said_not_possible: bool = False  # RemediationNotPossible goes out once per episode
    predicted_at: float | None = None  # monotonic: the last prediction of this episode
    said_traced: bool = False  # traced failures told in an Event, until the window is clear
    said_kernel_pods: bool = False  # the pods' Events went out this episode
    acted_early: tuple[int, ...] = ()  # NUMA nodes compacted on a prediction in this episode


@dataclass(frozen=True)
class TickDecision:
    outcome: Outcome
    run: Step | None  # the remediation step to run now
    why: str | None  # why that step, or why none (None: not assessed)
    report: Decision | None  # None: nothing to report to (no API, or the Node unknown yet)
    events: tuple[EventSpec, ...]
    delete_stuck: bool  # the node just recovered and stuck pods are to be recreated
    state: TickState
    early: bool = False  # `run` acts on a prediction (remediation.act_on_prediction)
    label: LabelChange | None = None  # the contiguity label to write (None: nothing)


def wants_taint_slot(
    now: float,
    verdict: Verdict,
    state: ReportState | None,
    view: NodeView,
    cfg: ReportingConfig,
    owned: frozenset[str],
) -> bool:
    """Whether the tick must hold a slot of the cluster's cap on tainted nodes, asked before
    deciding: our taint is on (the slot is renewed), or the verdict has been fragmented for
    reporting.fragmented_for_seconds (the taint may go on)."""
    if cfg.taint_effect == "none":
        return False
    if taint_effects(view.taints, cfg.taint_key) & (owned | {cfg.taint_effect}):
        return True
    since = state.verdict_since if state is not None and state.verdict == verdict else now
    return verdict == Verdict.FRAGMENTED and now - since >= cfg.fragmented_for_seconds


def predicting(f: Facts) -> tuple[Prediction, ...]:
    """The predictions the condition reports: none once the node is fragmented (it came true)
    or short of memory rather than contiguity (exhaustion is kubelet's MemoryPressure)."""
    a = f.assessment
    if a is None or a.verdict == Verdict.FRAGMENTED or a.exhausted:
        return ()
    return f.predictions


def prediction_message(predictions: tuple[Prediction, ...]) -> str:
    return "Fragmentation predicted: " + "; ".join(p.message() for p in predictions)


def stuck_pools(
    pools: tuple[PoolReadiness, ...], targets: tuple[TargetReadiness, ...] = ()
) -> tuple[str, ...]:
    """What the message says of the pools: each configured target the pool lacks and cannot
    grow to, and each pool with nr_overcommit_hugepages headroom (or a count asked for) that the
    free blocks cannot give; a pool nobody asked to grow is no news, and a size with a
    machine-wide target is told once, by its target."""
    told = {t.size_kib for t in targets if t.numa_node is None}
    out = [t.message for t in targets if t.can_grow is False]
    out += [
        p.message
        for p in pools
        if p.can_grow is False
        and (p.target is not None or (p.overcommit or 0))
        and p.size_kib not in told
    ]
    return tuple(out)


def thp_message(rate: float | None, cfg: AssessmentConfig) -> str | None:
    if rate is None or rate <= cfg.thp_fallback_high_per_minute:
        return None
    return (
        f"transparent huge page faults fell back to small pages {rate:.0f} times a minute "
        f"(above {cfg.thp_fallback_high_per_minute:g}: no free order-9 block at fault time)"
    )


def outcome_of(f: Facts, cfg: Config | None = None) -> Outcome:
    """What the node says, in words: the assessment (or its prediction), the hugepage pools that
    cannot grow, a high THP fallback rate, the stuck pods, the suppressed reports."""
    cfg = cfg or Config()
    a = f.assessment
    if a is not None:
        out = Outcome(a.verdict, a.reason, a.message)
        predicted = predicting(f)
        if predicted:
            out = Outcome(
                a.verdict,
                Reason.FRAGMENTATION_PREDICTED,
                f"{prediction_message(predicted)}. {a.message}",
            )
        for said in stuck_pools(f.hugepages, f.targets):
            out = replace(out, message=f"{out.message}; {said}")
        thp = thp_message(
            f.vmstat.per_minute("thp_fault_fallback") if f.vmstat is not None else None,
            cfg.assessment,
        )
        if thp is not None:
            out = replace(out, message=f"{out.message}; {thp}")
    else:
        out = Outcome(Verdict.UNKNOWN, Reason.ASSESSMENT_FAILED, f"Cannot assess: {f.error}")
    if f.stuck:
        n = len(f.stuck)
        shown = ", ".join(f.stuck[:STUCK_SHOWN]) + (
            f" and {n - STUCK_SHOWN} more" if n > STUCK_SHOWN else ""
        )
        out = replace(out, message=f"{out.message}; {n} pod(s) stuck in ContainerCreating: {shown}")
    if f.suppressed:
        out = replace(
            out,
            message=f"{out.message}; the kernel log suppressed {f.suppressed} more "
            f"allocation-failure report(s) in the last {f.suppressed_window / 60:.0f} min",
        )
    v = f.vmstat
    if v is not None and a is not None and a.verdict != Verdict.HEALTHY and v.words():
        out = replace(
            out, message=f"{out.message}; per minute over the last {span(v.window)}: {v.words()}"
        )
    t = f.traced
    if t is not None and t.failed:
        out = replace(out, message=f"{out.message}; {t.sentence()}")
    if t is not None and t.polluters and a is not None and a.cause.kind == CauseKind.UNMOVABLE:
        out = replace(out, message=f"{out.message}; {polluters(t, f.pods)}")
    if f.kernel_pods and a is not None and a.cause.kind == CauseKind.UNMOVABLE:
        out = replace(out, message=f"{out.message}; {kernel_pods(f.kernel_pods, f.pods)}")
    return out


def mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


def kernel_pods(top: tuple[PodKernelMemory, ...], pods: Mapping[str, str]) -> str:
    """The pods holding the most unmovable kernel memory, by name (UID when not known)."""
    names = ", ".join(f"{pods.get(p.pod_uid, p.pod_uid)} {mib(p.memory.total)}" for p in top)
    return f"unmovable kernel memory by pod: {names}"


def kernel_pod_events(top: tuple[PodKernelMemory, ...], pods: Mapping[str, str]) -> list[EventSpec]:
    """One Event on each named pod (a pod the informer does not know gets none: its namespace
    is where the Event must go)."""
    out = []
    for rank, p in enumerate(top, 1):
        where = pods.get(p.pod_uid)
        if where is None or "/" not in where:
            continue
        namespace, name = where.split("/", 1)
        parts = ", ".join(f"{k} {mib(v)}" for k, v in p.memory.parts if v)
        out.append(
            EventSpec(
                EventType.WARNING,
                EventReason.UNMOVABLE_KERNEL_MEMORY,
                f"This pod holds {mib(p.memory.total)} of unmovable kernel memory"
                + (f" ({parts})" if parts else "")
                + f", #{rank} on its node, whose memory is fragmented by unmovable kernel "
                "allocations: moving this pod (or what makes it allocate kernel memory: "
                "sockets, many small files, threads) frees contiguous memory that draining "
                "other pods would not",
                PodRef(namespace, name, p.pod_uid),
            )
        )
    return out


def _where(r: Ranked, pods: Mapping[str, str]) -> str:
    uid = r.who.pod_uid
    if uid is not None:
        return f"pod {pods.get(uid, uid)}"
    path = r.who.cgroup or "cgroup unknown"
    return path if len(path) <= WHERE_MAX else path[: WHERE_MAX - 3] + "..."


def polluters(t: TraceSummary, pods: Mapping[str, str]) -> str:
    """Who stole pageblocks in the window, the top few by name (their pod where they run in
    one), the rest counted."""
    shown = t.polluters[:POLLUTERS_SHOWN]
    rest = t.polluters_other + sum(r.count for r in t.polluters[POLLUTERS_SHOWN:])
    names = ", ".join(f"{r.who.comm[:16]} ({_where(r, pods)}): {r.count}" for r in shown)
    return f"pageblock steals in the last {span(t.seconds)} by {names}" + (
        f" and {rest} by others" if rest else ""
    )


def escalation(a: Assessment | None, rd: RemedyDecision | None, cfg: Config) -> Escalation:
    """Whether nothing the agent may do helps: fragmented, remediation on, and every step of the
    ladder ran in this episode without recovery (for an unmovable cause that is its one short
    attempt; the rest is a drain or a reboot). What a NodeHealthCheck escalates on: with
    remediation off or in dry-run the agent never tried, so it never says so."""
    if a is None or rd is None:
        return Escalation(
            ConditionStatus.UNKNOWN, Reason.ASSESSMENT_FAILED, "The node could not be assessed"
        )
    if a.verdict == Verdict.FRAGMENTED and cfg.remediation.mode == "on" and rd.state.climbed:
        return Escalation(
            ConditionStatus.TRUE,
            Reason.REMEDIATION_EXHAUSTED,
            f"Nothing the agent may do helps: {rd.why}",
        )
    why = (
        "not fragmented"
        if a.verdict != Verdict.FRAGMENTED
        else f"remediation is {cfg.remediation.mode}: the agent does not act"
        if cfg.remediation.mode != "on"
        # the why of each step (cooling down, outside the window) is MemoryFragmented's message:
        # said there, it would rewrite this condition at every turn of the ladder
        else "a remediation step is still to come (MemoryFragmented's message says which)"
    )
    return Escalation(
        ConditionStatus.FALSE, Reason.REMEDIATION_NOT_EXHAUSTED, why[:1].upper() + why[1:]
    )


def decide_tick(f: Facts, s: TickState, cfg: Config) -> TickDecision:
    outcome = outcome_of(f, cfg)
    a = f.assessment
    events: list[EventSpec] = []
    run: Step | None = None
    why: str | None = None
    remedy, said = s.remedy, s.said_not_possible
    rd: RemedyDecision | None = None
    predicted_at = s.predicted_at
    if predicting(f):
        if predicted_at is None:  # once per prediction episode, not per tick
            events.append(
                EventSpec(
                    EventType.WARNING,
                    EventReason.FRAGMENTATION_PREDICTED,
                    prediction_message(predicting(f)),
                )
            )
        predicted_at = f.now
    elif predicted_at is not None and (
        (a is not None and a.verdict == Verdict.FRAGMENTED)
        or f.now - predicted_at >= cfg.assessment.prediction_window_seconds
    ):
        # it came true, or a whole window without one: the next prediction is news again
        predicted_at = None
    acted_early = s.acted_early if predicted_at is not None else ()
    early = False
    if a is not None:
        rd = decide_remediation(
            f.now,
            a,
            f.steps,
            remedy,
            cfg.remediation,
            f.pressure,
            wall=f.wall,
            pinned=f.pinned,
            pods=f.pods,
        )
        remedy, run, why = rd.state, rd.step, rd.why
        if a.verdict == Verdict.FRAGMENTED and rd.step is None:
            outcome = replace(outcome, message=f"{outcome.message}. Remediation: {rd.why}")
            hopeless = a.cause.kind == CauseKind.UNMOVABLE or rd.state.pinned
            if hopeless and cfg.remediation.mode != "off" and not said:
                events.append(
                    EventSpec(EventType.WARNING, EventReason.REMEDIATION_NOT_POSSIBLE, rd.why)
                )
                said = True
        if a.verdict != Verdict.FRAGMENTED:
            said = False
        if run is None and predicting(f):
            ed = early_decision(f, remedy, acted_early, cfg)
            if ed.step is not None and ed.step.arg is not None:
                run, why, early = ed.step, ed.why, True
                acted_early = (*acted_early, ed.step.arg)
    said_pods = s.said_kernel_pods
    if a is None or a.verdict != Verdict.FRAGMENTED or a.cause.kind != CauseKind.UNMOVABLE:
        said_pods = False
    elif f.kernel_pods and not said_pods:
        pod_events = kernel_pod_events(f.kernel_pods, f.pods)
        events += pod_events
        said_pods = bool(pod_events)
    said_traced = s.said_traced
    if f.traced is not None:
        if f.traced.failed and not said_traced:
            events.append(
                EventSpec(
                    EventType.WARNING,
                    EventReason.HIGH_ORDER_ALLOCATION_FAILED,
                    f"traced: {f.traced.sentence()}",
                )
            )
        said_traced = f.traced.failed > 0
    report: Decision | None = None
    report_state = s.report
    recovered = False
    if f.view is not None:
        if report_state is None:
            report_state = initial_state(f.view, f.now, wall=f.wall)
        report = decide_report(
            f.now,
            outcome,
            report_state,
            f.view,
            cfg.reporting,
            f.may_taint,
            wall=f.wall,
            owned=f.owned,
            escalation=escalation(a, rd, cfg),
            summary=summary_of(a, len(f.stuck)) if a is not None else None,
        )
        report_state = report.state
        events += report.events
        was = f.view.condition.status if f.view.condition is not None else None
        recovered = (
            was == ConditionStatus.TRUE
            and report.condition is not None
            and report.condition.status == ConditionStatus.FALSE
        )
    return TickDecision(
        outcome=outcome,
        run=run,
        why=why,
        report=report,
        events=tuple(events),
        delete_stuck=recovered and cfg.remediation.delete_stuck_pods,
        state=TickState(
            report_state,
            remedy,
            said,
            predicted_at,
            said_traced,
            said_kernel_pods=said_pods,
            acted_early=acted_early,
        ),
        early=early,
        label=label_change(a, f.view, cfg.reporting.contiguity_label, cfg.assessment),
    )


def early_decision(
    f: Facts, remedy: RemedyState, acted: tuple[int, ...], cfg: Config
) -> RemedyDecision:
    """The act-early decision for this tick's predictions (the NUMA nodes not yet compacted in
    this prediction episode); the daemon asks it again under the node's lock."""
    nodes = tuple(p.node for p in predicting(f) if p.node not in acted)
    return decide_early(
        f.now, nodes, f.compactable, remedy, cfg.remediation, f.pressure, wall=f.wall
    )
