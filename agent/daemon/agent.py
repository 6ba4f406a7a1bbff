"""`memfrag-agent run`: observe → assess → decide → act and report, once per poll and at once
when the kernel log reports a high-order allocation failure.

This is the outer layer: it owns the threads (kernel log, watches, HTTP), the clocks and the API
writes. Every decision it carries out comes from a pure function (assess, reconcile.decide).

Clocks: durations (holds, cooldowns, dedupe, lease expiry) run on `monotonic`; `wall` only
stamps what goes to the API. API calls run after the assessment, in phases that each get a time
budget (Kube.budget): an API server that accepts connections and never answers delays a cycle
by a few seconds, never stops the assessing, and never trips /healthz.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import queue
import signal
import threading
import time
from collections.abc import Callable

from agent.assess.pods import concerns_node, owned_by_controller, sandbox_failures, stuck_pods
from agent.assess.tunables import recommend
from agent.assess.verdict import Assessment, CauseKind, NodeState, Reason, Verdict, assess
from agent.base.errors import MemfragError
from agent.config.reload import ConfigFile
from agent.daemon.metrics import Health, Metrics, order_label, serve
from agent.decide.ladder import Step, ladder
from agent.decide.nodeview import (
    NodeView,
    condition_patch,
    has_taint,
    node_view,
    taint_effects,
    taint_patch,
    with_taint,
    without_taint,
)
from agent.decide.remediation import (
    ActionOutcome,
    PastAction,
    RemedyDecision,
    RemedyState,
    after_action,
    decide_remediation,
    merge_history,
)
from agent.decide.report import (
    Decision,
    EventReason,
    EventSpec,
    EventType,
    Outcome,
    ReportState,
    TaintChange,
    decide,
    initial_state,
)
from agent.kernel.kmsg import Finding
from agent.kernel.kmsgfollow import KmsgFollower
from agent.kernel.observation import Observation
from agent.kernel.pagetypeinfo import PageTypeInfo
from agent.kernel.procfs import ProcReader
from agent.kernel.writes import run_step, write_tunable
from agent.kube.client import SMP, ApiError, Kube
from agent.kube.events import EventRecorder
from agent.kube.informer import Informer
from agent.kube.leases import NodeRecord, Semaphore, node_count, taint_slots
from agent.kube.leases import NodeState as RecordState

log = logging.getLogger("memfrag.agent")
FINDING_TTL = 600.0  # a finding keeps its order in the assessment this long
NOT_HEALTHY_PTI_INTERVAL = 30.0
SETTLE_SECONDS = 1.0
SANDBOX_WATCH_LINGER = 300.0  # keep the sandbox-Event watch this long after the last Pending pod
MIN_CYCLE_GAP = 1.0  # kernel-log findings trigger a cycle at once, but at most once a second
DEDUPE_SECONDS = 60.0  # the same finding again within this is counted, not re-announced
RESTART_KEYS = ("kmsg_enabled", "kmsg_path", "metrics_port", "metrics_address")
SANDBOX_EVENTS_MAX = 1000  # the node's own FailedCreatePodSandBox Events kept at most
OUTBOX_MAX = 100  # Events waiting for the API at most (a courtesy; the oldest go first)


class Agent:
    def __init__(
        self,
        node_name: str,
        kube: Kube,
        config: ConfigFile,
        reader: ProcReader,
        namespace: str = "memfrag-system",
        holder: str | None = None,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """`holder`: this pod's identity in Leases (pod name and UID; two pods of one node run
        at once during a rollout, so never the node name)."""
        self.node_name = node_name
        self.kube = kube
        self.config_file = config
        self.cfg = config.config
        self.reader = reader
        self.wall, self.monotonic = wall, monotonic
        self.holder = holder or f"{node_name}-pid{os.getpid()}"
        self.metrics = Metrics()
        kube.observer = lambda err: self.metrics.api_result(None if err is None else err.status)
        self.health = Health(max_age=3 * self.cfg.sources.poll_interval_seconds + 30)
        self.events = EventRecorder(kube, node_name, wall=wall, monotonic=monotonic)
        self.outbox: list[EventSpec] = []
        self.findings: queue.Queue[Finding] = queue.Queue(maxsize=10000)
        self.suppressed: collections.deque[tuple[float, int]] = collections.deque(maxlen=1024)
        self.recent: dict[tuple[str, int | None, str | None], float] = {}
        self.announced: dict[tuple[str, int | None, str | None], float] = {}
        self.stop_event = threading.Event()
        self.state: ReportState | None = None
        self.last_assessment: Assessment | None = None
        self.remedy = RemedyState()
        self._said_not_possible = False
        self.namespace = namespace
        # A taint slot counts a tainted node: the node's pods share it (owner), whichever wrote it.
        self.taint_sem = Semaphore(
            kube,
            namespace,
            "memfrag-taint",
            self.holder,
            owner=node_name,
            wall=wall,
            monotonic=monotonic,
        )
        self.remedy_sem = Semaphore(
            kube, namespace, "memfrag-remediation", self.holder, wall=wall, monotonic=monotonic
        )
        self.node_record = NodeRecord(
            kube, namespace, node_name, self.holder, wall=wall, monotonic=monotonic
        )
        self._effects: frozenset[str] | None = None  # taint effects the record says we put on
        self._taint_slot_renewed = -1e18
        self._pti: PageTypeInfo | None = None
        self._pti_at = -1e18
        self.node_inf = Informer(
            kube, "/api/v1/nodes", {"fieldSelector": f"metadata.name={node_name}"}, name="node"
        )
        # FailedCreatePodSandBox Events: the field selector cannot name the node, so this watch
        # is cluster-wide; it runs only while this node has Pending pods (see _stuck), lists in
        # pages and keeps only Events about this node's pods, at most SANDBOX_EVENTS_MAX.
        self.sandbox_inf: Informer | None = None
        self._last_pending = -1e18
        self.pod_inf = Informer(
            kube, "/api/v1/pods", {"fieldSelector": f"spec.nodeName={node_name}"}, name="pods"
        )

    # --- threads -------------------------------------------------------------------------------
    def _on_suppressed(self, n: int) -> None:
        """From the kmsg thread: failure reports the kernel did not print (deque.append is
        atomic; `cycle` copies, sums and prunes)."""
        self.metrics.kmsg_suppressed.inc(n)
        self.suppressed.append((self.monotonic(), n))

    def _on_finding(self, f: Finding) -> None:
        try:
            self.findings.put_nowait(f)
        except queue.Full:
            self.metrics.kmsg_lost.inc()

    def start(self) -> None:
        c = self.cfg
        self.http = serve(
            self.metrics, self.health, c.reporting.metrics_address, c.reporting.metrics_port
        )
        self.node_inf.start()
        self.pod_inf.start()
        if c.sources.kmsg_enabled:
            self.kmsg: KmsgFollower | None = KmsgFollower(
                c.sources.kmsg_path,
                self._on_finding,
                accept_user_facility=c.sources.accept_user_facility,
                on_lost=self.metrics.kmsg_lost.inc,
                on_reopen=self.metrics.kmsg_reopens.inc,
                on_ignored=self.metrics.kmsg_ignored.inc,
                on_suppressed=self._on_suppressed,
            )
            self.kmsg.start()
        else:
            self.kmsg = None

    def run(self) -> int:
        signal.signal(signal.SIGTERM, lambda *_: self.stop_event.set())
        signal.signal(signal.SIGINT, lambda *_: self.stop_event.set())
        self.start()
        log.info(
            "started",
            extra={"node": self.node_name, "poll_s": self.cfg.sources.poll_interval_seconds},
        )
        self.node_inf.synced.wait(10)
        try:
            self.review_tunables(self.reader.observe(with_pagetypeinfo=False))
        except MemfragError as exc:
            log.error("cannot review vm tunables: %s", exc)
        next_poll = last_cycle = 0.0
        batch: list[Finding] = []
        while not self.stop_event.is_set():
            timeout = max(0.0, next_poll - time.monotonic())
            try:
                batch.append(self.findings.get(timeout=min(timeout, 1.0)))
                while len(batch) < 10000:
                    batch.append(self.findings.get_nowait())
            except queue.Empty:
                pass
            now = time.monotonic()
            due = now >= next_poll or (batch and now - last_cycle >= MIN_CYCLE_GAP)
            if not due:
                continue  # a finding within a second of the last cycle waits for the next
            self.reload_config()
            self.cycle(batch)
            batch = []
            last_cycle = time.monotonic()
            next_poll = last_cycle + self.cfg.sources.poll_interval_seconds
        log.info("stopping (signal); the node keeps its condition and taint for the next start")
        self.http.shutdown()
        return 0

    # --- one cycle -----------------------------------------------------------------------------
    def reload_config(self) -> None:
        r = self.config_file.reload_if_changed()
        if not r.changed and r.error is None:
            return
        if r.error:
            log.error("config: %s", r.error)
            self.metrics.config_valid.set(0)
            self.metrics.config_reloads.labels("invalid").inc()
            self._emit(EventSpec(EventType.WARNING, EventReason.CONFIG_INVALID, r.error))
            return
        old, self.cfg = self.cfg, self.config_file.config
        self.health.max_age = 3 * self.cfg.sources.poll_interval_seconds + 30
        if self.kmsg is not None:
            self.kmsg.accept_user_facility = self.cfg.sources.accept_user_facility
        for section in ("sources", "reporting"):
            for key in RESTART_KEYS:
                a, b = getattr(old, section), getattr(self.cfg, section)
                if hasattr(a, key) and getattr(a, key) != getattr(b, key):
                    log.warning("config: %s.%s changes at the next restart", section, key)
        self.metrics.config_valid.set(1)
        self.metrics.config_reloads.labels("ok").inc()
        log.info("config reloaded from %s", self.config_file.path)

    def _order(self, now: float, batch: list[Finding]) -> int:
        for f in batch:
            self.recent[(f.kind, f.order, f.process)] = now
        self.recent = {k: t for k, t in self.recent.items() if now - t < FINDING_TTL}
        orders = [k[1] for k in self.recent if k[1] is not None]
        return max([self.cfg.assessment.target_order, *orders])

    def _observe_assess(
        self, now: float, order: int, urgent: bool
    ) -> tuple[Observation, Assessment]:
        prev = self.last_assessment
        interval = self.cfg.sources.pagetypeinfo_interval_seconds
        if urgent or (prev is not None and prev.verdict != Verdict.HEALTHY):
            interval = min(interval, NOT_HEALTHY_PTI_INTERVAL)
        want_pti = now - self._pti_at >= interval
        obs = self.reader.observe(with_pagetypeinfo=want_pti)
        if want_pti:
            self._pti, self._pti_at = obs.pagetype, now
        elif self._pti is not None:
            obs = dataclasses.replace(obs, pagetype=self._pti)
        return obs, assess(obs, self.cfg.assessment, order)

    def api_budget(self) -> float:
        """Seconds of API calls one phase of a cycle may take: enough for a slow API server,
        small against /healthz's 3 polls + 30 s, whatever the poll interval."""
        return min(10.0, max(5.0, self.cfg.sources.poll_interval_seconds / 2))

    def cycle(self, batch: list[Finding]) -> None:
        now, wall = self.monotonic(), self.wall()
        for f in batch:
            self.metrics.findings.labels(f.kind, order_label(f.order)).inc()
            key = (f.kind, f.order, f.process)
            if now - self.announced.get(key, -DEDUPE_SECONDS) < DEDUPE_SECONDS:
                continue  # counted; already logged and announced
            self.announced = {k: t for k, t in self.announced.items() if now - t < DEDUPE_SECONDS}
            self.announced[key] = now
            log.warning("kernel log finding", extra={"finding": f.to_json()})
            self._emit(
                EventSpec(
                    EventType.WARNING,
                    EventReason.HIGH_ORDER_ALLOCATION_FAILED,
                    f"kernel log: {f.kind.replace('_', ' ')}"
                    + (f", order {f.order}" if f.order is not None else "")
                    + (f", process {f.process}" if f.process else "")
                    + (f", mode {f.mode}" if f.mode else ""),
                )
            )
        order = self._order(now, batch)
        start = time.perf_counter()
        obs: Observation | None = None
        a: Assessment | None = None
        try:
            obs, a = self._observe_assess(now, order, urgent=bool(batch))
            outcome = Outcome(a.verdict, a.reason, a.message)
            self.metrics.record(a)
            self.last_assessment = a
            # Success means the node was assessed: a failed read must not look like a poll,
            # or an agent that cannot read /proc never trips its liveness probe.
            self.metrics.last_poll.set(wall)
            self.health.last_poll = time.monotonic()
        except MemfragError as exc:
            self.metrics.input_errors.inc()
            log.error("cannot assess: %s", exc)
            outcome = Outcome(Verdict.UNKNOWN, Reason.ASSESSMENT_FAILED, f"Cannot assess: {exc}")
            self.metrics.set_verdict(Verdict.UNKNOWN)
        self.metrics.assess_seconds.observe(time.perf_counter() - start)

        stuck = self._stuck(now, wall)
        self.metrics.stuck_pods.set(len(stuck))
        if stuck:
            shown = ", ".join(stuck[:5]) + (f" and {len(stuck) - 5} more" if len(stuck) > 5 else "")
            outcome = dataclasses.replace(
                outcome,
                message=f"{outcome.message}; {len(stuck)} pod(s) stuck in ContainerCreating: "
                f"{shown}",
            )
        while self.suppressed and now - self.suppressed[0][0] >= FINDING_TTL:
            self.suppressed.popleft()
        dropped = sum(n for _, n in list(self.suppressed))  # list(): one step, no mutation error
        if dropped:
            outcome = dataclasses.replace(
                outcome,
                message=f"{outcome.message}; the kernel log suppressed {dropped} more "
                f"allocation-failure report(s) in the last {FINDING_TTL / 60:.0f} min",
            )
        rd: RemedyDecision | None = None
        steps: tuple[Step, ...] = ()
        if a is not None and obs is not None:
            steps = ladder(
                a, self.reader.numa_nodes_with_compact(), self.cfg.remediation.allow_drop_caches
            )
            rd = decide_remediation(
                now, a, steps, self.remedy, self.cfg.remediation, obs.pressure, wall=wall
            )
            self.remedy = rd.state
            if a.verdict == Verdict.FRAGMENTED and rd.step is None:
                outcome = dataclasses.replace(
                    outcome, message=f"{outcome.message}. Remediation: {rd.why}"
                )
                if (
                    a.cause.kind == CauseKind.UNMOVABLE
                    and self.cfg.remediation.mode != "off"
                    and not self._said_not_possible
                ):
                    self._emit(
                        EventSpec(EventType.WARNING, EventReason.REMEDIATION_NOT_POSSIBLE, rd.why)
                    )
                    self._said_not_possible = True  # once per episode, not once per poll
            if a.verdict != Verdict.FRAGMENTED:
                self._said_not_possible = False
        with self.kube.budget(self.api_budget()):
            d = self.report(now, wall, outcome)
            if (
                d is not None
                and self.cfg.remediation.delete_stuck_pods
                and any(e.reason == EventReason.RECOVERED for e in d.events)
            ):
                self.delete_stuck_pods(now, wall)
            self._flush_events()
        if rd is not None and rd.step is not None and a is not None and obs is not None:
            self.remediate(now, wall, rd.step, a, order, steps, obs)

    # --- remediation ---------------------------------------------------------------------------
    def _blocks(self, a: Assessment) -> int:
        troubled = [n for n in a.numa if n.state != NodeState.HEALTHY] or list(a.numa)
        return sum(n.blocks_at_target for n in troubled)

    def remediate(
        self,
        now: float,
        wall: float,
        step: Step,
        before: Assessment,
        order: int,
        steps: tuple[Step, ...],
        obs: Observation,
    ) -> None:
        cfg = self.cfg.remediation
        if cfg.mode == "dry-run":
            log.info(
                "dry-run: would run %s",
                step.name,
                extra={"action": step.name, "why": step.why, "result": ActionOutcome.DRY_RUN},
            )
            self.metrics.actions.labels(step.name, ActionOutcome.DRY_RUN).inc()
            self._emit(
                EventSpec(
                    EventType.NORMAL,
                    EventReason.REMEDIATION_DRY_RUN,
                    f"Would run {step.name}: {step.why} (remediation.mode dry-run)",
                )
            )
            self.remedy = after_action(self.remedy, step, now, ActionOutcome.DRY_RUN, 0, 0)
            return
        with self.kube.budget(self.api_budget()):
            slot = self._lock_and_slot(now, wall, step, before, steps, obs)
        if slot is None:
            return
        result = ActionOutcome.FAILED
        try:
            result = self._run(now, step, before, order)
        finally:
            with self.kube.budget(self.api_budget()):
                self._unlock_and_release(slot, PastAction(step.name, wall, result, self.holder))
                self._flush_events()

    def _lock_and_slot(
        self,
        now: float,
        wall: float,
        step: Step,
        before: Assessment,
        steps: tuple[Step, ...],
        obs: Observation,
    ) -> str | None:
        """The node's lock (one agent pod remediates a node at a time, with the node's whole
        action history counted against the caps), then a slot of the cluster-wide budget."""
        cfg = self.cfg.remediation
        try:
            record = self.node_record.lock(cfg.lease_seconds)
        except ApiError as exc:
            self._api_failed("lease", exc)
            return None
        if record is None:
            log.info("another agent pod on this node is remediating; waiting")
            self.metrics.actions.labels(step.name, ActionOutcome.SKIPPED).inc()
            return None
        self.remedy = merge_history(self.remedy, record.actions, self.holder, now, wall)
        rd = decide_remediation(now, before, steps, self.remedy, cfg, obs.pressure, wall=wall)
        self.remedy = rd.state
        slot: str | None = None
        if rd.step != step:
            log.info("not running %s: %s (the node's record)", step.name, rd.why)
        else:
            try:
                slot = self.remedy_sem.acquire(cfg.max_concurrent_nodes, cfg.lease_seconds)
            except ApiError as exc:
                self._api_failed("lease", exc)
            if slot is None:
                log.info(
                    "waiting for a remediation slot (%d nodes remediating already)",
                    cfg.max_concurrent_nodes,
                )
                self.metrics.actions.labels(step.name, ActionOutcome.SKIPPED).inc()
        if slot is None:
            try:
                self.node_record.update(lambda s: s, unlock=True)
            except ApiError as exc:
                self._api_failed("lease", exc)
        return slot

    def _unlock_and_release(self, slot: str, done: PastAction) -> None:
        def add(s: RecordState) -> RecordState:
            return dataclasses.replace(s, actions=(*s.actions, done))

        try:
            self.node_record.update(add, unlock=True)
        except ApiError as exc:
            self._api_failed("lease", exc)
        try:
            self.remedy_sem.release(slot)
        except ApiError as exc:
            self._api_failed("lease", exc)

    def _run(self, now: float, step: Step, before: Assessment, order: int) -> ActionOutcome:
        cfg = self.cfg.remediation
        cached_before = self._cached_kb()
        # Said before the write: if the kernel stalls the node, the log shows what was running.
        log.info("remediation starting", extra={"action": step.name, "why": step.why})
        res = run_step(step, self.reader.proc, self.reader.sys, cfg.action_timeout_seconds)
        # The write returns when the kernel is done, but kswapd/kcompactd may still be merging
        # what it set in motion: measure a moment later to count the action's whole effect.
        self.stop_event.wait(SETTLE_SECONDS)
        b0 = self._blocks(before)
        try:
            _, after = self._observe_assess(self.monotonic(), order, urgent=True)
            b1 = self._blocks(after)
            recovered = after.verdict != Verdict.FRAGMENTED
        except MemfragError:
            b1, recovered = b0, False
        dropped = max(0, cached_before - self._cached_kb()) // 1024
        result = (
            (ActionOutcome.TIMEOUT if res.timed_out else ActionOutcome.FAILED)
            if not res.ok
            else (ActionOutcome.OK if b1 > b0 else ActionOutcome.NO_EFFECT)
        )
        self.metrics.actions.labels(step.name, result).inc()
        self.metrics.action_blocks_gained.set(b1 - b0)
        self.metrics.action_seconds.set(res.seconds)
        detail = (
            f"{step.name}: order>={order} blocks {b0} -> {b1} in {res.seconds:.1f}s, "
            f"page cache dropped {dropped} MiB"
            + (", recovered" if recovered else ", still fragmented")
            + (f"; {res.error}" if res.error else "")
        )
        log.info(
            "remediation %s",
            result,
            extra={
                "action": step.name,
                "result": result,
                "blocks_before": b0,
                "blocks_after": b1,
                "seconds": round(res.seconds, 3),
                "cache_dropped_mib": dropped,
                "recovered": recovered,
                "error": res.error,
            },
        )
        reason = {
            ActionOutcome.OK: EventReason.REMEDIATION_SUCCEEDED,
            ActionOutcome.NO_EFFECT: EventReason.REMEDIATION_NO_EFFECT,
        }.get(result, EventReason.REMEDIATION_FAILED)
        kind = EventType.NORMAL if result == ActionOutcome.OK else EventType.WARNING
        self._emit(EventSpec(kind, reason, detail))
        self.remedy = after_action(self.remedy, step, now, result, b0, b1)
        return result

    def _cached_kb(self) -> int:
        try:
            return self.reader.observe(with_pagetypeinfo=False).meminfo.get("Cached", 0)  # type: ignore[union-attr]
        except (MemfragError, AttributeError):
            return 0

    def _stuck(self, now: float, wall: float) -> list[str]:
        """Pod and Event timestamps come from the API: compared with `wall`. The watch's
        linger is a duration: `now`."""
        pods = self.pod_inf.items()
        if any((p.get("status") or {}).get("phase") == "Pending" for p in pods):
            self._last_pending = now
            if self.sandbox_inf is None:
                self.sandbox_inf = Informer(
                    self.kube,
                    "/api/v1/events",
                    {"fieldSelector": "reason=FailedCreatePodSandBox,involvedObject.kind=Pod"},
                    name="sandbox-events",
                    keep=lambda e: concerns_node(e, self.node_name, self.pod_inf.has),
                    max_items=SANDBOX_EVENTS_MAX,
                )
                self.sandbox_inf.start()
        elif self.sandbox_inf is not None and now - self._last_pending > SANDBOX_WATCH_LINGER:
            self.sandbox_inf.stop()
            self.sandbox_inf = None
        window = max(self.cfg.reporting.stuck_pod_seconds, 300.0)
        events = self.sandbox_inf.items() if self.sandbox_inf is not None else []
        failed = sandbox_failures(events, wall, window)
        return stuck_pods(pods, wall, self.cfg.reporting.stuck_pod_seconds, failed)

    def delete_stuck_pods(self, now: float, wall: float) -> None:
        pods = {
            f"{p['metadata'].get('namespace')}/{p['metadata'].get('name')}": p
            for p in self.pod_inf.items()
        }
        for key in self._stuck(now, wall):
            pod = pods.get(key)
            if pod is None or not owned_by_controller(pod):
                continue
            ns, name = key.split("/", 1)
            try:
                self.kube.request("DELETE", f"/api/v1/namespaces/{ns}/pods/{name}")
                self._emit(
                    EventSpec(
                        EventType.NORMAL,
                        EventReason.STUCK_POD_DELETED,
                        f"Deleted {key} (stuck in ContainerCreating) so its "
                        "controller recreates it on the recovered node",
                    )
                )
            except ApiError as exc:
                self._api_failed("pod-delete", exc)

    def review_tunables(self, obs: Observation) -> None:
        total = (obs.meminfo or {}).get("MemTotal")
        for r in recommend(obs.sysctl, total):
            if self.cfg.remediation.apply_tunables and self.cfg.remediation.mode == "on":
                err = write_tunable(self.reader.proc, r.name, r.recommended)
                log.info(
                    "tunable vm.%s %d -> %d: %s",
                    r.name,
                    r.current,
                    r.recommended,
                    err or "applied",
                    extra={"why": r.why},
                )
            else:
                log.info("recommend vm.%s=%d (now %d): %s", r.name, r.recommended, r.current, r.why)

    # --- acting on the API ---------------------------------------------------------------------
    def _emit(self, ev: EventSpec) -> None:
        """Queue an Event: they go out in the cycle's API phase, after the assessment."""
        self.outbox.append(ev)
        del self.outbox[:-OUTBOX_MAX]

    def _flush_events(self) -> None:
        while self.outbox:
            ev = self.outbox.pop(0)
            try:
                self.events.emit(ev)
            except ApiError as exc:
                self._api_failed("event", exc)

    def _api_failed(self, op: str, exc: ApiError) -> None:
        """Counted and logged; memfrag_api_up follows every request through Kube.observer."""
        self.metrics.api_errors.labels(op).inc()
        log.warning("API %s failed: %s", op, exc)

    def view(self) -> NodeView | None:
        node = self.node_inf.get(self.node_name)
        return node_view(node) if node is not None else None

    def owned_effects(self) -> frozenset[str]:
        """Taint effects the node's record says the agent put on (a taint_effect changed since,
        or reading it failed: then only the configured effect counts as ours, for now)."""
        if self._effects is None:
            try:
                self._effects = frozenset(self.node_record.read()[0].taint_effects)
            except ApiError as exc:
                self._api_failed("lease", exc)
                return frozenset()
        return self._effects

    def _record_effects(self, effects: set[str]) -> bool:
        """Write the taint effects the agent may have put on into the node's record: before a
        taint goes on (so a crash in between leaves it owned), after ours came off."""
        if self._effects == frozenset(effects):
            return True

        def put(s: RecordState) -> RecordState:
            return dataclasses.replace(s, taint_effects=tuple(sorted(effects)))

        try:
            self._effects = frozenset(self.node_record.update(put).taint_effects)
            return True
        except ApiError as exc:
            self._api_failed("lease", exc)
            return False

    def report(self, now: float, wall: float, outcome: Outcome) -> Decision | None:
        view = self.view()
        if view is None:
            log.warning("node %s not known yet (API unreachable or no such Node)", self.node_name)
            return None
        rep = self.cfg.reporting
        if self.state is None:
            self.state = initial_state(view, now, wall=wall)
        owned = self.owned_effects()
        d = decide(now, outcome, self.state, view, rep, wall=wall, owned=owned)
        if d.taint == TaintChange.ADD and not self._taint_slot(now):
            d = decide(now, outcome, self.state, view, rep, may_taint=False, wall=wall, owned=owned)
        self.state = d.state
        if d.condition is not None:
            try:
                node = self.kube.with_retries(
                    self.kube.request,
                    "PATCH",
                    f"/api/v1/nodes/{self.node_name}/status",
                    body=condition_patch(d.condition),
                    content_type=SMP,
                    attempts=3,
                )
                self.node_inf.offer(node)
                self.state = dataclasses.replace(self.state, written_at=now)
            except ApiError as exc:
                self._api_failed("condition", exc)
        if d.taint is not None:
            self.set_taint(d.taint == TaintChange.ADD)
            if d.taint == TaintChange.REMOVE:
                self._release_taint_slot()
        elif has_taint(view.taints, rep.taint_key, rep.taint_effect):
            self._taint_slot(now)  # renew our slot while the taint stays
        for ev in d.events:
            self._emit(ev)
        cur = self.view()
        self.metrics.condition.set(
            1 if cur and cur.condition and cur.condition.status == "True" else 0
        )
        self.metrics.tainted.set(
            1 if cur and has_taint(cur.taints, rep.taint_key, rep.taint_effect) else 0
        )
        return d

    def _taint_slot(self, now: float) -> bool:
        """A slot of the cluster-wide cap on tainted nodes (reporting.max_tainted_percent)."""
        duration = max(600.0, 4 * self.cfg.reporting.heartbeat_seconds)
        if now - self._taint_slot_renewed < duration / 4:
            return True
        try:
            slots = taint_slots(node_count(self.kube), self.cfg.reporting.max_tainted_percent)
            got = self.taint_sem.acquire(slots, duration) is not None
        except ApiError as exc:
            self._api_failed("lease", exc)
            return False
        if got:
            self._taint_slot_renewed = now
        return got

    def _release_taint_slot(self) -> None:
        self._taint_slot_renewed = -1e18
        try:
            held = self.taint_sem.held(1 << 20)
            if held is not None:
                self.taint_sem.release(held)
        except ApiError as exc:
            self._api_failed("lease", exc)

    def set_taint(self, present: bool) -> bool:
        """Read-modify-write of spec.taints with the resourceVersion as precondition; on 409
        re-read and retry. Ours is our key with an effect we own (the configured one, or one
        the node's record says we put on); every other taint is carried over untouched, our
        key with another tool's effect included."""
        rep = self.cfg.reporting
        effect = rep.taint_effect
        owned = self.owned_effects() | {effect} - {"none"}
        if present and not self._record_effects({*owned}):
            return False  # the record must name our taint before it goes on
        node = self.node_inf.get(self.node_name)
        for attempt in range(10):
            try:
                if node is None or attempt > 0:
                    node = self.kube.request("GET", f"/api/v1/nodes/{self.node_name}")
                v = node_view(node)
                mine = taint_effects(v.taints, rep.taint_key) & owned
                if mine == ({effect} if present else set()):
                    break
                taints = (
                    with_taint(v.taints, rep.taint_key, effect, "true", owned)
                    if present
                    else without_taint(v.taints, rep.taint_key, owned)
                )
                node = self.kube.request(
                    "PATCH",
                    f"/api/v1/nodes/{self.node_name}",
                    body=taint_patch(v.resource_version, taints),
                    content_type=SMP,
                )
                self.node_inf.offer(node)
                log.info("taint %s %s:%s", "set" if present else "removed", rep.taint_key, effect)
                break
            except ApiError as exc:
                if exc.status == 409:
                    continue
                self._api_failed("taint", exc)
                if not exc.retryable:
                    return False
                time.sleep(min(2.0, 0.1 * (attempt + 1)))
        else:
            return False
        self._record_effects({effect} if present else set())
        return True
