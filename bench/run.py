"""`make bench` / `python -m bench.run [--quick]`: memfrag-agent's benchmarks on this machine,
against a real local control plane (etcd + kube-apiserver from .tools/bin). Prints a table and
writes out/bench.json. See bench/README.md for what each number means.

Benchmarks, not tests: nothing here asserts on speed. Every loop is bounded in count and time;
all traffic goes to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import math
import os
import platform
import queue
import random
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import agent.daemon.loop
from agent.assess.verdict import assess
from agent.base.files import read_text
from agent.base.times import rfc3339
from agent.config.model import Config
from agent.decide.nodeview import SUMMARY_ANNOTATION
from agent.kernel.kmsg import scan_events
from agent.kernel.pagetypeinfo import parse_pagetypeinfo
from agent.kernel.procfs import ProcReader
from agent.kube.client import SMP, ApiError, Kube
from agent.kube.informer import WATCH_SECONDS_MAX, WATCH_SECONDS_MIN
from bench import image as bench_image
from bench import npd
from bench import tracing as tracecost
from bench.kubeio import ApiServerMetrics, LeaseWrites, NodeWatcher, Window, window
from bench.sim import steady_report
from bench.stats import (
    LONG_RUNNING_VERBS,
    cpu_percent,
    npd_heartbeat_writes_per_hour,
    per_hour,
    percentile,
    proc_stat_ticks,
    project,
    slope_through_origin,
    subtract_background,
    summarize,
    sustains,
    total,
    vm_rss_kib,
)
from tests.cluster.agentprocess import SEED_LINE, AgentProcess, kmsg_line
from tests.cluster.fakehost import FakeHost, FakeKernel
from tests.cluster.plane import ControlPlane, node_labels, node_status, read_pids
from tests.cluster.rbac import NAMESPACE, apply_chart_rbac

REPO = Path(__file__).resolve().parents[1]
CLK_TCK = os.sysconf("SC_CLK_TCK")
# The agent runs a finding-triggered cycle at most this often (agent.daemon.loop.MIN_CYCLE_GAP).
MIN_CYCLE_GAP = float(getattr(agent.daemon.loop, "MIN_CYCLE_GAP", 1.0))
DEVKMSG_LINE = f"<4>{SEED_LINE}\n".encode()
PRINTK_DEVKMSG = Path("/proc/sys/kernel/printk_devkmsg")
# Each of the agent's watches is renewed once per timeoutSeconds, uniform over
# agent.kube.informer.WATCH_SECONDS_MIN..MAX: on average this often.
WATCH_TIMEOUT_S = (WATCH_SECONDS_MIN + WATCH_SECONDS_MAX) / 2
SIM_LABEL = "bench.memfrag.dev/sim"
# What the chart's RBAC (charts/memfrag-agent/templates/rbac.yaml) lets the agent touch; the
# API server's own requests on anything else are left out of the agent's counts.
AGENT_RESOURCES = frozenset({"nodes", "pods", "events", "leases"})
SIM_START_RATE = 25.0  # agents started per second across the workers (a DaemonSet rollout)
# Agents per worker process. Each agent has a thread per watch; with 1,250 agents (2,500 watch
# threads) in one interpreter, hundreds of threads woke at once for its one GIL (load averages
# of 400 on 2 cores): a convoy no real node has, where each agent is its own process.
SIM_AGENTS_PER_WORKER = 250
SIM_WORKERS_MAX = 20
PROJECT_TO = 5000
FLOOD_MARKERS = 5  # lines of interest mixed into the flood, each must be counted


@dataclass(frozen=True)
class Profile:
    name: str
    trials: int  # detection trials, each of ours, real /dev/kmsg, NPD
    baseline_s: float  # idle API server, to learn its own background traffic
    steady_s: float
    flood_s: float
    flood_rate: int
    assess_iters: int
    pti_iters: int
    sim_levels: tuple[int, ...]
    sim_window_s: float
    sim_budget_s: float  # the whole sim phase stops escalating past this
    npd_fleet_level: int
    npd_fleet_window_s: float
    trace_pairs: int = 40  # workload rounds of each state (off, disarmed, armed), interleaved
    trace_mib: int = 128  # faulted in per round
    trace_agent_s: float = 60  # the agent's CPU window, at rest and again under the workload
    image_window_s: float = 300  # the image's quiet window on the real node (NPD's: 5 minutes)


FULL = Profile(
    name="full",
    trials=50,
    baseline_s=12,
    steady_s=1800,  # >= 30 min: a heartbeat every 900 s, start-up writes left out
    flood_s=30,
    flood_rate=10_000,
    assess_iters=2000,
    pti_iters=100,
    sim_levels=(100, 1000, 5000),
    sim_window_s=30,
    sim_budget_s=1200,
    npd_fleet_level=1000,
    npd_fleet_window_s=30,
)
QUICK = Profile(
    name="quick",
    trials=10,
    baseline_s=15,
    steady_s=30,
    flood_s=5,
    flood_rate=10_000,
    assess_iters=300,
    pti_iters=20,
    sim_levels=(100, 300),
    sim_window_s=20,
    sim_budget_s=150,
    npd_fleet_level=300,
    npd_fleet_window_s=20,
    trace_pairs=8,
    trace_agent_s=15,
    image_window_s=30,
)

# key -> (unit, what it measures); the table's order
KEYS: dict[str, tuple[str, str]] = {
    "detection_latency_ms_p50": ("ms", "kmsg line on the FIFO -> condition True seen by a watch"),
    "detection_latency_ms_p99": ("ms", "same, p99"),
    "detection_latency_real_kmsg_ms_p50": ("ms", "same, line written to the real /dev/kmsg"),
    "detection_latency_real_kmsg_ms_p99": ("ms", "same, p99"),
    "npd_detection_latency_ms_p50": ("ms", "NPD pattern (1 s sync tick), same line, same watch"),
    "npd_detection_latency_ms_p99": ("ms", "same, p99"),
    "assess_ms_p50": ("ms", "observe(real /proc, no pagetypeinfo) + assess, one cycle"),
    "assess_ms_p99": ("ms", "same, p99"),
    "pagetypeinfo_ms_p50": ("ms", "read + parse the real /proc/pagetypeinfo"),
    "kmsg_match_lines_per_s": ("lines/s", "matcher alone, unrelated kmsg records one by one"),
    "agent_rss_mib": ("MiB", "memfrag-agent run RSS after the steady window (real /proc)"),
    "agent_cpu_percent_steady": ("% core", "its CPU (utime+stime) over the steady window"),
    "image_agent_rss_mib": ("MiB", "the image on the real node (helm install, chart defaults)"),
    "image_agent_cpu_percent": ("% core", "same pod's CPU over its quiet window"),
    "api_writes_per_node_hour_steady": ("/node/h", "one healthy agent's writes in the window"),
    "api_requests_per_node_hour_steady": ("/node/h", "same, all verbs (watch renewals too)"),
    "api_requests_per_node_hour_agent": (
        "/node/h",
        "same window, as the agent counted what it sent",
    ),
    "api_writes_per_node_hour_agent": ("/node/h", "same, writes only (POST, PUT, PATCH, DELETE)"),
    "api_writes_per_node_hour_fleet": ("/node/h", "sim fleet, heartbeat phases spread"),
    "npd_api_writes_per_node_hour_steady": ("/node/h", "NPD pattern fleet, same method"),
    "api_requests_per_episode": ("requests", "fragmented -> remediated -> recovered, all verbs"),
    "api_writes_per_episode": ("requests", "same, writes only"),
    "kmsg_flood_cpu_percent": ("% core", "agent CPU under the kernel-log flood"),
    "kmsg_flood_lines_per_s": ("lines/s", "flood rate achieved (target 10,000/s)"),
    "kmsg_flood_markers_lost": ("lines", f"of {FLOOD_MARKERS} lines of interest in the flood"),
    "sim_100_requests_per_s": ("req/s", "100 simulated nodes: API server requests/s"),
    "sim_100_writes_per_s": ("req/s", "100 simulated nodes: writes/s"),
    "sim_1000_requests_per_s": ("req/s", "1,000 simulated nodes: requests/s"),
    "sim_1000_writes_per_s": ("req/s", "1,000 simulated nodes: writes/s"),
    "sim_nodes_max": ("nodes", "largest simulated fleet sustained (levels tried)"),
    "sim_apiserver_requests_per_s": ("req/s", "requests/s at sim_nodes_max"),
    "sim_apiserver_p99_ms_at_max": ("ms", "API server p99 (non-watch) at sim_nodes_max"),
    "sim_5000_projected_requests_per_s": ("req/s", "projection to 5,000 nodes (linear)"),
    "sim_5000_projected_writes_per_s": ("req/s", "projection to 5,000 nodes, writes"),
    "tracing_workload_slowdown_ratio": (
        "ratio",
        "order-0 fault loop, CPU disarmed (default, healthy) / off, median pair",
    ),
    "tracing_workload_slowdown_ratio_armed": (
        "ratio",
        "same, the failure counter armed (at risk, or always) / off",
    ),
    "tracing_agent_cpu_percent_rest": ("% core", "agent with tracing on, node at rest"),
    "tracing_agent_cpu_percent_load": ("% core", "same, under the page-fault loop"),
}


def log(text: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", flush=True)


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in read_text(Path("/proc/cpuinfo")).splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kib = 0
    with contextlib.suppress(OSError):
        for line in read_text(Path("/proc/meminfo")).splitlines():
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    return {
        "cpu_model": model or platform.processor(),
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def code_version() -> dict[str, Any]:
    """The commit measured, and whether agent/ had uncommitted changes (read-only git)."""

    def git(*args: str) -> str:
        try:
            out = subprocess.run(
                ["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10, check=False
            )
            return out.stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return ""

    return {
        "commit": git("rev-parse", "HEAD"),
        "agent_uncommitted_changes": bool(git("status", "--porcelain", "--", "agent")),
    }


def ticks(pid: int) -> int:
    return proc_stat_ticks(Path(f"/proc/{pid}/stat").read_text())


def rss_mib(pid: int) -> float:
    return vm_rss_kib(Path(f"/proc/{pid}/status").read_text()) / 1024


def ms(x: float | None) -> float | None:
    return None if x is None else round(x * 1000, 3)


def r3(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


class RealHost(FakeHost):
    """This machine's /proc in a FakeHost's place: read, never written."""

    def __init__(self) -> None:
        self.root = Path("/proc")

    def _put(self, fixture: str) -> None:
        raise RuntimeError("the benchmark never writes to the real /proc")


def default_config(**sections: dict[str, Any]) -> dict[str, Any]:
    """Every key at the agent's default, then `sections` on top; the harness picks the metrics
    port and address and, unless given, the kernel log (its FIFO)."""
    cfg = dataclasses.asdict(Config())
    for k in ("metrics_port", "metrics_address", "max_tainted_percent"):
        cfg["reporting"].pop(k)
    cfg["sources"].pop("kmsg_path")
    for section, values in sections.items():
        cfg[section].update(values)
    return cfg


@contextlib.contextmanager
def devkmsg_unlimited() -> Iterator[None]:
    """User writes to /dev/kmsg are rate-limited by default (printk_devkmsg=ratelimit)."""
    old = PRINTK_DEVKMSG.read_text().strip()
    PRINTK_DEVKMSG.write_text("on\n")
    try:
        yield
    finally:
        PRINTK_DEVKMSG.write_text(old + "\n")


def kmsg_match_rate(n: int = 100_000, rounds: int = 3) -> int:
    """Records/s through `scan_events`, one record a call as the kmsg follower hands them; the
    best of `rounds` (the machine is shared), in process, no I/O."""
    records = unrelated_lines(0, n).split(b"\n")[:-1]
    best = 0.0
    for _ in range(rounds):
        t = time.perf_counter()
        for record in records:
            for _ in scan_events([record]):
                pass
        best = max(best, len(records) / (time.perf_counter() - t))
    return round(best)


def unrelated_lines(seq: int, n: int) -> bytes:
    """n kernel-log records that match nothing: the chatter of a busy container host."""
    ts = int(time.monotonic() * 1e6)
    out = []
    for i in range(seq, seq + n):
        k = i % 5
        if k == 0:
            text = f"IPv6: ADDRCONF(NETDEV_CHANGE): veth{i:08x}: link becomes ready"
        elif k == 1:
            text = f"cni0: port {i % 250 + 1}(veth{i:08x}) entered forwarding state"
        elif k == 2:
            text = (
                f'audit: type=1400 audit({ts / 1e6:.3f}:{i}): apparmor="STATUS" '
                f'operation="profile_load" name="cri-containerd.apparmor.d" pid={i % 65536}'
            )
        elif k == 3:
            text = "TCP: request_sock_TCP: Possible SYN flooding on port 8080. Sending cookies."
        else:
            text = f"eth0: renamed from tmp{i % 100000}"
        out.append(f"6,{i},{ts + i},-;{text}\n")
    return "".join(out).encode()


@dataclass
class Target:
    """One detection-latency subject: how to trigger it, reset it, and its results."""

    name: str
    w: NodeWatcher
    trigger: Callable[[int], None]
    reset: Callable[[int], None]
    gap: Callable[[], float]  # random wait before each trigger
    quiet_s: float = 0.0  # minimum age of the last reset before the next trigger
    lat: list[float] = dataclasses.field(default_factory=list)
    last_reset: float = 0.0


class Bench:
    def __init__(self, profile: Profile, workdir: Path, out: Path) -> None:
        self.p = profile
        self.workdir, self.out = workdir, out
        self.results: dict[str, Any] = dict.fromkeys(KEYS)
        self.details: dict[str, Any] = {}
        self.notes: list[str] = []
        self.machine = machine()
        self.details["code"] = code_version()
        self.started = time.time()
        self.rng = random.Random(42)
        self.plane: ControlPlane | None = None
        self._admin: Kube | None = None
        self._sa: Path | None = None
        self._metrics: ApiServerMetrics | None = None
        self._leases: LeaseWrites | None = None
        self.background: dict[tuple[str, str, str], float] = {}
        self.cleanup: list[Callable[[], None]] = []

    # --- plumbing ------------------------------------------------------------------------------
    @property
    def admin(self) -> Kube:
        assert self._admin is not None
        return self._admin

    @property
    def sa(self) -> Path:
        assert self._sa is not None
        return self._sa

    @property
    def metrics(self) -> ApiServerMetrics:
        assert self._metrics is not None
        return self._metrics

    @property
    def cp(self) -> ControlPlane:
        assert self.plane is not None
        return self.plane

    def save(self) -> None:
        doc = {
            **self.results,
            "mode": self.p.name,
            "machine": self.machine,
            "notes": self.notes,
            "duration_s": round(time.time() - self.started, 1),
            "details": self.details,
        }
        self.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc, indent=2, sort_keys=False) + "\n")
        os.replace(tmp, self.out)

    def phase(self, name: str, fn: Callable[[], None]) -> None:
        log(f"phase {name}")
        t0 = time.monotonic()
        try:
            fn()
        except Exception as exc:  # one failed phase must not lose the others' numbers
            self.notes.append(f"phase {name} failed: {type(exc).__name__}: {exc}")
            log(f"phase {name} FAILED: {type(exc).__name__}: {exc}")
        finally:
            while self.cleanup:
                with contextlib.suppress(Exception):
                    self.cleanup.pop()()
        self.details.setdefault("phase_seconds", {})[name] = round(time.monotonic() - t0, 1)
        self.save()

    def start_plane(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)
        self.workdir.mkdir(parents=True)
        self.plane = ControlPlane(self.workdir / "plane").start()
        apply_chart_rbac(self.plane.kubeconfig)
        self._sa = self.plane.service_account_kubeconfig(
            NAMESPACE, "memfrag-agent", self.workdir / "agent.kubeconfig", expiration_seconds=7200
        )
        self._admin = Kube.from_environment(str(self.plane.kubeconfig))
        self._metrics = ApiServerMetrics(self.plane.server, self.plane.ssl_context())
        self._leases = LeaseWrites(self.plane.server, self.plane.ssl_context()).start()

    def scrape(self) -> tuple[dict[Any, float], float]:
        """API server counters, and the monotonic time right after they were read."""
        return self.metrics.scrape(), time.monotonic()

    def api_window(
        self,
        before: tuple[dict[Any, float], float],
        after: tuple[dict[Any, float], float],
        everything: bool = False,
    ) -> tuple[Window, dict[tuple[str, str, str], float]]:
        """Requests in a window, less the API server's own: its Lease renewals exactly (seen
        by watch), anything else at the background rate learnt at start; and, unless
        `everything`, only on resources the agent's ServiceAccount may touch at all (the
        chart's RBAC: nodes, pods, events, leases). The rest is the API server's own informers
        and repair loops (serviceaccounts, services, configmaps, ...), kept in `other`."""
        (b, t0), (a, t1) = before, after
        secs = t1 - t0
        w = window(b, a, secs)
        assert self._leases is not None
        own = self._leases.counts(t0, t1)
        counts = subtract_background(w.counts, self.background, secs, own)
        if everything:
            return w, counts
        self.details.setdefault("other_requests_left_out", []).append(
            {"/".join(k): v for k, v in counts.items() if k[1] not in AGENT_RESOURCES}
        )
        return w, {k: v for k, v in counts.items() if k[1] in AGENT_RESOURCES}

    def watcher(self, node: str) -> NodeWatcher:
        w = NodeWatcher(self.cp.server, self.cp.ssl_context(), node).start()
        self.cleanup.append(w.stop)
        return w

    def agent(self, name: str, node: str, host: FakeHost, config: dict[str, Any]) -> AgentProcess:
        a = AgentProcess(self.workdir / name, node, self.sa, host, config)
        self.cleanup.append(functools.partial(_stop_agent, a))
        return a.start()

    def apiserver_pid(self) -> int | None:
        return read_pids(self.cp.workdir).get("kube-apiserver")

    # --- phases --------------------------------------------------------------------------------
    def baseline_and_assess(self) -> None:
        """The API server's own background traffic (its identity Lease every 10 s, ...), learnt
        while nothing else talks to it; the assess microbenchmark runs meanwhile (no API)."""
        before = self.scrape()
        self.assess_bench()
        time.sleep(max(0.0, self.p.baseline_s - (time.monotonic() - before[1])))
        after = self.scrape()
        secs = after[1] - before[1]
        w, counts = self.api_window(before, after, everything=True)  # less Lease renewals
        self.background = {k: v / secs for k, v in counts.items()}
        self.details["background_per_s"] = {
            "/".join(k): round(v, 4) for k, v in self.background.items()
        }
        self.details["background_watches_open"] = w.watches_open

    def assess_bench(self) -> None:
        reader, cfg = ProcReader("/proc"), Config().assessment
        times: list[float] = []
        verdicts: dict[str, int] = {}
        end = time.monotonic() + 120
        for _ in range(self.p.assess_iters):
            if time.monotonic() > end:
                break
            t = time.perf_counter()
            a = assess(reader.observe(with_pagetypeinfo=False), cfg, cfg.target_order)
            times.append(time.perf_counter() - t)
            verdicts[a.verdict] = verdicts.get(a.verdict, 0) + 1
        self.results["assess_ms_p50"] = ms(percentile(times, 50))
        self.results["assess_ms_p99"] = ms(percentile(times, 99))
        pti: list[float] = []
        path = Path("/proc/pagetypeinfo")
        for _ in range(self.p.pti_iters):
            if time.monotonic() > end:
                break
            t = time.perf_counter()
            parse_pagetypeinfo(read_text(path), str(path))
            pti.append(time.perf_counter() - t)
        self.results["pagetypeinfo_ms_p50"] = ms(percentile(pti, 50))
        self.results["kmsg_match_lines_per_s"] = kmsg_match_rate()
        self.details["assess"] = {
            "iterations": len(times),
            "ms": {k: round(v * 1000, 3) if k != "n" else v for k, v in summarize(times).items()},
            "verdicts": verdicts,
            "pagetypeinfo_ms": {
                k: round(v * 1000, 3) if k != "n" else v for k, v in summarize(pti).items()
            },
        }

    def steady(self) -> None:
        node = "bench-steady"
        self.cp.register_node(node)
        w = self.watcher(node)
        cfg = default_config(sources={"kmsg_path": "/dev/kmsg"})
        a = self.agent("steady", node, RealHost(), cfg)
        assert a.proc is not None
        pid = a.proc.pid
        first = w.wait(lambda s: s.status is not None, 0.0, 60)
        if first is None:
            raise RuntimeError("the agent never reported on the real /proc")
        time.sleep(5)  # its start-up writes are done
        w.stop()  # nothing but the agent talks to the API server from here on
        sent0 = agent_requests(a.metrics())
        before, k0, wall0 = self.scrape(), ticks(pid), time.time()
        time.sleep(self.p.steady_s)
        after, k1, wall1 = self.scrape(), ticks(pid), time.time()
        sent = {m: n - sent0.get(m, 0) for m, n in agent_requests(a.metrics()).items()}
        secs = after[1] - before[1]
        rss = rss_mib(pid)
        _, counts = self.api_window(before, after)
        writes = total(counts, writes_only=True)
        self.results["agent_rss_mib"] = round(rss, 1)
        self.results["agent_cpu_percent_steady"] = round(cpu_percent(k1 - k0, CLK_TCK, secs), 3)
        self.results["api_writes_per_node_hour_steady"] = round(per_hour(writes, secs), 2)
        self.results["api_requests_per_node_hour_steady"] = round(per_hour(total(counts), secs), 2)
        mine = sum(sent.values())
        self.results["api_requests_per_node_hour_agent"] = round(per_hour(mine, secs), 2)
        agent_writes = sum(n for m, n in sent.items() if m in WRITE_METHODS)
        self.results["api_writes_per_node_hour_agent"] = round(per_hour(agent_writes, secs), 2)
        self.details["steady"] = {
            "window_s": round(secs, 1),
            "verdict_condition_status": first.status,
            "writes": writes,
            "requests_by_verb_resource": {"/".join(k): v for k, v in counts.items()},
            "heartbeat_seconds": Config().reporting.heartbeat_seconds,
            "poll_interval_seconds": Config().sources.poll_interval_seconds,
            "api_writes_per_node_hour_model": 3600 / Config().reporting.heartbeat_seconds,
            "condition_writes": condition_writes(a.log(), wall0, wall1),
            "agent_requests_by_method": sent,
        }

    def _trials(self, targets: list[Target]) -> None:
        """Round-robin trials, never two at once: each target is triggered only after its
        last reset's cycle is `quiet_s` old, so the agent's minimum gap between cycles never
        delays a trigger (the other target's trial fills that wait)."""
        deadline = time.monotonic() + max(180.0, self.p.trials * 3.0 * len(targets))
        for i in range(self.p.trials):
            for t in targets:
                if time.monotonic() > deadline:
                    self.notes.append(f"{t.name}: stopped after {len(t.lat)} trials (time bound)")
                    return
                time.sleep(max(0.0, t.last_reset + t.quiet_s - time.monotonic()) + t.gap())
                t0 = time.monotonic()
                t.trigger(i)
                seen = t.w.wait(lambda s: s.status == "True", t0, 30)
                if seen is None:
                    self.notes.append(f"{t.name}: trial {i} saw no condition True within 30 s")
                else:
                    t.lat.append(seen.at - t0)
                t.reset(i)
                back = t.w.wait_state("False", False, 30)
                if back is None:
                    raise RuntimeError(f"{t.name}: trial {i} did not reset to False")
                t.last_reset = back.at

    def _detect_agent(
        self, name: str, kmsg: dict[str, Any]
    ) -> tuple[NodeWatcher, FakeHost, AgentProcess, float]:
        """An agent on a fake /proc whose only trigger is the kernel log; also returns when its
        first report arrived (its first cycle: the next finding must wait a gap after it)."""
        node = f"bench-{name}"
        self.cp.register_node(node)
        w = self.watcher(node)
        host = FakeHost(self.workdir / f"{name}-proc")
        cfg = default_config(
            sources={"poll_interval_seconds": 600, "pagetypeinfo_interval_seconds": 600, **kmsg},
            reporting={"fragmented_for_seconds": 0, "healthy_for_seconds": 0},
        )
        a = self.agent(name, node, host, cfg)
        first = w.wait_state("False", False, 60)
        if first is None:
            raise RuntimeError(f"{name}: no initial condition False")
        return w, host, a, first.at

    def detect(self) -> None:
        """Detection latency of ours (FIFO; real /dev/kmsg as root) and of NPD's pattern, all
        trials interleaved round-robin (one at a time)."""
        quiet = MIN_CYCLE_GAP + 0.25
        self.details["agent_min_cycle_gap_s"] = MIN_CYCLE_GAP
        w, host, a, start = self._detect_agent("detect", {})

        def trigger(i: int) -> None:
            host.fragmented()
            a.write_kmsg(kmsg_line(SEED_LINE, seq=2 * i + 10))

        def reset(i: int) -> None:
            host.healthy()
            a.write_kmsg(kmsg_line(SEED_LINE, seq=2 * i + 11))

        gap = functools.partial(self.rng.uniform, 0.05, 0.3)
        fifo = Target("detection (FIFO)", w, trigger, reset, gap, quiet, last_reset=start)
        targets = [fifo]
        real: Target | None = None
        with contextlib.ExitStack() as stack:
            if os.geteuid() == 0 and os.access("/dev/kmsg", os.W_OK):
                stack.enter_context(devkmsg_unlimited())
                fd = os.open("/dev/kmsg", os.O_WRONLY)
                stack.callback(os.close, fd)
                rw, rhost, _, rstart = self._detect_agent(
                    "detect-kmsg", {"kmsg_path": "/dev/kmsg", "accept_user_facility": True}
                )

                def rtrigger(i: int) -> None:
                    rhost.fragmented()
                    os.write(fd, DEVKMSG_LINE)

                def rreset(i: int) -> None:
                    rhost.healthy()
                    os.write(fd, DEVKMSG_LINE)

                real = Target(
                    "detection (/dev/kmsg)", rw, rtrigger, rreset, gap, quiet, last_reset=rstart
                )
                targets.append(real)
            else:
                self.notes.append("real /dev/kmsg detection skipped: needs root and /dev/kmsg")
            peer = self._npd_target()
            targets.append(peer)
            self._trials(targets)
        self.results["detection_latency_ms_p50"] = ms(percentile(fifo.lat, 50))
        self.results["detection_latency_ms_p99"] = ms(percentile(fifo.lat, 99))
        self.details["detection_fifo_ms"] = [round(x * 1000, 2) for x in fifo.lat]
        if real is not None:
            self.results["detection_latency_real_kmsg_ms_p50"] = ms(percentile(real.lat, 50))
            self.results["detection_latency_real_kmsg_ms_p99"] = ms(percentile(real.lat, 99))
            self.details["detection_real_kmsg_ms"] = [round(x * 1000, 2) for x in real.lat]
        self.results["npd_detection_latency_ms_p50"] = ms(percentile(peer.lat, 50))
        self.results["npd_detection_latency_ms_p99"] = ms(percentile(peer.lat, 99))
        self.details["npd_detection_ms"] = [round(x * 1000, 2) for x in peer.lat]

    def _npd_target(self) -> Target:
        """The NPD replay (a subprocess) on its own Node, fed through its own FIFO."""
        node = "bench-npd"
        self.cp.register_node(node)
        w = self.watcher(node)
        d = self.workdir / "npd"
        d.mkdir()
        fifo = d / "kmsg"
        os.mkfifo(fifo)
        fd = os.open(fifo, os.O_RDWR)
        self.cleanup.append(functools.partial(os.close, fd))
        errlog = open(d / "npd.log", "wb")  # noqa: SIM115
        self.cleanup.append(errlog.close)
        argv = [sys.executable, "-m", "bench.npd", "--node", node, "--kubeconfig", str(self.sa)]
        argv += ["--kmsg", str(fifo), "--max-seconds", str(self.p.trials * 15 + 120)]
        proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=errlog)
        self.cleanup.append(functools.partial(_kill, proc))
        if w.wait_state("False", False, 60) is None:
            raise RuntimeError("NPD replay wrote no initial condition")

        def trigger(i: int) -> None:
            os.write(fd, kmsg_line(SEED_LINE, seq=2 * i + 10))

        def reset(i: int) -> None:
            os.write(fd, kmsg_line(npd.RESET, seq=2 * i + 11))

        # A uniform gap over the 1 s tick, so the lines land at every phase of NPD's ticker.
        return Target("NPD detection", w, trigger, reset, functools.partial(self.rng.uniform, 0, 1))

    def flood(self) -> None:
        """Unrelated kernel-log lines at flood_rate through the real /dev/kmsg (as root; else
        the agent's FIFO, said in notes), MARKERS lines of interest among them: the CPU, the
        rate achieved, and whether every marker was counted."""
        node = "bench-flood"
        self.cp.register_node(node)
        w = self.watcher(node)
        host = FakeHost(self.workdir / "flood-proc")
        real = os.geteuid() == 0 and os.access("/dev/kmsg", os.W_OK)
        sources = {"kmsg_path": "/dev/kmsg", "accept_user_facility": True} if real else {}
        a = self.agent("flood", node, host, default_config(sources=sources))
        assert a.proc is not None
        pid = a.proc.pid
        if w.wait_state("False", False, 60) is None:
            raise RuntimeError("no initial condition False")
        w.stop()
        rate, secs = self.p.flood_rate, self.p.flood_s
        lines = unrelated_lines(100, 20_000).split(b"\n")[:-1]
        if real:
            # one write() is one record; <6> (info) stays off the console (console_loglevel 4)
            records = [b"<6>" + line.split(b";", 1)[1] for line in lines]
            marker = DEVKMSG_LINE
        else:
            records = [line + b"\n" for line in lines]
            marker = kmsg_line(SEED_LINE, seq=99)
        marks_at = [int(rate * secs * (k + 1) / (FLOOD_MARKERS + 1)) for k in range(FLOOD_MARKERS)]
        found0 = _findings(a.metrics())
        written = marked = 0
        with devkmsg_unlimited() if real else contextlib.nullcontext():
            fd = os.open("/dev/kmsg", os.O_WRONLY) if real else None
            try:
                k0, t0 = ticks(pid), time.monotonic()
                while True:
                    elapsed = time.monotonic() - t0
                    if elapsed >= secs:
                        break
                    due = min(int(rate * elapsed) - written, 1000)
                    for i in range(max(0, due)):
                        rec = records[(written + i) % len(records)]
                        if fd is not None:
                            os.write(fd, rec)
                        else:
                            a.write_kmsg(rec)
                    written += max(0, due)
                    while marked < FLOOD_MARKERS and written >= marks_at[marked]:
                        os.write(fd, marker) if fd is not None else a.write_kmsg(marker)
                        marked += 1
                    time.sleep(0.005)
                elapsed = time.monotonic() - t0
                k1 = ticks(pid)
            finally:
                if fd is not None:
                    os.close(fd)
        deadline = time.monotonic() + 10  # the last marker's cycle
        while _findings(a.metrics()) - found0 < marked and time.monotonic() < deadline:
            time.sleep(0.2)
        m = a.metrics()
        self.results["kmsg_flood_cpu_percent"] = round(cpu_percent(k1 - k0, CLK_TCK, elapsed), 2)
        self.results["kmsg_flood_lines_per_s"] = round(written / elapsed)
        self.results["kmsg_flood_markers_lost"] = marked - int(_findings(m) - found0)
        if not real:
            self.notes.append("kmsg flood through the agent's FIFO: the real /dev/kmsg needs root")
        self.details["flood"] = {
            "source": "/dev/kmsg" if real else "fifo",
            "seconds": round(elapsed, 2),
            "lines": written,
            "target_lines_per_s": rate,
            "markers_written": marked,
            "markers_counted": int(_findings(m) - found0),
            "agent_alive": a.proc.poll() is None and a.healthz(),
            "kmsg_lost": sum(v for k, v in m.items() if k.startswith("memfrag_kmsg_lost")),
        }

    def episode(self) -> None:
        node = "bench-episode"
        self.cp.register_node(node)
        w = self.watcher(node)
        host = FakeHost(self.workdir / "episode-proc")
        kernel = FakeKernel(host, heals_on="compact_memory=1")
        self.cleanup.append(kernel.close)
        cfg = default_config(
            sources={"poll_interval_seconds": 1, "pagetypeinfo_interval_seconds": 60},
            reporting={"fragmented_for_seconds": 0, "healthy_for_seconds": 2},
            remediation={"mode": "on"},
        )
        self.agent("episode", node, host, cfg)
        if w.wait_state("False", False, 60) is None:
            raise RuntimeError("no initial condition False")
        time.sleep(3)
        before = self.scrape()
        t0 = before[1]
        host.fragmented()
        if w.wait(lambda s: s.status == "True", t0, 30) is None:
            raise RuntimeError("episode: never fragmented")
        if w.wait(lambda s: s.status == "False" and not s.tainted, t0, 60) is None:
            raise RuntimeError("episode: never recovered")
        t_rec = time.monotonic() - t0
        time.sleep(3)  # trailing Events, Lease release
        after = self.scrape()
        secs = after[1] - t0
        _, counts = self.api_window(before, after)
        self.results["api_requests_per_episode"] = total(counts)
        self.results["api_writes_per_episode"] = total(counts, writes_only=True)
        self.details["episode"] = {
            "seconds_to_recovered": round(t_rec, 2),
            "window_s": round(secs, 1),
            "kernel_writes": [f"{a}={b}" for a, b in kernel.writes],
            "requests_by_verb_resource": {"/".join(k): v for k, v in sorted(counts.items())},
        }

    def tracing(self) -> None:
        """The tracing source's cost (bench/tracing.py): the workload with our instance off, on
        with the failure counter disarmed (the default on a healthy node) and armed,
        interleaved; then the agent (tracing on, its default policy, real /proc) at rest and
        under the workload."""
        st = tracecost.State
        with tracecost.tracefs_mounted() as tracefs:
            toggle = tracecost.Toggle(tracefs)
            self.cleanup.append(functools.partial(toggle, st.OFF))
            mib = self.p.trace_mib
            loop = tracecost.interleaved(
                lambda: tracecost.touch(mib, False), toggle, self.p.trace_pairs
            )
            small, small_wall = tracecost.versus(loop, st.DISARMED)
            armed, armed_wall = tracecost.versus(loop, st.ARMED)
            thp_loop = tracecost.interleaved(
                lambda: tracecost.touch(mib * 4, True), toggle, self.p.trace_pairs
            )
            thp, thp_wall = tracecost.versus(thp_loop, st.DISARMED)
            thp_armed, _ = tracecost.versus(thp_loop, st.ARMED)
            self.results["tracing_workload_slowdown_ratio"] = round(small.ratio, 4)
            self.results["tracing_workload_slowdown_ratio_armed"] = round(armed.ratio, 4)
            node = "bench-tracing"
            self.cp.register_node(node)
            cfg = default_config(sources={"tracing_enabled": True})
            a = self.agent("tracing", node, RealHost(), cfg)
            assert a.proc is not None
            pid = a.proc.pid
            instance = tracefs / "instances" / "memfrag-agent"
            end = time.monotonic() + 30
            while not instance.is_dir() and time.monotonic() < end:
                time.sleep(0.2)
            if not instance.is_dir():
                raise RuntimeError(f"the agent never made {instance}")
            time.sleep(5)  # its start-up is done
            k0, t0 = ticks(pid), time.monotonic()
            time.sleep(self.p.trace_agent_s)
            k1, t1 = ticks(pid), time.monotonic()
            loaded: list[float] = []
            while time.monotonic() - t1 < self.p.trace_agent_s:
                loaded.append(tracecost.touch(mib, False).cpu)
            k2, t2 = ticks(pid), time.monotonic()
            rest = cpu_percent(k1 - k0, CLK_TCK, t1 - t0)
            load = cpu_percent(k2 - k1, CLK_TCK, t2 - t1)
            self.results["tracing_agent_cpu_percent_rest"] = round(rest, 3)
            self.results["tracing_agent_cpu_percent_load"] = round(load, 3)
            m = a.metrics()
            a.stop()  # SIGTERM: the agent removes its instance before tracefs is unmounted

        def ms_of(xs: tuple[float, ...] | list[float]) -> dict[str, float]:
            return {
                k: round(v * 1000, 2) if k != "n" else v for k, v in summarize(list(xs)).items()
            }

        self.details["tracing"] = {
            "workload": f"{mib} MiB anonymous, MADV_NOHUGEPAGE, memset, munmap (order-0 faults)",
            "pairs": self.p.trace_pairs,
            "timed_by": "the thread's CPU time (user+system); wall time beside it",
            "states": "off (no instance), disarmed (every event but kmem:mm_page_alloc: the "
            "default on a healthy node), armed (all: at risk, or tracing_alloc_failures always)",
            "off_cpu_ms": ms_of(small.off),
            "on_cpu_ms": ms_of(small.on),
            "armed_cpu_ms": ms_of(armed.on),
            "armed_ratio_of_minimums": round(armed.ratio_of_minimums, 4),
            "armed_wall_ratio": round(armed_wall.ratio, 4),
            "ratio_of_medians": round(
                statistics.median(small.on) / statistics.median(small.off), 4
            ),
            "ratio_of_minimums": round(small.ratio_of_minimums, 4),
            "pair_ratios": [round(r, 4) for r in small.pair_ratios],
            "wall_ratio": round(small_wall.ratio, 4),
            "off_wall_ms": ms_of(small_wall.off),
            "on_wall_ms": ms_of(small_wall.on),
            "thp_workload": f"{mib * 4} MiB, MADV_HUGEPAGE (order-9 faults)",
            "thp_ratio": round(thp.ratio, 4),
            "thp_ratio_armed": round(thp_armed.ratio, 4),
            "thp_ratio_of_minimums": round(thp.ratio_of_minimums, 4),
            "thp_wall_ratio": round(thp_wall.ratio, 4),
            "thp_off_cpu_ms": ms_of(thp.off),
            "thp_on_cpu_ms": ms_of(thp.on),
            "events_read_while_on": toggle.events,
            "agent_window_s": self.p.trace_agent_s,
            "agent_loaded_rounds": len(loaded),
            "agent_loaded_round_cpu_ms_median": round(statistics.median(loaded) * 1000, 2)
            if loaded
            else None,
            "agent_tracing_errors": m.get("memfrag_tracing_errors_total"),
            "agent_alloc_failures_armed_at_end": m.get("memfrag_tracing_alloc_failures_armed"),
            "agent_traced_failures": sum(
                v for k, v in m.items() if k.startswith("memfrag_traced_allocation_failures_total")
            ),
        }

    # --- the simulated fleet -------------------------------------------------------------------
    def _healthy_condition(self) -> tuple[list[dict[str, str]], str]:
        """The conditions and the summary annotation the agent itself writes on a healthy
        FakeHost (`bench.sim.steady_report`: its own tick decision), so its first cycle finds
        nothing to change."""
        host = FakeHost(self.workdir / "reason-proc")
        cfg = Config()
        a = assess(ProcReader(host.root).observe(False), cfg.assessment)
        return steady_report(a, cfg, time.time())

    def _register(self, names: list[str], level: int, heartbeat: float) -> None:
        """Register each node as a kubelet would (ControlPlane.register_node's labels and
        status) with the condition a long-running agent would have left, its last heartbeat
        spread uniformly over the heartbeat period: the fleet's steady state. One POST with the
        status and one PATCH dropping the admission's not-ready taint per node, on the admin's
        one connection pool (register_node's five calls and a new client per node took
        minutes for 5,000)."""
        (healthy, summary), now = self._healthy_condition(), time.time()
        rng = random.Random(3)
        beats = {n: now - rng.uniform(0, heartbeat) for n in names}

        def register(n: str) -> None:
            status = node_status(n)
            status["conditions"] += [
                dict(
                    c,
                    lastTransitionTime=rfc3339(now - 86400),
                    lastHeartbeatTime=rfc3339(beats[n]),
                )
                for c in healthy
            ]
            body = {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": n,
                    "labels": node_labels(n, {SIM_LABEL: str(level)}),
                    "annotations": {SUMMARY_ANNOTATION: summary},
                },
                "status": status,
            }
            try:
                self.admin.with_retries(self.admin.request, "POST", "/api/v1/nodes", body=body)
            except ApiError as exc:
                if exc.status != 409:  # 409: a retry after a POST that did land (a timeout)
                    raise
            self.admin.with_retries(
                self.admin.request,
                "PATCH",
                f"/api/v1/nodes/{n}",
                body={"spec": {"taints": None}},
                content_type=SMP,
            )

        with ThreadPoolExecutor(8) as ex:
            list(ex.map(register, names))

    def _delete_sim_nodes(self, level: int) -> None:
        sel = {"labelSelector": f"{SIM_LABEL}={level}"}
        self.admin.request("DELETE", "/api/v1/nodes", sel)
        end = time.monotonic() + 120
        while time.monotonic() < end:
            if not self.admin.request("GET", "/api/v1/nodes", dict(sel, limit="1"))["items"]:
                return
            time.sleep(0.5)

    def sim_level(self, n: int, npd_fleet: bool) -> dict[str, Any]:
        cfg = default_config()
        poll = float(cfg["sources"]["poll_interval_seconds"])
        heartbeat = float(cfg["reporting"]["heartbeat_seconds"])
        names = [f"sim{n}-{i:05d}" for i in range(n)]
        t0 = time.monotonic()
        self._register(names, n, heartbeat)
        t_setup = time.monotonic() - t0
        nworkers = max(1, min(SIM_WORKERS_MAX, math.ceil(n / SIM_AGENTS_PER_WORKER)))
        d = self.workdir / f"sim-{n}"
        d.mkdir()
        procs: list[subprocess.Popen[str]] = []
        lines: list[queue.Queue[str]] = []
        for k in range(nworkers):
            spec = {
                "nodes": names[k::nworkers],
                "kubeconfig": str(self.sa),
                "root": str(d / f"w{k}"),
                "config": cfg,
                "max_seconds": 900,
                "start_rate": SIM_START_RATE / nworkers,
                "cycle_threads": 4,
                "sync_timeout": 60 + n / SIM_START_RATE,
            }
            sp = d / f"w{k}.json"
            sp.write_text(json.dumps(spec))
            err = open(d / f"w{k}.log", "w")  # noqa: SIM115
            self.cleanup.append(err.close)
            proc = subprocess.Popen(
                [sys.executable, "-m", "bench.sim", "--spec", str(sp)],
                cwd=REPO,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
            )
            procs.append(proc)
            self.cleanup.append(functools.partial(_kill, proc))
            q: queue.Queue[str] = queue.Queue()
            assert proc.stdout is not None
            threading.Thread(target=_pump, args=(proc.stdout, q), daemon=True).start()
            lines.append(q)
        synced: list[list[str]] = []
        for q in lines:  # each stage bounded on its own: building the agents takes a while
            _expect(q, "built", 60 + n / 20)
        for q in lines:
            synced.append(_expect(q, "synced", 120 + n / SIM_START_RATE).split())
        for q in lines:
            _expect(q, "ready", poll + 60)
        t_ready = time.monotonic() - t0
        pid = self.apiserver_pid()
        before = self.scrape()
        a0 = ticks(pid) if pid else 0
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("measure\n")
            proc.stdin.flush()
        time.sleep(self.p.sim_window_s)
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("stop\n")
            proc.stdin.flush()
        after = self.scrape()
        secs = after[1] - before[1]
        a1 = ticks(pid) if pid else 0
        api_rss = rss_mib(pid) if pid else None
        results = [json.loads(_expect(q, "result", 120)[len("result ") :]) for q in lines]
        for proc in procs:
            _kill(proc)
        win, counts = self.api_window(before, after)
        non_watch = sum(v for k, v in counts.items() if k[0] not in LONG_RUNNING_VERBS)
        writes = total(counts, writes_only=True)
        per_agent = int(synced[0][3]) if len(synced[0]) > 3 else 2
        watch_renewals = per_agent * n / WATCH_TIMEOUT_S
        overruns = sum(int(r["overruns"]) for r in results)
        starved = sum(int(r["agents_without_cycle"]) for r in results)
        unsynced = sum(int(r["unsynced"]) + int(r["informers_unhealthy"]) for r in results)
        errors = sum(int(r["client_errors"]) + int(r["failed_cycles"]) for r in results)
        client_p99 = max((r["client_p99_s"] for r in results if r["client_p99_s"]), default=None)
        ok, why = sustains(overruns + starved, unsynced, errors, win.p99_s, client_p99)
        level: dict[str, Any] = {
            "nodes": n,
            "workers": nworkers,
            "sustained": ok,
            "why_not": why,
            "window_s": round(secs, 1),
            "setup_s": round(t_setup, 1),
            "ready_s": round(t_ready, 1),
            "sync_s": [float(s[1]) for s in synced],
            "nonwatch_requests": non_watch,
            "writes": writes,
            "nonwatch_requests_per_s": round(non_watch / secs, 3),
            "watches_per_agent": per_agent,
            "watch_renewals_per_s": round(watch_renewals, 3),
            "requests_per_s": round(non_watch / secs + watch_renewals, 3),
            "writes_per_s": round(writes / secs, 3),
            "requests_by_verb_resource": {"/".join(k): v for k, v in sorted(counts.items())},
            "apiserver_p50_ms": ms(win.p50_s),
            "apiserver_p99_ms": ms(win.p99_s),
            "client_p99_ms": ms(client_p99),
            "watches_open": win.watches_open,
            "apiserver_cpu_percent": round(cpu_percent(a1 - a0, CLK_TCK, secs), 1) if pid else None,
            "apiserver_rss_mib": round(api_rss, 1) if api_rss else None,
            "cycles": sum(int(r["cycles"]) for r in results),
            "overruns": overruns,
            "agents_without_cycle": starved,
            "lateness_ms_max": round(max(float(r["lateness_s_max"]) for r in results) * 1000, 1),
            "cycle_ms_p99": round(max(float(r["cycle_s_p99"]) for r in results) * 1000, 2),
            "workers_cpu_percent": round(
                sum(cpu_percent(r["cpu_ticks"], r["clk_tck"], secs) for r in results), 1
            ),
            "workers_rss_mib": round(sum(r["rss_kib"] for r in results) / 1024, 1),
            "workers_threads": sum(int(r["threads"]) for r in results),
            "client_requests": sum(int(r["client_requests"]) for r in results),
        }
        if npd_fleet:
            level["npd_fleet"] = self.npd_fleet(names)
        self._delete_sim_nodes(n)
        return level

    def npd_fleet(self, names: list[str]) -> dict[str, Any]:
        fleet = npd.NpdFleet(Kube.from_environment(str(self.sa)), names)
        before = self.scrape()
        client_writes = fleet.run(self.p.npd_fleet_window_s)
        after = self.scrape()
        secs = after[1] - before[1]
        _, counts = self.api_window(before, after)
        writes = total(counts, writes_only=True)
        self.results["npd_api_writes_per_node_hour_steady"] = round(
            per_hour(writes, secs) / len(names), 2
        )
        return {
            "nodes": len(names),
            "window_s": round(secs, 1),
            "writes_server_side": writes,
            "writes_client_side": client_writes,
            "heartbeat_s": npd.HEARTBEAT_PERIOD,
            "npd_api_writes_per_node_hour_model": npd_heartbeat_writes_per_hour(
                npd.HEARTBEAT_PERIOD
            ),
        }

    def sim(self) -> None:
        levels: list[dict[str, Any]] = []
        self.details["sim_levels"] = levels
        end = time.monotonic() + self.p.sim_budget_s
        setup_per_node: float | None = None
        mem_per_node: float | None = None
        todo = list(self.p.sim_levels)
        bisected = False
        while todo:
            n = todo.pop(0)
            left = end - time.monotonic()
            fixed = 16 + self.p.sim_window_s + 30  # first round, window, teardown
            if setup_per_node is not None and setup_per_node * n * 1.1 + fixed > left:
                self.notes.append(f"sim: {n} nodes not tried (time budget of the sim phase)")
                break
            avail = _mem_available_mib()
            if mem_per_node is not None and mem_per_node * n * 1.5 > 0.7 * avail:
                self.notes.append(f"sim: {n} nodes not tried (memory: {avail:.0f} MiB free)")
                break
            if 4 * n + 500 > _pid_room():
                self.notes.append(f"sim: {n} nodes not tried (not enough pids for its threads)")
                break
            log(f"sim: {n} nodes")
            try:
                lv = self.sim_level(n, npd_fleet=n == self.p.npd_fleet_level)
            except Exception as exc:  # the level could not even be measured: it failed
                lv = {"nodes": n, "sustained": False, "why_not": [f"{type(exc).__name__}: {exc}"]}
                with contextlib.suppress(Exception):
                    self._delete_sim_nodes(n)
            finally:
                while self.cleanup:
                    with contextlib.suppress(Exception):
                        self.cleanup.pop()()
            levels.append(lv)
            self.save()
            log(
                f"sim: {n} nodes sustained={lv['sustained']} {lv.get('requests_per_s')} req/s "
                f"p99 {lv.get('apiserver_p99_ms')} ms, ready in {lv.get('ready_s')} s "
                f"{lv['why_not']}"
            )
            if "ready_s" in lv:
                setup_per_node = max(0.0, lv["ready_s"] - 16) / n
                mem_per_node = (lv["workers_rss_mib"] + (lv["apiserver_rss_mib"] or 0)) / n
            if not lv["sustained"]:
                best = max((int(x["nodes"]) for x in levels if x["sustained"]), default=0)
                mid = (best + n) // 2 // 500 * 500
                if not bisected and best < mid < n:
                    bisected = True  # one bisection step between the last good and this one
                    todo = [mid]
                    continue
                break
        ok = [lv for lv in levels if lv["sustained"]]
        for lv in levels:
            if lv["nodes"] in (100, 1000):
                self.results[f"sim_{lv['nodes']}_requests_per_s"] = lv.get("requests_per_s")
                self.results[f"sim_{lv['nodes']}_writes_per_s"] = lv.get("writes_per_s")
        if ok:
            top = max(ok, key=lambda lv: int(lv["nodes"]))
            self.results["sim_nodes_max"] = top["nodes"]
            self.results["sim_apiserver_requests_per_s"] = top["requests_per_s"]
            self.results["sim_apiserver_p99_ms_at_max"] = top["apiserver_p99_ms"]
            nonwatch = slope_through_origin(
                [(lv["nodes"], lv["nonwatch_requests_per_s"]) for lv in ok]
            )
            per_write = slope_through_origin([(lv["nodes"], lv["writes_per_s"]) for lv in ok])
            watches = int(top.get("watches_per_agent", 2))
            per_node = nonwatch + watches / WATCH_TIMEOUT_S
            self.results["sim_5000_projected_requests_per_s"] = round(
                project(per_node, PROJECT_TO), 2
            )
            self.results["sim_5000_projected_writes_per_s"] = round(
                project(per_write, PROJECT_TO), 3
            )
            node_seconds = sum(lv["nodes"] * lv["window_s"] for lv in ok)
            fleet_writes = sum(lv["writes"] for lv in ok)
            self.results["api_writes_per_node_hour_fleet"] = round(
                per_hour(fleet_writes, node_seconds), 2
            )
            self.details["projection"] = {
                "formula": f"R(N) = N * (a + {watches}/{WATCH_TIMEOUT_S:.0f}), W(N) = N * w; a, "
                "w = least-squares slopes through the origin of measured non-watch requests/s "
                f"and writes/s over the sustained levels; {watches}/{WATCH_TIMEOUT_S:.0f} = the "
                f"agent's {watches} watches, each renewed every {WATCH_SECONDS_MIN}-"
                f"{WATCH_SECONDS_MAX} s (timeoutSeconds, uniform)",
                "a_nonwatch_requests_per_node_s": nonwatch,
                "w_writes_per_node_s": per_write,
                "levels_used": [lv["nodes"] for lv in ok],
            }
        if ok and max(int(lv["nodes"]) for lv in ok) == self.p.sim_levels[-1]:
            self.notes.append(
                f"sim_nodes_max is a lower bound: the largest level tried "
                f"({self.p.sim_levels[-1]}) was sustained"
            )

    def image(self) -> None:
        """The image from the Dockerfile on the real node (its own control plane beside the
        bench's): RSS and CPU of the agent's container after a quiet window."""
        got = bench_image.measure(self.workdir / "image", self.p.image_window_s, CLK_TCK)
        self.details["image"] = got
        self.results["image_agent_rss_mib"] = got["rss_mib"]
        self.results["image_agent_cpu_percent"] = got["cpu_percent"]

    # --- all -----------------------------------------------------------------------------------
    def run(self, phases: list[str]) -> None:
        table: dict[str, Callable[[], None]] = {
            "steady": self.steady,
            "detect": self.detect,
            "flood": self.flood,
            "episode": self.episode,
            "sim": self.sim,
            "tracing": self.tracing,
            "image": self.image,
        }
        self.notes.extend(NOTES)
        log(f"mode {self.p.name}; machine {self.machine}")
        log("starting the control plane")
        self.start_plane()
        try:
            self.phase("baseline+assess", self.baseline_and_assess)
            for name in phases:
                self.phase(name, table[name])
        finally:
            self.cp.stop()
        self.save()


