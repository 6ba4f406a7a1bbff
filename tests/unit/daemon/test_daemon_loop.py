"""The Agent with every part, over the in-memory API and a fake clock (and without an API:
standalone): a tick runs findings → observe → assess → decide once → carry out → record."""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from agent.daemon.loop import Agent
from agent.daemon.remediator import Ran
from agent.decide.ladder import Step
from agent.kernel.kmsg import scan
from agent.kernel.procfs import ProcReader
from agent.kernel.writes import ActionResult
from agent.kube import paths
from tests.unit.daemon.parts import (
    FRAGMENTED,
    HEALTHY,
    UNMOVABLE,
    CountingReader,
    Host,
    config_file,
    rewrite,
    stuck_pod,
)
from tests.unit.kube.fakekube import Clock, FakeKube

FAST: dict[str, dict[str, Any]] = {
    "sources": {"kmsg_enabled": False},
    "reporting": {
        "fragmented_for_seconds": 10,
        "healthy_for_seconds": 10,
        "max_tainted_percent": 100,
        "metrics_port": 0,
        "metrics_address": "127.0.0.1",
    },
}


def sample(agent: Agent, name: str, labels: dict[str, str] | None = None) -> float:
    v = agent.metrics.registry.get_sample_value(name, labels or {})
    return 0.0 if v is None else v


class World:
    def __init__(self, tmp: Path, config: dict[str, Any] | None = None, api: bool = True) -> None:
        self.kube = FakeKube() if api else None
        self.host = Host(tmp, HEALTHY)
        self.reader = CountingReader(self.host)
        self.clock = Clock()
        values = {k: dict(v) for k, v in FAST.items()}
        for section, more in (config or {}).items():
            values.setdefault(section, {}).update(more)
        self.config = config_file(tmp, values)
        if self.kube is not None:
            self.kube.add_node("n1")
        self.agent = Agent(
            "n1", self.kube, self.config, self.reader, "ns", "pod-a", time.time, self.clock
        )
        if self.agent.reporter is not None and self.kube is not None:
            self.agent.reporter.node_inf.offer(self.kube.objects[paths.node("n1")])

    def tick(self, dt: float = 0.0) -> None:
        self.clock.t += dt
        self.agent.cycle([])

    def node(self) -> dict[str, Any]:
        assert self.kube is not None
        return self.kube.objects[paths.node("n1")]

    def condition(self) -> dict[str, Any] | None:
        conds = self.node()["status"].get("conditions") or []
        return conds[0] if conds else None

    def tainted(self) -> bool:
        return bool(self.node()["spec"].get("taints"))

    def events(self) -> list[str]:
        assert self.kube is not None
        return [o["reason"] for k, o in self.kube.objects.items() if "/events/" in k]


def compaction_that_works(w: World) -> list[str]:
    """The kernel write stood in for: the host turns healthy; the steps run are listed."""
    ran: list[str] = []

    def runner(step: Step, reader: ProcReader, timeout: float) -> ActionResult:
        ran.append(step.name)
        w.host.be(HEALTHY)
        return ActionResult(True, 0.1)

    w.agent.remediator.runner = runner
    w.agent.remediator.settle = 0
    return ran


def test_reload_config_works_on_an_agent_never_started(tmp_path: Path) -> None:
    """Before: `reload_config()` used self.kmsg, set only by start(): AttributeError."""
    w = World(tmp_path, {"sources": {"kmsg_enabled": True, "kmsg_path": "/nonexistent"}})
    rewrite(w.config, "sources:\n  accept_user_facility: true\n  poll_interval_seconds: 30\n")
    w.agent.reload_config()
    assert sample(w.agent, "memfrag_config_reloads_total", {"result": "ok"}) == 1
    assert w.agent.kmsg is not None and w.agent.kmsg.accept_user_facility
    assert w.agent.health.max_age == 3 * 30 + 30
    rewrite(w.config, "sources: [not, a, mapping]\n")
    w.agent.reload_config()
    assert sample(w.agent, "memfrag_config_valid") == 0
    w.tick()
    assert "ConfigInvalid" in w.events()


