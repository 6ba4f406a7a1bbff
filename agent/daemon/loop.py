"""`memfrag-agent run`: the Agent composes the daemon's parts and runs one tick per poll, and at
once when the kernel log reports a high-order allocation failure. A tick runs one way:

    findings (inbox) → observe → assess (observer) → the facts from the API (stuck pods, the
    Node, the taint slot) → decide (agent.decide.cycle, pure, once) → carry out (reporter,
    stuck-pod deletion, remediator) → record metrics and send Events, once.

Without an API server (`kube` None: `run --standalone`, a plain Linux host) the same loop runs
with the kube parts absent: observe, assess and remediate on the same policy, metrics, /healthz
and structured logs (Events become log lines).

Clocks: durations (holds, cooldowns, dedupe, lease expiry) run on `monotonic`; `wall` only
stamps what goes to the API. API calls run in phases that each get a time budget (Kube.budget):
an API server that accepts connections and never answers delays a tick by a few seconds, never
stops the assessing, and never trips /healthz.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
import signal
import threading
import time
from collections.abc import Callable

from agent.assess.verdict import Assessment, Verdict
from agent.base.errors import MemfragError
from agent.config.model import Config
from agent.config.reload import ConfigFile
from agent.daemon.httpserver import BoundedHTTPServer
from agent.daemon.inbox import FINDING_TTL, Digest, Inbox
from agent.daemon.kernelmem import KernelMemoryPods
from agent.daemon.metrics import Health, Metrics, order_label, serve
from agent.daemon.observer import Observer
from agent.daemon.outlook import Outlook
from agent.daemon.pinned import PinnedWatch
from agent.daemon.remediator import ClusterLock, Ran, Remediator
from agent.daemon.reporter import Reporter, Shown
from agent.daemon.stuck import StuckPods
from agent.daemon.tracing import MakeSource, Tracing, pod_names, trace_source
from agent.daemon.tuner import MemoryStore, RecordStore, Store, Tuner
from agent.daemon.vmrates import VmRates
from agent.decide.contiguity import LABEL
from agent.decide.cycle import Facts, TickState, decide_tick, early_decision, wants_taint_slot
from agent.decide.ladder import Step, ladder
from agent.decide.remediation import RemedyDecision, RemedyState
from agent.decide.report import EventReason, EventSpec, EventType
from agent.decide.tracearm import ArmPolicy
from agent.kernel.cgroups import CgroupReader
from agent.kernel.kmsg import Finding
from agent.kernel.kmsgfollow import KmsgFollower
from agent.kernel.observation import Observation
from agent.kernel.pinscan import PinScanner
from agent.kernel.procfs import ProcReader
from agent.kube.api import Api
from agent.kube.errors import ApiError
from agent.kube.events import EventRecorder
from agent.kube.informer import Informer
from agent.kube.leases import NodeRecord, Semaphore

log = logging.getLogger("memfrag.agent")
MIN_CYCLE_GAP = 1.0  # kernel-log findings trigger a cycle at once, but at most once a second
RESTART_KEYS = ("kmsg_enabled", "kmsg_path", "tracing_enabled", "metrics_port", "metrics_address")
OUTBOX_MAX = 100  # Events waiting for the API at most (a courtesy; the oldest go first)


def zone_nodes(obs: Observation) -> dict[int, int]:
    """Each zone's start pfn -> its NUMA node (/proc/zoneinfo), how compaction events name one."""
    return {z.start_pfn: z.node for z in obs.zoneinfo or () if z.start_pfn is not None}


def finding_event(f: Finding) -> EventSpec:
    return EventSpec(
        EventType.WARNING,
        EventReason.HIGH_ORDER_ALLOCATION_FAILED,
        f"kernel log: {f.kind.replace('_', ' ')}"
        + (f", order {f.order}" if f.order is not None else "")
        + (f", process {f.process}" if f.process else "")
        + (f", mode {f.mode}" if f.mode else ""),
    )


