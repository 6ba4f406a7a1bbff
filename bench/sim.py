"""Many simulated nodes, each running the REAL agent code (agent.daemon.loop.Agent) over its
own fake /proc tree, against the local kube-apiserver.

One worker process (`python -m bench.sim --spec FILE`) holds a slice of the nodes. Per node it
builds what `memfrag-agent run` builds: an Agent with its own Kube (own connection pool, the
ServiceAccount's token), its own ConfigFile and a ProcReader on a FakeHost, and starts every
informer the Agent has (each a thread and an HTTPS watch: its Node, its pods, sandbox-failure
Events at the time of writing). What differs from `Agent.run()`: no HTTP server, no kernel-log
thread and no signal handlers; instead of one loop per agent, a shared scheduler calls
`reload_config()` + `cycle([])` for every agent once per poll interval (next due = end of its
last cycle + poll interval, as run() schedules), on a small thread pool. The per-node API
pattern is unchanged: the same watches, the same writes.

The coordinator talks to workers over stdin/stdout: a worker prints `built` once its agents
exist, `synced` once their informers have listed (or the sync timeout passed), then `ready`
once every agent has cycled once; on `measure` it opens the window, on `stop` it prints
`result {json}` and exits.
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from agent.assess.verdict import Assessment
from agent.config.model import Config
from agent.config.reload import ConfigFile
from agent.daemon import logs
from agent.daemon.loop import Agent
from agent.decide.cycle import Facts, TickState, decide_tick
from agent.decide.nodeview import NodeView
from agent.kernel.procfs import ProcReader
from agent.kube.client import JSON, ApiError, Kube
from agent.kube.informer import Informer
from bench.stats import percentile, proc_stat_ticks, vm_rss_kib
from tests.cluster.fakehost import FakeHost
from tests.cluster.rbac import NAMESPACE


class TimedKube(Kube):
    """The agent's Kube, timing each non-watch request as the agent experiences it."""

    def __init__(self, api_client: Any, timeout: float = 15.0) -> None:
        super().__init__(api_client, timeout)
        self.calls: list[tuple[float, str, float, bool]] = []  # (start, method, seconds, ok)

    def request(
        self,
        method: str,
        path: str,
        query: dict[str, Any] | None = None,
        body: Any = None,
        content_type: str | None = None,
        timeout: float | None = None,
    ) -> JSON:
        t0, ok = time.monotonic(), False
        try:
            out = super().request(method, path, query, body, content_type, timeout)
            ok = True
            return out
        finally:
            self.calls.append((t0, method, time.monotonic() - t0, ok))


@dataclass
class Cycle:
    agent: int
    due: float
    start: float
    end: float
    ok: bool