NOTES = [
    "Detection latency: from the write of the kernel-log line (the fake /proc flipped to "
    "fragmented just before) to the arrival, on a raw watch of the Node (fieldSelector "
    "metadata.name), of the event carrying MemoryFragmented=True. Poll interval 600 s, so only "
    "the kernel-log trigger can explain it. fragmented_for_seconds=healthy_for_seconds=0; each "
    "trial resets to healthy and waits for False (and no taint) first.",
    "API counts are the API server's own (apiserver_request_total diffs from /metrics, "
    "non-resource URLs excluded). Taken out: the server's identity Lease renewals in "
    "kube-system (every 10 s; counted exactly by a watch), any background rate seen in an idle "
    "window at start, and requests on resources the agent's RBAC does not grant (the API "
    "server's own informers' watch renewals and repair LISTs on serviceaccounts, services, "
    "...; listed in details.other_requests_left_out). Its own informers' renewals on nodes or "
    "pods, if any fall in a window, cannot be told apart and stay in.",
    "Steady writes: default config (poll 15 s, heartbeat 900 s). A healthy agent writes only "
    "heartbeats, 3600/900 = 4 per hour; a window shorter than 900 s sees 0 or 1 of them, so the "
    "single-agent number is coarse. api_writes_per_node_hour_fleet measures the same with many "
    "(simulated) agents whose last heartbeats are spread over 900 s, as in a fleet that has run "
    "for a while; npd_api_writes_per_node_hour_steady uses the same method for NPD's pattern.",
    "NPD defaults (kubernetes/node-problem-detector): pkg/exporters/k8sexporter/condition/"
    "manager.go: updatePeriod = 1 s (sync loop tick), resyncPeriod = 10 s (only after a failed "
    "write), heartbeat = --k8s-exporter-heartbeat-period, default 5m in pkg/exporters/"
    "k8sexporter/options/options.go (older releases: const heartbeatPeriod = 1 min, i.e. 60 "
    "writes/node/h); problemclient/problem_client.go SetConditions PATCHes nodes/status with ALL "
    "conditions and a new lastHeartbeatTime. Default DaemonSet conditions: KernelDeadlock, "
    "ReadonlyFilesystem, XfsShutdown (kernel-monitor.json), CorruptDockerOverlay2 "
    "(docker-monitor.json); FrequentKubeletRestart & co come from systemd-monitor-counter.json, "
    "not enabled by default. NPD has no page-allocation-failure rule: the replay adds a custom "
    "permanent rule (condition MemoryFragmented), 5 conditions in all. NPD's kmsg conditions "
    "never clear by themselves (permanent until restart); the replay's reset line stands in for "
    "that. The replay is Python, not NPD's Go binary: its latency is NPD's design (1 s tick) "
    "plus Python's overheads, which are small next to the tick.",
    "Simulated fleet: real agent.daemon.loop.Agent objects (own Kube, ConfigFile, "
    "ProcReader over a FakeHost, every informer the Agent has, each with its watch) in worker "
    "processes; a shared scheduler calls reload_config()+cycle([]) once per poll interval "
    "(default 15 s, not shortened, so nothing is scaled back) instead of Agent.run(); "
    "no HTTP server, no kernel-log "
    "thread. Nodes have no kubelet, so no other writer changes them. Sustained = every cycle ended"
    " within one poll interval of being due, every agent cycled in the window, every informer "
    "synced and healthy, no API error, server- and client-side p99 of non-watch requests under 1 "
    "s.",
    "Simulated agents start at 25/s in total (a DaemonSet rollout: the chart's maxUnavailable "
    "10% replaces 500 of 5,000 pods at a time, ~20 s each), each cycling first as it starts. "
    "Faster ramps measure a cold-start herd on this 2-core machine instead: at 50/s, with the "
    "first cycles (node-record Lease GET, condition PATCH) among the LISTs and WATCHes, 5,000 "
    "agents got thousands of 429s from API Priority and Fairness (all agents share one "
    "ServiceAccount, one flow) and did not all sync within 200 s.",
    "The agent runs a finding-triggered cycle at most once per agent.daemon.loop.MIN_CYCLE_GAP "
    "(1 s): a line arriving sooner after its previous cycle waits for the gap (~1,020 ms was "
    "measured that way). Detection trials start at least 1.25 s after the previous cycle, as an "
    "isolated allocation failure would.",
    f"Requests/s of a level = measured non-watch requests/s + k*N/{WATCH_TIMEOUT_S:.0f} watch "
    "renewals/s (each of an agent's k watches asks for bookmarks and ends after timeoutSeconds, "
    f"uniform over {WATCH_SECONDS_MIN}-{WATCH_SECONDS_MAX} s, and is re-opened with one GET "
    "from its last bookmark; a short window right after start-up sees none of them, so they are "
    "added from the model). Projection to 5,000 nodes is linear per node (see "
    "details.projection).",
    "The kmsg flood writes 10,000 unrelated lines per second into the real /dev/kmsg (one "
    "write() per record, level 6, printk_devkmsg on for its duration; as root, else into the "
    "agent's FIFO), in batches every 5 ms, with 5 page-allocation-failure lines spread among "
    "them; kmsg_flood_markers_lost counts those the agent's findings counter did not see.",
]