class Agent:
    def __init__(
        self,
        node_name: str,
        kube: Api | None,
        config: ConfigFile,
        reader: ProcReader,
        namespace: str = "memfrag-system",
        holder: str | None = None,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        make_trace_source: MakeSource = trace_source,
        cgroup_root: str = "/sys/fs/cgroup",
    ) -> None:
        """`kube` None: standalone, no API server. `holder`: this pod's identity in Leases (pod
        name and UID; two pods of one node run at once during a rollout, so never the node
        name). Builds every part; `start` only starts the threads."""
        self.node_name = node_name
        self.kube = kube
        self.config_file = config
        self.cfg: Config = config.config
        self.reader = reader
        self.wall, self.monotonic = wall, monotonic
        self.holder = holder or f"{node_name}-pid{os.getpid()}"
        self.namespace = namespace
        self.metrics = Metrics()
        self.health = Health(max_age=3 * self.cfg.sources.poll_interval_seconds + 30)
        self.stop_event = threading.Event()
        self.http: BoundedHTTPServer | None = None
        self.inbox = Inbox(monotonic, on_lost=self.metrics.kmsg_lost.inc)
        self.observer = Observer(reader)
        self.outlook = Outlook(reader.sys, self.metrics)
        self.vmrates = VmRates(self.metrics.registry)
        cgroups = CgroupReader(cgroup_root, reader.proc)
        self.kernel_memory = KernelMemoryPods(cgroups)
        self.pinned = PinnedWatch(
            PinScanner(reader.proc, on_skip=lambda r: self.metrics.pin_skipped.labels(r).inc()),
            cgroups,
        )
        self.state = TickState()
        self.outbox: list[EventSpec] = []
        self._logged: tuple[Verdict, str, str | None] | None = None  # standalone: last said
        src = self.cfg.sources
        self.kmsg: KmsgFollower | None = (
            KmsgFollower(
                src.kmsg_path,
                self.inbox.put,
                accept_user_facility=src.accept_user_facility,
                on_lost=self.metrics.kmsg_lost.inc,
                on_reopen=self.metrics.kmsg_reopens.inc,
                on_ignored=self.metrics.kmsg_ignored.inc,
                on_suppressed=self._on_suppressed,
            )
            if src.kmsg_enabled
            else None
        )
        self.tracing: Tracing | None = (
            Tracing(
                self.metrics.registry,
                self.cfg.assessment.target_order,
                FINDING_TTL,
                monotonic,
                make_trace_source,
                ArmPolicy(src.tracing_alloc_failures),
            )
            if src.tracing_enabled
            else None
        )
        self.events: EventRecorder | None = None
        self.reporter: Reporter | None = None
        self.stuck: StuckPods | None = None
        lock: ClusterLock | None = None
        store: Store = MemoryStore()
        tunable_slots: Semaphore | None = None
        if kube is not None:
            kube.observer = lambda err: self.metrics.api_result(None if err is None else err.status)
            kube.on_request = lambda method: self.metrics.api_requests.labels(method).inc()
            self.events = EventRecorder(kube, node_name, wall=wall, monotonic=monotonic)
            record = NodeRecord(
                kube, namespace, node_name, self.holder, wall=wall, monotonic=monotonic
            )
            # A taint slot counts a tainted node: the node's pods share it (owner), whoever
            # wrote it.
            taint_sem = Semaphore(
                kube,
                namespace,
                "memfrag-taint",
                self.holder,
                owner=node_name,
                wall=wall,
                monotonic=monotonic,
            )
            remedy_sem = Semaphore(
                kube, namespace, "memfrag-remediation", self.holder, wall=wall, monotonic=monotonic
            )
            self.reporter = Reporter(kube, node_name, record, taint_sem, self._api_failed)
            self.stuck = StuckPods(kube, node_name, self._api_failed)
            lock = ClusterLock(record, remedy_sem, self.holder, self._api_failed, self._budget)
            store = RecordStore(record)
            # Tunable trials hold a slot for two windows: their own slots, the same budget.
            tunable_slots = Semaphore(
                kube, namespace, "memfrag-tunables", self.holder, wall=wall, monotonic=monotonic
            )
        self.tuner = Tuner(
            reader.proc,
            store,
            tunable_slots,
            self.holder,
            wall,
            self._api_failed,
            self._budget,
            lambda name, result: self.metrics.tunable_trials.labels(name, result).inc(),
        )
        self.remediator = Remediator(
            reader,
            self.observer,
            lock,
            self.stop_event,
            monotonic,
            self.holder,
            compaction=self.tracing.compaction_during if self.tracing is not None else None,
        )

    # --- threads -------------------------------------------------------------------------------
    def _on_suppressed(self, n: int) -> None:
        """From the kmsg thread: failure reports the kernel did not print."""
        self.metrics.kmsg_suppressed.inc(n)
        self.inbox.suppressed(n)

    def informers(self) -> list[Informer]:
        """The watches `start` starts (the sandbox-Event watch starts and stops by itself)."""
        parts = [p for p in (self.reporter, self.stuck) if p is not None]
        return [inf for p in parts for inf in p.informers()]

    def start(self) -> None:
        c = self.cfg
        self.http = serve(
            self.metrics, self.health, c.reporting.metrics_address, c.reporting.metrics_port
        )
        for inf in self.informers():
            inf.start()
        if self.kmsg is not None:
            self.kmsg.start()
        if self.tracing is not None:
            self.tracing.start(*self._trace_layout())

    def _trace_layout(self) -> tuple[int | None, dict[int, int]]:
        """The pageblock order for the steal filter (None: unreadable, every steal passes the
        kernel) and each zone's NUMA node for the compaction series."""
        try:
            obs = self.reader.observe(with_pagetypeinfo=True)
        except MemfragError as exc:
            log.warning(
                "tracing: no pageblock order: every steal is traced", extra={"error": str(exc)}
            )
            return None, {}
        pti = obs.pagetype
        return (pti.pageblock_order if pti is not None else None), zone_nodes(obs)

    def stop(self) -> None:
        """What `run` releases on its way out: a tunable trial (its original value back), the
        HTTP server and our trace instance."""
        with self._budget():
            for ev in self.tuner.stop():
                self._emit(ev)
            self._flush_events()
        if self.tracing is not None:
            self.tracing.stop()
        if self.http is not None:
            self.http.shutdown()
        self.inbox.close()

    def request_stop(self) -> None:
        """Make `run` return: from a signal handler or another thread (the loop sleeps until
        the next poll; this wakes it)."""
        self.stop_event.set()
        self.inbox.wake()

    def run(self) -> int:
        signal.signal(signal.SIGTERM, lambda *_: self.request_stop())
        signal.signal(signal.SIGINT, lambda *_: self.request_stop())
        if self.http is None:  # `run` starts it first, to tell a start-up failure as such
            self.start()
        try:
            return self._run()
        finally:
            self.stop()

    def _run(self) -> int:
        log.info(
            "started",
            extra={
                "node": self.node_name,
                "poll_s": self.cfg.sources.poll_interval_seconds,
                "standalone": self.kube is None,
            },
        )
        if self.reporter is not None:
            self.reporter.node_inf.synced.wait(10)
        try:
            obs = self.reader.observe(with_pagetypeinfo=False)
            self.remediator.review_tunables(obs, self.cfg.remediation)
        except MemfragError as exc:
            log.error("cannot review vm tunables", extra={"error": str(exc)})
        for ev in self.tuner.resume():
            self._emit(ev)
        next_poll = last_cycle = 0.0
        batch: list[Finding] = []
        while not self.stop_event.is_set():
            wait = next_poll - time.monotonic()
            if batch:  # findings held back by MIN_CYCLE_GAP: wait for the gap, not the poll
                wait = min(wait, last_cycle + MIN_CYCLE_GAP - time.monotonic())
            self.inbox.take(max(0.0, wait), batch)
            now = time.monotonic()
            due = now >= next_poll or (batch and now - last_cycle >= MIN_CYCLE_GAP)
            if not due:
                continue  # a finding within a second of the last cycle waits for the next
            self.reload_config()
            self.cycle(batch)
            batch = []
            last_cycle = time.monotonic()
            next_poll = last_cycle + self.cfg.sources.poll_interval_seconds
        log.info(
            "stopping (signal)"
            if self.kube is None
            else "stopping (signal); the node keeps its condition and taint"
        )
        return 0

    # --- config ----------------------------------------------------------------------------------
    def reload_config(self) -> None:
        r = self.config_file.reload_if_changed()
        if not r.changed and r.error is None:
            return
        if r.error:
            log.error("config invalid: keeping the last good one", extra={"error": r.error})
            self.metrics.config_valid.set(0)
            self.metrics.config_reloads.labels("invalid").inc()
            self._emit(EventSpec(EventType.WARNING, EventReason.CONFIG_INVALID, r.error))
            return
        old, self.cfg = self.cfg, self.config_file.config
        self.health.max_age = 3 * self.cfg.sources.poll_interval_seconds + 30
        if self.kmsg is not None:
            self.kmsg.accept_user_facility = self.cfg.sources.accept_user_facility
        if self.tracing is not None:
            self.tracing.retarget(self.cfg.assessment.target_order)
        for section in ("sources", "reporting"):
            for key in RESTART_KEYS:
                a, b = getattr(old, section), getattr(self.cfg, section)
                if hasattr(a, key) and getattr(a, key) != getattr(b, key):
                    log.warning(
                        "config key changes at the next restart",
                        extra={"key": f"{section}.{key}"},
                    )
        self.metrics.config_valid.set(1)
        self.metrics.config_reloads.labels("ok").inc()
        log.info("config reloaded", extra={"path": self.config_file.path})

    def api_budget(self) -> float:
        """Seconds of API calls one phase of a tick may take: enough for a slow API server,
        small against /healthz's 3 polls + 30 s, whatever the poll interval."""
        return min(10.0, max(5.0, self.cfg.sources.poll_interval_seconds / 2))

    def _budget(self) -> contextlib.AbstractContextManager[None]:
        if self.kube is None:
            return contextlib.nullcontext()
        return self.kube.budget(self.api_budget())

    # --- one tick --------------------------------------------------------------------------------
    def cycle(self, batch: list[Finding]) -> None:
        cfg = self.cfg
        now, wall = self.monotonic(), self.wall()
        # 1. findings
        digest = self.inbox.digest(now, batch)
        for f in digest.announce:
            log.warning("kernel log finding", extra={"finding": f.to_json()})
        order = max([cfg.assessment.target_order, *digest.orders])
        # 2. observe and assess
        start = time.perf_counter()
        obs: Observation | None = None
        a: Assessment | None = None
        error: str | None = None
        try:
            obs, a = self.observer.observe(now, cfg, order, urgent=bool(batch))
        except MemfragError as exc:
            log.error("cannot assess", extra={"error": str(exc)})
            error = str(exc)
        assess_seconds = time.perf_counter() - start
        steps: tuple[Step, ...] = ()
        compactable = self.observer.numa_nodes_with_compact()  # a glob of /sys: once a tick
        if a is not None:
            steps = ladder(a, compactable, cfg.remediation.allow_drop_caches)
        huge = self.outlook.readiness(now, obs, cfg)
        # 3. the facts the API holds
        facts = Facts(
            now,
            wall,
            a,
            error,
            obs.pressure if obs is not None else None,
            steps,
            suppressed=digest.suppressed,
            suppressed_window=FINDING_TTL,
            predictions=self.outlook.predictions(now, a, cfg),
            hugepages=huge.pools if huge is not None else (),
            targets=self.outlook.targets if huge is not None else (),
            compactable=compactable,
            vmstat=self.vmrates.update(
                now, obs.vmstat if obs is not None else None, cfg.assessment.vmstat_window_seconds
            ),
        )
        kernel_pods = self.kernel_memory.top(now, a, cfg.reporting.kernel_memory_pods)
        pinned = self.pinned.read(a, obs.vmstat if obs is not None else None, self.state.remedy)
        if pinned is not None:
            self.metrics.pinned_bytes.set(pinned.pinned_bytes)
        facts = dataclasses.replace(facts, kernel_pods=kernel_pods, pinned=pinned)
        if self.tracing is not None:
            self.tracing.poll(now)
            self.tracing.arm_for(
                now,
                a,
                self.vmrates.recent(),
                cfg.assessment.at_risk_below_blocks,
                ArmPolicy(cfg.sources.tracing_alloc_failures),
            )
            traced = self.tracing.summary(now, zone_nodes(obs) if obs is not None else {})
            facts = dataclasses.replace(facts, traced=traced)
        pod_held = pinned is not None and any(h.pod_uid for h in pinned.holders)
        if (kernel_pods or pod_held or (facts.traced is not None and facts.traced.polluters)) and (
            self.stuck is not None
        ):
            facts = dataclasses.replace(facts, pods=pod_names(self.stuck.pods.items()))
        stuck: list[str] = []
        if self.stuck is not None:
            self.stuck.update_watch(now)
            stuck = self.stuck.stuck(wall, cfg.reporting.stuck_pod_seconds)
            facts = dataclasses.replace(facts, stuck=tuple(stuck))
        # The API phase: one time budget from the Node's facts to the Events, but for a
        # remediation (the kernel write is no API call; the lock has budgets of its own).
        with contextlib.ExitStack() as phase:
            phase.enter_context(self._budget())
            if self.reporter is not None:
                facts = self._node_facts(facts)
            # 4. decide, once
            d = decide_tick(facts, self.state, cfg)
            self.state = d.state
            if self.reporter is None:
                self._log_outcome(d.outcome.verdict, d.outcome.reason, d.outcome.message, d.why)
            events = [finding_event(f) for f in digest.announce] + list(d.events)
            if self.tracing is not None:
                events += self.tracing.events()
            # 5. carry out
            shown: Shown | None = None
            if self.reporter is not None and self.stuck is not None and d.report is not None:
                report = self.reporter.carry_out(now, d.report, cfg.reporting)
                self.state = dataclasses.replace(self.state, report=report)
                if d.delete_stuck:
                    events += self.stuck.delete(stuck)
                if d.label is not None:
                    self.reporter.set_label(LABEL, d.label.value)
                shown = self.reporter.shown(cfg.reporting)
            ran: Ran | None = None
            if d.run is not None and a is not None and obs is not None:
                phase.close()
                redecide = None
                if d.early:  # asked again as it was decided: on the prediction
                    acted = tuple(n for n in self.state.acted_early if n != d.run.arg)

                    def redecide(r: RemedyState) -> RemedyDecision:
                        return early_decision(facts, r, acted, cfg)

                ran = self.remediator.carry_out(
                    now, wall, d.run, obs, a, order, steps, self.state.remedy, cfg, redecide
                )
                self.state = dataclasses.replace(self.state, remedy=ran.state)
                events += ran.events
                phase.enter_context(self._budget())
            events += self.tuner.tick(now, a, obs, cfg, disturbed=ran is not None)
            # 6. record, once
            self._record(digest, a, len(stuck), shown, d.run, ran, assess_seconds, wall)
            for ev in events:
                self._emit(ev)
            self._flush_events()

    def _log_outcome(self, verdict: Verdict, reason: str, message: str, why: str | None) -> None:
        """Standalone, the log is the node's condition: a line when the verdict, the reason or
        the remediation's why changes (not when only the numbers move)."""
        key = (verdict, reason, None if why is None else re.sub(r"[0-9][0-9.,]*", "#", why))
        if key == self._logged:
            return
        self._logged = key
        log.info(
            "assessment changed",
            extra={"verdict": verdict, "reason": reason, "text": message, "remediation": why},
        )

    def _node_facts(self, facts: Facts) -> Facts:
        """The Node as last seen, the taint effects that are ours, and (when the tick may need
        it) a slot of the cluster's cap on tainted nodes: asked before deciding."""
        assert self.reporter is not None
        view = self.reporter.view()
        if view is None:
            log.warning(
                "node not known yet (API unreachable or no such Node)",
                extra={"node": self.node_name},
            )
            return facts
        owned = self.reporter.owned_effects()
        verdict = facts.assessment.verdict if facts.assessment is not None else Verdict.UNKNOWN
        rep = self.cfg.reporting
        may_taint = True
        if wants_taint_slot(facts.now, verdict, self.state.report, view, rep, owned):
            may_taint = self.reporter.taint_slot(facts.now, rep)
        return dataclasses.replace(facts, view=view, owned=owned, may_taint=may_taint)

    def _record(
        self,
        digest: Digest,
        a: Assessment | None,
        stuck: int,
        shown: Shown | None,
        step: Step | None,
        ran: Ran | None,
        assess_seconds: float,
        wall: float,
    ) -> None:
        m = self.metrics
        for f in digest.findings:
            m.findings.labels(f.kind, order_label(f.order)).inc()
        if a is not None:
            m.record(a)
            # Success means the node was assessed: a failed read must not look like a poll,
            # or an agent that cannot read /proc never trips its liveness probe.
            m.last_poll.set(wall)
            self.health.last_poll = time.monotonic()
        else:
            m.input_errors.inc()
            m.set_verdict(Verdict.UNKNOWN)
        m.assess_seconds.observe(assess_seconds)
        m.stuck_pods.set(stuck)
        if shown is not None:
            m.condition.set(1 if shown.condition_true else 0)
            m.tainted.set(1 if shown.tainted else 0)
        if step is not None and ran is not None and ran.result is not None:
            m.actions.labels(step.name, ran.result).inc()
            if ran.seconds is not None:
                m.action_blocks_gained.set(ran.blocks_after - ran.blocks_before)
                m.action_seconds.set(ran.seconds)
            if ran.compaction is not None and self.tracing is not None:
                self.tracing.record_action(ran.compaction)

    # --- Events ----------------------------------------------------------------------------------
    def _emit(self, ev: EventSpec) -> None:
        """Queue an Event: they go out at the end of the tick."""
        self.outbox.append(ev)
        del self.outbox[:-OUTBOX_MAX]

    def _flush_events(self) -> None:
        while self.outbox:
            ev = self.outbox.pop(0)
            if self.events is None:  # standalone: the log is the record
                level = logging.WARNING if ev.type == EventType.WARNING else logging.INFO
                log.log(
                    level,
                    "event",
                    extra={"event": {"type": ev.type, "reason": ev.reason, "message": ev.message}},
                )
                continue
            try:
                self.events.emit(ev)
            except ApiError as exc:
                self._api_failed("event", exc)

    def _api_failed(self, op: str, exc: ApiError) -> None:
        """Counted and logged; memfrag_api_up follows every request through Kube.observer."""
        self.metrics.api_errors.labels(op).inc()
        log.warning("API request failed", extra={"op": op, "error": str(exc)})
