"""Prometheus metrics (prefix memfrag_, base units, no unbounded labels) and the HTTP endpoint
that serves /metrics and /healthz on one port.

/healthz answers 200 while polls assess the node: it turns 503 when no poll assessed it within
three poll intervals (the agent is stuck, or cannot read /proc). It does not depend on the API
server: an API outage shows in memfrag_api_up, and restarting the agent would not fix it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from agent import __version__
from agent.assess.tunables import KNOBS
from agent.assess.verdict import Assessment, Verdict
from agent.base.errors import MemfragError
from agent.daemon.httpserver import BoundedHTTPServer
from agent.decide.ladder import Step
from agent.decide.remediation import ActionOutcome
from agent.decide.tunables import TrialResult
from agent.kernel.actions import ActionKind
from agent.kernel.kmsg import KINDS
from agent.kernel.pininfo import SkipReason

VERDICTS = tuple(Verdict)
# Why the last API request failed; 404, 409 and 422 are answers from a working API server.
API_DOWN_REASONS = ("unreachable", "unauthorized", "forbidden", "throttled", "server_error")
# *_created series would double the scrape for no operator value.
disable_created_metrics()  # type: ignore[no-untyped-call]


def order_label(order: int | None) -> str:
    """Orders are small integers; anything odd collapses to 'unknown' to bound the label."""
    return str(order) if order is not None and 0 <= order <= 15 else "unknown"


def api_down_reason(status: int | None) -> str | None:
    """None while the API server answers; else why not. 401/403 are down too: an agent whose
    token was revoked or whose writes are denied cannot report, whatever the transport says."""
    if status is None:
        return None
    if status == 0:
        return "unreachable"
    return {401: "unauthorized", 403: "forbidden", 429: "throttled"}.get(
        status, "server_error" if status >= 500 else None
    )


class Metrics:
    def __init__(self, numa_nodes: Iterable[int] = ()) -> None:
        """Every labelled counter starts at 0 for each label value the agent can give it (the
        per-NUMA-node compaction: for `numa_nodes`), so a first failure is an increase that
        `increase()` and `rate()` see, not a new series born at 1. The image sets
        MEMFRAG_REVISION (Dockerfile, build arg REVISION) for memfrag_build_info."""
        r = self.registry = CollectorRegistry()
        # process_* (memory, CPU, open files of this process) and python_* (version, GC).
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        self.build = Info("memfrag_build", "Version of the running agent", registry=r)
        self.build.info(
            {"version": __version__, "revision": os.environ.get("MEMFRAG_REVISION") or "unknown"}
        )
        self.free_blocks = Gauge(
            "memfrag_free_blocks",
            "Free blocks per NUMA node, zone and order (buddyinfo)",
            ["numa_node", "zone", "order"],
            registry=r,
        )
        self.blocks_at_order = Gauge(
            "memfrag_free_blocks_at_target_order",
            "Free memory usable by a target-order request, in blocks of that order",
            ["numa_node", "zone"],
            registry=r,
        )
        self.unusable = Gauge(
            "memfrag_unusable_free_space_index",
            "The kernel's unusable free space index at the target order (0..1)",
            ["numa_node", "zone"],
            registry=r,
        )
        self.fragindex = Gauge(
            "memfrag_fragmentation_index",
            "The kernel's fragmentation index at the target order (-1: would succeed)",
            ["numa_node", "zone"],
            registry=r,
        )
        self.target_order = Gauge("memfrag_target_order", "Order the verdict is for", registry=r)
        self.verdict = Gauge(
            "memfrag_verdict", "1 for the node's current verdict", ["verdict"], registry=r
        )
        self.condition = Gauge(
            "memfrag_condition_true", "1 while the MemoryFragmented condition is True", registry=r
        )
        self.tainted = Gauge(
            "memfrag_tainted", "1 while the agent's taint is on the node", registry=r
        )
        self.findings = Counter(
            "memfrag_kernel_log_findings",
            "High-order allocation failures seen in the kernel log",
            ["kind", "order"],
            registry=r,
        )
        self.kmsg_lost = Counter(
            "memfrag_kmsg_lost_records",
            "Kernel-log records overwritten before they were read",
            registry=r,
        )
        self.kmsg_reopens = Counter(
            "memfrag_kmsg_reopens", "Times the kernel log had to be reopened", registry=r
        )
        self.kmsg_suppressed = Counter(
            "memfrag_kmsg_suppressed",
            "Allocation-failure reports the kernel's rate limit dropped (warn_alloc: N callbacks "
            "suppressed)",
            registry=r,
        )
        self.kmsg_ignored = Counter(
            "memfrag_kmsg_ignored_records",
            "Matching kernel-log records ignored because they did not come from the kernel",
            registry=r,
        )
        self.stuck_pods = Gauge(
            "memfrag_stuck_pods", "Pods on this node stuck in ContainerCreating", registry=r
        )
        self.api_errors = Counter(
            "memfrag_api_errors", "Failed API server calls", ["operation"], registry=r
        )
        self.api_requests = Counter(
            "memfrag_api_requests",
            "API server requests the agent sent, by HTTP method (WATCH: a watch opened; a "
            "healthy node: its heartbeats and a watch renewal per watch every 30-60 min)",
            ["method"],
            registry=r,
        )
        self.api_up = Gauge(
            "memfrag_api_up",
            "1 if the last API server request of any kind was answered (read, watch or write; "
            "401, 403, 429, 5xx and no answer count as down)",
            registry=r,
        )
        self.api_down = Gauge(
            "memfrag_api_down_reason",
            "1 for the reason the last API server request failed, 0 for the others",
            ["reason"],
            registry=r,
        )
        for reason in API_DOWN_REASONS:
            self.api_down.labels(reason).set(0)
        self.last_poll = Gauge(
            "memfrag_last_successful_poll_timestamp_seconds",
            "When the last observe-and-assess cycle that assessed the node finished",
            registry=r,
        )
        self.assess_seconds = Histogram(
            "memfrag_assess_duration_seconds",
            "One observe-and-assess cycle",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=r,
        )
        self.input_errors = Counter(
            "memfrag_input_errors", "Malformed or unreadable kernel files", registry=r
        )
        self.config_valid = Gauge(
            "memfrag_config_valid",
            "0 while the newest config file is invalid (last good kept)",
            registry=r,
        )
        self.config_reloads = Counter(
            "memfrag_config_reloads", "Config reloads", ["result"], registry=r
        )
        self.actions = Counter(
            "memfrag_remediation_actions", "Remediation actions", ["action", "result"], registry=r
        )
        self.action_blocks_gained = Gauge(
            "memfrag_remediation_last_blocks_gained",
            "Target-order blocks gained by the last remediation action",
            registry=r,
        )
        self.action_seconds = Gauge(
            "memfrag_remediation_last_duration_seconds", "Duration of the last action", registry=r
        )
        self.predicted_seconds = Gauge(
            "memfrag_predicted_seconds_to_fragmented",
            "Seconds until the NUMA node's free blocks at the target order are predicted to "
            "cross the fragmented line, within the horizon (NaN: no prediction)",
            ["numa_node"],
            registry=r,
        )
        self.hugepages_allocatable = Gauge(
            "memfrag_hugepages_allocatable",
            "Hugepages of this size the NUMA node's free blocks could give now, before reclaim "
            "or compaction (NaN: a gigantic page, which free block counts cannot foresee)",
            ["size_kib", "numa_node"],
            registry=r,
        )
        self.hugepages_target = Gauge(
            "memfrag_hugepages_target",
            "Hugepages the pool is expected to hold (assessment.hugepage_targets; numa_node "
            "'all': the machine-wide pool)",
            ["size_kib", "numa_node"],
            registry=r,
        )
        self.hugepages_shortfall = Gauge(
            "memfrag_hugepages_shortfall",
            "Hugepages the pool lacks of its target (target minus nr_hugepages, at least 0)",
            ["size_kib", "numa_node"],
            registry=r,
        )
        self.tunable_trials = Counter(
            "memfrag_tunable_trials",
            "Measured vm tunable trials by knob and how each ended (remediation.apply_tunables)",
            ["tunable", "result"],
            registry=r,
        )
        for knob in KNOBS:
            for ended in TrialResult:
                self.tunable_trials.labels(knob, ended)
        self.pinned_bytes = Gauge(
            "memfrag_pinned_memory_bytes",
            "Long-term pinned memory on the node (the larger of vmstat FOLL_PIN and the VmPin "
            "sum), as last read: only while fragmented after a remediation step",
            registry=r,
        )
        self.pin_skipped = Counter(
            "memfrag_pin_scan_skipped",
            "/proc/PID/status files the pinned-memory scan skipped, by reason",
            ["reason"],
            registry=r,
        )
        for skip in SkipReason:
            self.pin_skipped.labels(skip)
        self.config_valid.set(1)
        for kind in KINDS:
            for order in (*range(16), None):
                self.findings.labels(kind, order_label(order))
        for operation in ("condition", "event", "label", "lease", "pod-delete", "taint"):
            self.api_errors.labels(operation)
        for reload in ("ok", "invalid"):
            self.config_reloads.labels(reload)
        steps = [Step(ActionKind.COMPACT, None, "")]
        steps += [Step(ActionKind.DROP_CACHES, n, "") for n in (1, 2, 3)]
        steps += [Step(ActionKind.COMPACT_NODE, n, "") for n in numa_nodes]
        for step in steps:
            for result in ActionOutcome:
                self.actions.labels(step.name, result)

    def record(self, a: Assessment) -> None:
        self.target_order.set(a.order)
        for z in a.zones:
            labels = (str(z.node), z.zone)
            for o, n in enumerate(z.free):
                self.free_blocks.labels(*labels, str(o)).set(n)
            self.blocks_at_order.labels(*labels).set(z.blocks_at_target)
            self.unusable.labels(*labels).set(z.unusable_milli / 1000)
            self.fragindex.labels(*labels).set(z.fragindex_milli / 1000)
        self.set_verdict(a.verdict)

    def api_result(self, status: int | None) -> None:
        """The outcome of one API request (None: answered), from any thread."""
        reason = api_down_reason(status)
        self.api_up.set(1 if reason is None else 0)
        for r in API_DOWN_REASONS:
            self.api_down.labels(r).set(1 if r == reason else 0)

    def set_verdict(self, verdict: Verdict) -> None:
        for v in VERDICTS:
            self.verdict.labels(v).set(1 if v == verdict else 0)


class Health:
    """Shared between the poll loop and the HTTP handler."""

    def __init__(self, max_age: float) -> None:
        self.max_age = max_age
        self.last_poll = time.monotonic()

    def ok(self) -> bool:
        return time.monotonic() - self.last_poll <= self.max_age


def serve(metrics: Metrics, health: Health, address: str, port: int) -> BoundedHTTPServer:
    """Start /metrics and /healthz (agent.daemon.httpserver: one thread, bounded connections).
    A port or address this host cannot listen on is a MemfragError naming the config keys."""

    def handle(target: str) -> tuple[int, str, bytes]:
        path = target.split("?", maxsplit=1)[0]
        if path == "/metrics":
            return 200, CONTENT_TYPE_LATEST, generate_latest(metrics.registry)
        if path in ("/healthz", "/livez"):
            if health.ok():
                return 200, "text/plain", b"ok\n"
            return 503, "text/plain", b"no poll completed recently\n"
        return 404, "text/plain", b"not found\n"

    try:
        server = BoundedHTTPServer(address, port, handle)
    except OSError as exc:
        raise MemfragError(
            f"cannot listen on {address}:{port} (reporting.metrics_address, "
            f"reporting.metrics_port): {exc.strerror or exc}"
        ) from exc
    server.start()
    return server