def condition_writes(agent_log: str, start: float, end: float) -> list[dict[str, Any]]:
    """The agent's "condition written" log lines between two wall times: what each write of a
    window said (a heartbeat repeats the words; a change of words is why the others came)."""
    out = []
    for line in agent_log.splitlines():
        try:
            rec = json.loads(line)
            ts = datetime.strptime(rec["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
        except (ValueError, KeyError, TypeError):
            continue
        if rec.get("msg") == "condition written" and start <= ts.timestamp() <= end:
            out.append({k: rec.get(k) for k in ("ts", "status", "reason", "text")})
    return out


WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def agent_requests(metrics: dict[str, float]) -> dict[str, int]:
    """memfrag_api_requests_total by method, from the agent's /metrics: what it sent, which
    the API server's own counters cannot tell from its own reflectors' watches."""
    out = {}
    for k, v in metrics.items():
        if k.startswith('memfrag_api_requests_total{method="'):
            out[k.split('"')[1]] = int(v)
    return out


def _findings(metrics: dict[str, float]) -> float:
    return sum(v for k, v in metrics.items() if k.startswith("memfrag_kernel_log_findings_total"))


def _mem_available_mib() -> float:
    for line in read_text(Path("/proc/meminfo")).splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _pid_room() -> int:
    """pid_max minus the threads that exist now (/proc/loadavg's 4th field: running/total)."""
    pid_max = int(read_text(Path("/proc/sys/kernel/pid_max")))
    threads = int(read_text(Path("/proc/loadavg")).split()[3].split("/")[1])
    return pid_max - threads


def _pump(stream: IO[str], q: queue.Queue[str]) -> None:
    for line in stream:
        q.put(line.rstrip("\n"))


def _expect(q: queue.Queue[str], prefix: str, timeout: float) -> str:
    end = time.monotonic() + timeout
    while True:
        left = end - time.monotonic()
        if left <= 0:
            raise RuntimeError(f"sim worker: no '{prefix}' line within {timeout:.0f} s")
        try:
            line = q.get(timeout=left)
        except queue.Empty:
            continue
        if line.startswith(prefix):
            return line


def _stop_agent(a: AgentProcess) -> None:
    a.stop(signal.SIGKILL)


def _kill(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.3f}" if abs(v) < 10 else f"{v:,.1f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def table(results: dict[str, Any]) -> str:
    rows = [(k, fmt(results.get(k)), unit, what) for k, (unit, what) in KEYS.items()]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    out = []
    for k, v, unit, what in rows:
        out.append(f"{k:<{widths[0]}}  {v:>{widths[1]}}  {unit:<{widths[2]}}  {what}")
    return "\n".join(out)


def markdown(results: dict[str, Any]) -> str:
    """The README's benchmark table: every key with its value, unit and what it measures."""
    out = ["| key | value | unit | what it measures |", "|---|---|---|---|"]
    for k, (unit, what) in KEYS.items():
        out.append(f"| `{k}` | {fmt(results.get(k))} | {unit} | {what} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    p.add_argument("--quick", action="store_true", help="short windows, few trials (smoke run)")
    p.add_argument("--out", type=Path, default=REPO / "out" / "bench.json")
    p.add_argument("--workdir", type=Path, default=REPO / "out" / "bench")
    p.add_argument(
        "--phases",
        default="steady,detect,flood,episode,sim,tracing,image",
        help="comma-separated subset, in order (baseline+assess always runs)",
    )
    p.add_argument("--sim-levels", help="comma-separated fleet sizes (default: the mode's)")
    p.add_argument(
        "--steady-seconds", type=float, help="the steady window (default: full 1800, quick 30)"
    )
    p.add_argument(
        "--markdown",
        type=Path,
        metavar="BENCH_JSON",
        help="print the README's table of a finished run's out/bench.json and exit",
    )
    args = p.parse_args(argv)
    if args.markdown:
        print(markdown(json.loads(args.markdown.read_text())))
        return 0
    profile = QUICK if args.quick else FULL
    if args.sim_levels:
        levels = tuple(int(x) for x in args.sim_levels.split(","))
        profile = dataclasses.replace(profile, sim_levels=levels)
    if args.steady_seconds:
        profile = dataclasses.replace(profile, steady_s=args.steady_seconds)
    phases = [x for x in args.phases.split(",") if x]
    bench = Bench(profile, args.workdir.resolve(), args.out.resolve())
    try:
        bench.run(phases)
    except (ApiError, OSError, RuntimeError) as exc:
        bench.notes.append(f"aborted: {type(exc).__name__}: {exc}")
        bench.save()
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    print()
    print(f"memfrag-agent bench ({profile.name}) on {bench.machine}")
    print(table(bench.results))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
