"""The daemon's tracing part (sources.tracing_enabled): starts the kernel room's TraceSource,
counts every traced failure into memfrag_traced_allocation_failures_total as it arrives, and
once a tick summarizes the window for the decision. Off, it does not exist: nothing changes.

A source that cannot start (no tracefs, a tracepoint missing, not root, or the instance still
read by the pod this one replaces in a rollout) is logged, counted and told once in an Event,
and the daemon goes on without it, trying again every RETRY_SECONDS; so is a reader that stops
later (the instance removed under us). The order traced is assessment.target_order: a reload
that changes it restarts the instance with the new in-kernel filter (`retarget`), so the window
starts again; the counters go on.

The per-allocation failure counter (kmem:mm_page_alloc) is armed and disarmed by
agent.decide.tracearm (sources.tracing_alloc_failures): each tick from the assessment and
vmstat, and at once from the reader's thread when a slow-path tracepoint fires at the order;
the state is memfrag_tracing_alloc_failures_armed and a log line when it changes.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from agent.assess.tracing import (
    CompactionKind,
    CompactionPairer,
    CompactionRun,
    TraceSummary,
    summarize,
)
from agent.assess.verdict import Assessment
from agent.assess.vmrates import VmstatRates
from agent.base.errors import MemfragError
from agent.config.model import HIGHEST_ORDER
from agent.daemon.metrics import order_label
from agent.decide.report import EventReason, EventSpec, EventType
from agent.decide.tracearm import ArmPolicy, ArmState, Risk, risks, step, triggers
from agent.kernel.trace import (
    CompactionBegin,
    CompactionEnd,
    DirectCompaction,
    PageAlloc,
    TraceEvent,
)
from agent.kernel.tracefollow import TraceSource, TraceWindow

log = logging.getLogger("memfrag.agent")
RETRY_SECONDS = 60.0  # a source that failed is started again this long after
# The kernel's compact_result names as mm_compaction_end prints them (include/trace/events/
# mmflags.h, COMPACTION_STATUS; "partial" and "failed" on older kernels); anything else: other.
RESULTS = (
    "success",
    "complete",
    "partial_skipped",
    "partial",
    "skipped",
    "deferred",
    "continue",
    "no_suitable_page",
    "not_suitable_zone",
    "contended",
    "failed",
    "other",
)
DURATION_BUCKETS = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0)
MAX_RUNS = 8192  # completed compactions kept for the remediation's measure (minutes of a storm)


class Source(Protocol):
    """What the part needs of a TraceSource (tests pass a fake)."""

    window: TraceWindow

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def arm(self, on: bool) -> None: ...


# min_order, window seconds, pageblock order, on_error, armed at start
MakeSource = Callable[[int, float, int | None, Callable[[str], None], bool], Source]


def trace_source(
    min_order: int,
    seconds: float,
    pageblock_order: int | None,
    on_error: Callable[[str], None],
    armed: bool,
) -> Source:
    return TraceSource(min_order, seconds, pageblock_order, on_error=on_error, armed=armed)


class CountingWindow(TraceWindow):
    """The source's window that also hands each event to `on_event` (the reader's thread)."""

    def __init__(self, like: TraceWindow, on_event: Callable[[TraceEvent], None]) -> None:
        super().__init__(like.seconds, like.resolve, like.events.maxlen or 1, like.clock)
        self.on_event = on_event

    def add(self, event: TraceEvent) -> None:
        super().add(event)
        self.on_event(event)


class Tracing:
    def __init__(
        self,
        registry: CollectorRegistry,
        min_order: int,
        window_seconds: float,
        monotonic: Callable[[], float],
        make: MakeSource = trace_source,
        policy: ArmPolicy = ArmPolicy.AT_RISK,
    ) -> None:
        self.min_order, self.window_seconds = min_order, window_seconds
        self.monotonic, self.make = monotonic, make
        self.policy = policy
        self.arming = ArmState()
        self._arm_lock = threading.Lock()  # the loop's tick and the reader's trigger
        self._signs = {Risk.SLOW_PATH: 0, Risk.FAILURES: 0}  # seen by the reader since the tick
        self.source: Source | None = None
        self.started_at: float | None = None
        self.pageblock_order: int | None = None
        self._retry_at = 0.0
        self._begun = False  # `start` was called (the daemon's start, not a reload)
        self._broken = False  # the reader thread stopped: the source is replaced
        self._error: str | None = None  # from the reader thread: told once by the loop
        self._told = False
        self._lock = threading.Lock()
        self.failures = Counter(
            "memfrag_traced_allocation_failures",
            "Failed allocations at or above the traced order, from the kmem:mm_page_alloc "
            "tracepoint (silent: made with __GFP_NOWARN, never in the kernel log)",
            ["order", "silent"],
            registry=registry,
        )
        self.errors = Counter(
            "memfrag_tracing_errors",
            "The tracing source could not start or its reader stopped",
            registry=registry,
        )
        self.compactions = Counter(
            "memfrag_compactions",
            "Compactions of one zone (mm_compaction_begin to end) by NUMA node, kind (direct: an "
            "allocation stalled; kcompactd; manual: a write to compact_memory, the agent's "
            "remediation among them) and the kernel's result",
            ["numa_node", "kind", "result"],
            registry=registry,
        )
        self.compaction_seconds = Histogram(
            "memfrag_compaction_duration_seconds",
            "Duration of one zone's compaction (mm_compaction_begin to end) by NUMA node and kind",
            ["numa_node", "kind"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.action_compaction = Gauge(
            "memfrag_remediation_last_compaction_seconds",
            "Seconds the node spent in compaction while the last remediation action ran (traced, "
            "by kind: manual is the action's own, direct the allocations that stalled meanwhile)",
            ["kind"],
            registry=registry,
        )
        self.armed_gauge = Gauge(
            "memfrag_tracing_alloc_failures_armed",
            "1 while the per-allocation failure counter (kmem:mm_page_alloc) is armed: always "
            "with sources.tracing_alloc_failures 'always', else while the node is at risk",
            registry=registry,
        )
        self.pairer = CompactionPairer({})
        self.runs: deque[CompactionRun] = deque(maxlen=MAX_RUNS)
        self._zero_orders(min_order)

    def _zero_orders(self, min_order: int) -> None:
        for order in range(min_order, HIGHEST_ORDER + 1):
            for silent in ("true", "false"):
                self.failures.labels(order_label(order), silent)

    def start(self, pageblock_order: int | None, zone_nodes: Mapping[int, int]) -> None:
        """Never raises: a source that cannot start is an error told once, tried again.
        `zone_nodes`: each zone's start pfn -> NUMA node (from /proc/zoneinfo), whose nodes get
        their compaction series at 0."""
        self.pageblock_order, self._begun = pageblock_order, True
        self.zones(zone_nodes)
        for node in sorted({*zone_nodes.values()}):
            for kind in CompactionKind:
                self.compaction_seconds.labels(str(node), kind.value)
                for result in RESULTS:
                    self.compactions.labels(str(node), kind.value, result)
        for kind in CompactionKind:
            self.action_compaction.labels(kind.value)
        with self._arm_lock:
            self._apply(step(self.arming, self.monotonic(), self.policy, ()))
        self._start()

    def zones(self, zone_nodes: Mapping[int, int]) -> None:
        """The zones' NUMA nodes as last read (zones do not move; memory hotplug adds some)."""
        with self._lock:
            self.pairer.zone_nodes = dict(zone_nodes)

    def _start(self) -> None:
        with self._lock:
            self._broken = False
        armed = self.arming.armed
        try:
            source = self.make(
                self.min_order,
                self.window_seconds,
                self.pageblock_order,
                self._reader_failed,
                armed,
            )
            source.window = CountingWindow(source.window, self._count)
            source.start()
        except (MemfragError, OSError) as exc:
            self._retry_at = self.monotonic() + RETRY_SECONDS
            self._failed(f"cannot start: {exc}")
            return
        with self._arm_lock:
            self.source, self.started_at = source, self.monotonic()
            if self.arming.armed != armed:  # the new reader's first events armed it meanwhile
                self._arm_source(source, self.arming.armed)
        log.info(
            "tracing started",
            extra={"min_order": self.min_order, "alloc_failures_armed": self.arming.armed},
        )

    def retarget(self, min_order: int) -> None:
        """A reload changed assessment.target_order: the in-kernel filter is set at start, so
        the instance is started again with the new one (a new window). A source that could not
        start is retried at once with it."""
        if min_order == self.min_order:
            return
        log.info(
            "tracing: traced order changed, instance restarted",
            extra={"from_order": self.min_order, "to_order": min_order},
        )
        self.min_order = min_order
        self._zero_orders(min_order)
        if self._begun:
            self.stop()
            self._start()

    def poll(self, now: float) -> None:
        """Once a tick, before `summary`: replace a source whose reader stopped, retry one that
        could not start."""
        with self._lock:
            broken, self._broken = self._broken, False
        if broken:
            self.stop()
            self._retry_at = now + RETRY_SECONDS
        if self.source is None and now >= self._retry_at:
            self._start()

    def arm_for(
        self,
        now: float,
        assessment: Assessment | None,
        recent: VmstatRates | None,
        at_risk_below_blocks: int,
        policy: ArmPolicy,
    ) -> None:
        """Once a tick: arm or disarm the failure counter from the tick's signs and what the
        reader saw since the last tick (slow-path events, failures counted while armed)."""
        with self._arm_lock:
            self.policy = policy
            seen = tuple(r for r, n in self._signs.items() if n)
            self._signs = dict.fromkeys(self._signs, 0)
            signs = risks(assessment, recent, at_risk_below_blocks) + seen
            self._apply(step(self.arming, now, policy, signs))

    def _trigger(self) -> None:
        """From the reader thread: a slow-path event at the order arms the counter at once."""
        with self._arm_lock:  # arm_for swaps _signs under it: an increment outside is lost
            self._signs[Risk.SLOW_PATH] += 1
            if not self.arming.armed:
                self._apply(step(self.arming, self.monotonic(), self.policy, (Risk.SLOW_PATH,)))

    def _apply(self, new: ArmState) -> None:
        """Under _arm_lock: the new state into the instance, the gauge and the log."""
        old, self.arming = self.arming, new
        self.armed_gauge.set(1 if new.armed else 0)
        if new.armed == old.armed:
            return
        if new.armed:
            log.info(
                "tracing: allocation failure counter armed",
                extra={"why": new.why, "policy": self.policy},
            )
        else:
            last, since = new.last_risk, new.since
            quiet = None if last is None or since is None else since - last
            log.info(
                "tracing: allocation failure counter disarmed",
                extra={"policy": self.policy, "quiet_seconds": quiet},
            )
        if self.source is not None:  # else the next start takes the state
            self._arm_source(self.source, new.armed)

    def _arm_source(self, source: Source, on: bool) -> None:
        try:
            source.arm(on)
        except (MemfragError, OSError) as exc:
            self._reader_failed(f"cannot {'arm' if on else 'disarm'}: {exc}")

    def stop(self) -> None:
        if self.source is not None:
            try:
                self.source.stop()
            except (MemfragError, OSError) as exc:
                log.error("tracing: cannot remove the instance", extra={"error": str(exc)})
            self.source = None

    def _count(self, event: TraceEvent) -> None:
        """From the reader thread, each event as it arrives."""
        if isinstance(event, PageAlloc) and event.failed and event.order >= self.min_order:
            self.failures.labels(order_label(event.order), str(event.silent).lower()).inc()
            with self._arm_lock:
                self._signs[Risk.FAILURES] += 1
            return
        if triggers(event, self.min_order):
            self._trigger()
        if isinstance(event, CompactionBegin | CompactionEnd | DirectCompaction):
            with self._lock:
                run = self.pairer.add(event)
                if run is not None:
                    self.runs.append(run)
            if run is not None:
                node = "unknown" if run.node is None else str(run.node)
                result = run.status if run.status in RESULTS else "other"
                self.compactions.labels(node, run.kind.value, result).inc()
                self.compaction_seconds.labels(node, run.kind.value).observe(run.seconds)

    def compaction_during(self, start: float, end: float) -> dict[CompactionKind, float]:
        """Seconds of compaction by kind that overlapped [start, end] (CLOCK_MONOTONIC, the
        trace clock: time.monotonic()), for the remediation's record."""
        with self._lock:
            runs = tuple(self.runs)
        out = dict.fromkeys(CompactionKind, 0.0)
        for r in runs:
            overlap = min(end, r.ended) - max(start, r.began)
            if overlap > 0:
                out[r.kind] += overlap
        return out

    def record_action(self, seconds: Mapping[CompactionKind, float]) -> None:
        for kind in CompactionKind:
            self.action_compaction.labels(kind.value).set(seconds.get(kind, 0.0))

    def _reader_failed(self, message: str) -> None:
        """From the reader thread: it stopped."""
        with self._lock:
            self._broken = True
        self._failed(message)

    def _failed(self, message: str) -> None:
        log.error("tracing failed", extra={"error": message})
        self.errors.inc()
        with self._lock:
            self._error = self._error or message

    def events(self) -> list[EventSpec]:
        """The tracing error's Event, once per run."""
        with self._lock:
            if self._told or self._error is None:
                return []
            self._told, error = True, self._error
        return [
            EventSpec(
                EventType.WARNING,
                EventReason.TRACING_FAILED,
                f"tracing (sources.tracing_enabled) {error}; going on without it",
            )
        ]

    def summary(self, now: float, zone_nodes: Mapping[int, int]) -> TraceSummary | None:
        """The window so far (shorter while the source is young); None when not running."""
        if zone_nodes:
            self.zones(zone_nodes)
        if self.source is None or self.started_at is None:
            return None
        events, pids, dropped = self.source.window.snapshot()
        seconds = min(self.window_seconds, max(1.0, now - self.started_at))
        return summarize(events, seconds, self.min_order, pids, zone_nodes, dropped=dropped)


def pod_names(pods: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """namespace/name by pod UID, from the pod informer's objects."""
    out = {}
    for p in pods:
        meta = p.get("metadata") or {}
        if meta.get("uid") and meta.get("name"):
            out[str(meta["uid"])] = f"{meta.get('namespace', '')}/{meta['name']}"
    return out