class Scheduler:
    """Calls each agent's cycle once per poll interval on a bounded thread pool. An agent's
    first cycle is due when it starts (`add`), as `Agent.run()` cycles at once after waiting
    up to 10 s for its Node's informer to sync: the first cycles (each reads its node record
    Lease and may write its condition) follow the rollout, not all in the first poll interval
    after the last agent started (5,000 first cycles in 15 s was a herd no rollout makes)."""

    FIRST_SYNC_WAIT = 10.0  # Agent.run(): reporter.node_inf.synced.wait(10)

    def __init__(self, agents: list[Agent], poll: float, threads: int) -> None:
        self.agents, self.poll = agents, poll
        self.heap: list[tuple[float, int]] = []
        self.added: dict[int, float] = {}
        self.cycled: set[int] = set()
        self.cycles: list[Cycle] = []
        self.cv = threading.Condition()
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="cycle")
        self.stopped = False

    def add(self, i: int) -> None:
        """Agent i has started: its first cycle is due now."""
        with self.cv:
            now = time.monotonic()
            self.added[i] = now
            heapq.heappush(self.heap, (now, i))
            self.cv.notify()

    def start(self) -> None:
        threading.Thread(target=self._loop, name="scheduler", daemon=True).start()

    def _loop(self) -> None:
        while True:
            with self.cv:
                if self.stopped:
                    return
                now = time.monotonic()
                due: list[tuple[float, int]] = []
                while self.heap and self.heap[0][0] <= now:
                    due.append(heapq.heappop(self.heap))
                if not due:
                    wait = self.heap[0][0] - now if self.heap else 1.0
                    self.cv.wait(min(1.0, max(0.0, wait)))
                    continue
            for at, i in due:
                self.pool.submit(self._job, i, at)

    def _job(self, i: int, due: float) -> None:
        agent = self.agents[i]
        start = time.monotonic()
        first = i not in self.cycled
        rep = agent.reporter
        waiting = rep is not None and not rep.node_inf.synced.is_set()
        if first and waiting and start - self.added[i] < self.FIRST_SYNC_WAIT:
            with self.cv:  # as run() waits for the sync: not a cycle yet
                heapq.heappush(self.heap, (start + 0.25, i))
                self.cv.notify()
            return
        ok = True
        try:
            agent.reload_config()
            agent.cycle([])
        except Exception as exc:  # a failing cycle is a result, not a crash of the worker
            ok = False
            print(f"agent {agent.node_name}: cycle failed: {exc!r}", file=sys.stderr)
        end = time.monotonic()
        self.cycles.append(Cycle(i, due, start, end, ok))
        with self.cv:
            self.cycled.add(i)
            heapq.heappush(self.heap, (end + self.poll, i))
            self.cv.notify()

    def stop(self) -> None:
        with self.cv:
            self.stopped = True
            self.cv.notify()


def steady_report(a: Assessment, cfg: Config, wall: float) -> tuple[list[dict[str, str]], str]:
    """What a long-running agent has left on a healthy Node: every condition and the summary
    annotation its first tick writes to a Node without them (its own decide_tick, so a
    condition added to the agent's write is seeded too: the Unremediable condition missing
    from the seed made every simulated agent's first cycle write during the rollout and time
    its next heartbeat from there, so a short window right after it saw no heartbeat)."""
    empty = NodeView(name="x", uid="x", resource_version="1", condition=None, taints=())
    d = decide_tick(Facts(now=0.0, wall=wall, assessment=a, view=empty), TickState(), cfg)
    r = d.report
    if r is None or r.condition is None or r.summary is None:
        raise RuntimeError("the agent's first tick wrote nothing on a Node without a condition")
    conds = [r.condition] + ([r.unremediable] if r.unremediable is not None else [])
    return [c.to_json() for c in conds], r.summary


def informers(agent: Agent) -> list[Informer]:
    """Every watch Agent.start() starts (Agent.informers()), so the simulation follows the agent
    when it gains or loses one."""
    return agent.informers()


def _say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _self_ticks() -> int:
    return proc_stat_ticks(Path("/proc/self/stat").read_text())