def test_a_fragmented_node_is_reported_tainted_and_cleared(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.tick()
    c = w.condition()
    assert c is not None and c["status"] == "False"
    w.host.be(FRAGMENTED)
    w.tick(1)
    c = w.condition()
    assert c is not None and c["status"] == "True" and not w.tainted()
    assert "FragmentationDetected" in w.events()
    w.tick(10)
    assert w.tainted() and "NodeTainted" in w.events()
    assert sample(w.agent, "memfrag_tainted") == 1
    assert sample(w.agent, "memfrag_condition_true") == 1
    w.host.be(HEALTHY)
    w.tick(1)
    assert w.tainted()  # held until healthy for healthy_for_seconds
    w.tick(10)
    assert not w.tainted()
    assert (w.condition() or {}).get("status") == "False"
    assert {"Recovered", "TaintRemoved"} <= set(w.events())


def test_the_taint_slot_is_asked_before_deciding_and_decide_runs_once(tmp_path: Path) -> None:
    """A cap of one node, held by another: TaintSkipped, and no second decision."""
    w = World(tmp_path, {"reporting": {"max_tainted_percent": 1}})
    assert w.kube is not None
    w.kube.add_node("n2")
    from agent.kube.leases import Semaphore

    assert Semaphore(w.kube, "ns", "memfrag-taint", "pod-b", owner="n2").acquire(1, 600)
    w.host.be(FRAGMENTED)
    w.tick()
    w.tick(10)
    assert not w.tainted() and "TaintSkipped" in w.events()


def test_stuck_pods_are_deleted_when_the_node_recovers(tmp_path: Path) -> None:
    w = World(tmp_path, {"remediation": {"delete_stuck_pods": True}})
    assert w.kube is not None and w.agent.stuck is not None
    pod = w.kube.put(paths.pod("default", "web"), stuck_pod("web", "n1"))
    w.agent.stuck.pods.offer(pod)
    w.host.be(FRAGMENTED)
    w.tick()
    assert "1 pod(s) stuck in ContainerCreating: default/web" in (w.condition() or {})["message"]
    assert sample(w.agent, "memfrag_stuck_pods") == 1
    w.host.be(HEALTHY)
    w.tick(1)
    assert paths.pod("default", "web") in w.kube.objects  # not recovered yet
    w.tick(10)
    assert paths.pod("default", "web") not in w.kube.objects
    assert "StuckPodDeleted" in w.events()
    w.agent.stuck.stop()


def test_a_tick_that_remediates_observes_the_kernel_twice(tmp_path: Path) -> None:
    """Before: the tick observed once and the run three more times (the page cache before, the
    blocks after, the page cache after)."""
    w = World(tmp_path, {"remediation": {"mode": "on"}})
    ran = compaction_that_works(w)
    w.host.be(FRAGMENTED)
    assert w.kube is not None
    w.kube.budgets.clear()
    w.tick()
    assert ran == ["compact"] and w.reader.observed == 2
    # The API phase's budget, then the lock's two; the kernel write runs in none of them.
    assert len(w.kube.budgets) == 4
    w.kube.budgets.clear()
    w.tick(1)  # healthy: one budget for the whole API phase
    assert len(w.kube.budgets) == 1
    assert (
        sample(w.agent, "memfrag_remediation_actions_total", {"action": "compact", "result": "ok"})
        == 1
    )
    assert "RemediationSucceeded" in w.events()


def test_an_unmovable_cause_says_remediation_is_not_possible_once(tmp_path: Path) -> None:
    w = World(tmp_path, {"remediation": {"mode": "on", "allow_drop_caches": False}})
    w.host.be(UNMOVABLE)
    w.tick()
    w.tick(1)
    assert w.events().count("RemediationNotPossible") == 1
    assert "Remediation:" in (w.condition() or {})["message"]


def test_an_unreadable_proc_is_unknown_and_does_not_count_as_a_poll(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.tick()
    polled = w.agent.health.last_poll
    w.host.garbage()
    w.tick(1)
    assert (w.condition() or {})["status"] == "Unknown"
    assert sample(w.agent, "memfrag_input_errors_total") == 1
    assert w.agent.health.last_poll == polled


def test_api_failures_are_counted_and_the_tick_goes_on(tmp_path: Path) -> None:
    w = World(tmp_path)
    assert w.kube is not None
    w.kube.fail("PATCH", "/status", 503, times=3)
    w.kube.fail("POST", "/events", 500)
    w.host.be(FRAGMENTED)
    w.tick()
    assert sample(w.agent, "memfrag_api_errors_total", {"operation": "condition"}) == 1
    assert sample(w.agent, "memfrag_api_errors_total", {"operation": "event"}) == 1
    w.tick(1)
    assert (w.condition() or {})["status"] == "True"


def test_every_api_request_is_counted_by_method(tmp_path: Path) -> None:
    """memfrag_api_requests_total is the agent's own count of what it costs the API server."""
    w = World(tmp_path)
    assert w.kube is not None
    w.host.be(FRAGMENTED)
    w.tick()
    for method in ("PATCH", "POST", "GET"):
        want = w.kube.count(method)
        assert sample(w.agent, "memfrag_api_requests_total", {"method": method}) == want
    assert w.kube.count("PATCH") >= 1


def test_an_unknown_node_is_reported_nowhere_and_the_tick_goes_on(tmp_path: Path) -> None:
    w = World(tmp_path)
    assert w.agent.reporter is not None
    w.agent.reporter.node_inf = type(w.agent.reporter.node_inf)(w.kube, "/api/v1/nodes", {})  # type: ignore[arg-type]
    w.tick()
    assert w.condition() is None and sample(w.agent, "memfrag_verdict", {"verdict": "healthy"}) == 1


def test_kernel_log_findings_raise_the_order_and_are_announced_once(tmp_path: Path) -> None:
    w = World(tmp_path)
    (f,) = scan([b"4,1,1,-;mysqld: page allocation failure: order:9, mode:0x10c0d0"])
    w.agent.cycle([f, f])
    assert w.events().count("HighOrderAllocationFailed") == 1
    assert sample(w.agent, "memfrag_target_order") == 9
    assert sample(w.agent, "memfrag_kernel_log_findings_total", {"kind": f.kind, "order": "9"}) == 2


def test_standalone_observes_assesses_remediates_and_logs_its_events(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    w = World(tmp_path, {"remediation": {"mode": "on"}}, api=False)
    assert w.agent.reporter is None and w.agent.stuck is None and w.agent.informers() == []
    ran = compaction_that_works(w)
    w.host.be(FRAGMENTED)
    with caplog.at_level(logging.INFO, logger="memfrag.agent"):
        w.tick()
        assert ran == ["compact"]
        assert sample(w.agent, "memfrag_verdict", {"verdict": "fragmented"}) == 1
        w.tick(1)
        w.tick(1)
    reasons = [r.__dict__["event"]["reason"] for r in caplog.records if "event" in r.__dict__]
    assert reasons == ["RemediationSucceeded"]
    # The log is the condition: a line when the verdict or the why changes, not every tick.
    said = [r.__dict__ for r in caplog.records if r.getMessage() == "assessment changed"]
    assert [(x["verdict"], x["remediation"]) for x in said] == [
        ("fragmented", "migrate movable pages to merge free blocks"),
        ("healthy", "not fragmented"),
    ]


def test_run_serves_healthz_ticks_and_stops(tmp_path: Path) -> None:
    import urllib.request

    w = World(tmp_path, api=False)
    result: list[int] = []
    stopper = threading.Timer(1.5, w.agent.request_stop)
    stopper.start()
    result.append(w.agent.run())
    assert result == [0] and w.reader.observed >= 2  # the tunables review and a tick
    assert w.agent.http is not None
    with pytest.raises(OSError):
        host, port = w.agent.http.server_address
        urllib.request.urlopen(f"http://{host}:{port}/healthz", timeout=2)


def test_a_remediation_outcome_without_a_run_counts_nothing(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.agent._record(
        w.agent.inbox.digest(0, []), None, 0, None, None, Ran(None, w.agent.state.remedy), 0.0, 0.0
    )
    assert sample(w.agent, "memfrag_input_errors_total") == 1


def test_both_conditions_and_the_summary_go_in_one_patch(tmp_path: Path) -> None:
    """The per-NUMA summary costs no API write of its own: one PATCH of nodes/status carries
    MemoryFragmented, MemoryFragmentationUnremediable and the annotation; an unchanged tick
    writes nothing."""
    w = World(tmp_path)
    assert w.kube is not None
    w.host.be(FRAGMENTED)
    w.tick()
    assert w.kube.count("PATCH", "/nodes/n1/status") == 1
    node = w.node()
    types = sorted(c["type"] for c in node["status"]["conditions"])
    assert types == ["MemoryFragmentationUnremediable", "MemoryFragmented"]
    summary = json.loads(node["metadata"]["annotations"]["memfrag.dev/summary"])
    assert [n["state"] for n in summary["numa"]] == ["fragmented"]
    w.tick(1)
    assert w.kube.count("PATCH", "/nodes/n1/status") == 1