def worker(spec: dict[str, Any]) -> int:
    logs.setup("text", "WARNING")  # the agents' warnings with their fields (which call, why)
    # Threads only block in socket reads: 1 MiB of stack is ample and keeps thousands cheap.
    threading.stack_size(int(spec.get("stack_kib", 1024)) * 1024)
    deadline = time.monotonic() + float(spec["max_seconds"])

    def watchdog() -> None:
        time.sleep(max(0.0, deadline - time.monotonic()))
        print("worker: max_seconds reached, exiting", file=sys.stderr)
        os._exit(3)

    threading.Thread(target=watchdog, daemon=True).start()
    root = Path(spec["root"])
    root.mkdir(parents=True, exist_ok=True)
    cfg_path = root / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(spec["config"]))
    poll = float(spec["config"]["sources"]["poll_interval_seconds"])
    agents: list[Agent] = []
    kubes: list[TimedKube] = []
    for name in spec["nodes"]:
        host = FakeHost(root / name)
        kube = TimedKube(Kube.from_environment(spec["kubeconfig"]).api)
        kubes.append(kube)
        cfg = ConfigFile(str(cfg_path))
        agents.append(Agent(name, kube, cfg, ProcReader(host.root), NAMESPACE))
    _say(f"built {len(agents)}")
    t0 = time.monotonic()
    # A DaemonSet rolls out gradually; starting thousands of agents in the same second only
    # measures a thundering herd (429s from API Priority and Fairness). Ramp at start_rate/s.
    rate = float(spec.get("start_rate", 50))
    infs = [informers(a) for a in agents]
    sched = Scheduler(agents, poll, int(spec.get("cycle_threads", 8)))
    sched.start()
    for i, group in enumerate(infs):
        time.sleep(max(0.0, t0 + i / rate - time.monotonic()))
        for inf in group:
            inf.start()
        sched.add(i)
    every = [inf for group in infs for inf in group]
    sync_deadline = time.monotonic() + float(spec.get("sync_timeout", 180))
    while time.monotonic() < sync_deadline:
        if all(inf.synced.is_set() for inf in every):
            break
        time.sleep(0.2)
    unsynced = sum(not inf.synced.is_set() for inf in every)
    _say(f"synced {time.monotonic() - t0:.1f} {unsynced} {len(infs[0]) if infs else 0}")
    first_deadline = time.monotonic() + poll + Scheduler.FIRST_SYNC_WAIT + 30
    while len(sched.cycled) < len(agents) and time.monotonic() < first_deadline:
        time.sleep(0.2)  # every agent has run its first cycle (or the bound passed: said below)
    time.sleep(1)
    _say("ready")

    line = sys.stdin.readline().strip()
    if line != "measure":
        return 2
    w0, ticks0 = time.monotonic(), _self_ticks()
    req0 = sum(k.requests_total for k in kubes)
    errs0 = sum(inf.errors for inf in every)
    line = sys.stdin.readline().strip()
    w1, ticks1 = time.monotonic(), _self_ticks()
    req1 = sum(k.requests_total for k in kubes)
    errs1 = sum(inf.errors for inf in every)
    sched.stop()

    cycles = [c for c in list(sched.cycles) if w0 <= c.start < w1]
    durations = [c.end - c.start for c in cycles]
    late = [c.start - c.due for c in cycles]
    overruns = sum(1 for c in cycles if c.end - c.due > poll)
    ran = {c.agent for c in cycles}
    calls = [c for k in kubes for c in list(k.calls) if w0 <= c[0] < w1]
    lat = [c[2] for c in calls]
    by_method: dict[str, int] = {}
    for c in calls:
        by_method[c[1]] = by_method.get(c[1], 0) + 1
    result = {
        "nodes": len(agents),
        "window_s": w1 - w0,
        "cycles": len(cycles),
        "failed_cycles": sum(1 for c in cycles if not c.ok),
        "overruns": overruns,
        "agents_without_cycle": len(agents) - len(ran),
        "lateness_s_max": max(late, default=0.0),
        "lateness_s_p99": percentile(late, 99) if late else 0.0,
        "cycle_s_p50": percentile(durations, 50) if durations else 0.0,
        "cycle_s_p99": percentile(durations, 99) if durations else 0.0,
        "cycle_s_max": max(durations, default=0.0),
        "client_requests": req1 - req0,
        "client_requests_by_method": by_method,
        "client_errors": sum(1 for c in calls if not c[3]),
        "client_p99_s": percentile(lat, 99) if lat else None,
        "informer_errors": errs1 - errs0,
        "informers_unhealthy": sum(not inf.healthy for inf in every),
        "informers_per_agent": len(infs[0]) if infs else 0,
        "unsynced": unsynced,
        "cpu_ticks": ticks1 - ticks0,
        "clk_tck": os.sysconf("SC_CLK_TCK"),
        "rss_kib": vm_rss_kib(Path("/proc/self/status").read_text()),
        "threads": threading.active_count(),
    }
    _say("result " + json.dumps(result))
    sys.stdout.flush()
    os._exit(0)  # informer threads sit in blocking watch reads: do not wait for them


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.sim")
    p.add_argument("--spec", required=True, type=Path)
    args = p.parse_args(argv)
    try:
        return worker(json.loads(args.spec.read_text()))
    except ApiError as exc:
        print(f"worker: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
