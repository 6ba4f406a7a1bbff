"""Remediation on a policy, bounded across the cluster: Lease slots under contention, a dead
holder's slot coming back, the tainted-share cap, and the ladder that never loops."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.kube.client import SMP, Kube
from agent.kube.leases import Semaphore, node_count, taint_slots
from tests.chart_tools import AGENT_BIN, TOOLS
from tests.cluster import ControlPlane
from tests.cluster.agentprocess import AgentProcess
from tests.cluster.fakehost import FakeHost, FakeKernel
from tests.cluster.rbac import NAMESPACE, apply_chart_rbac
from tests.cluster.waiting import wait_for
from tests.integration.harness import TAINT, Clock, condition, events, our_taint


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """A control plane of its own: the cap depends on how many Nodes exist."""
    with ControlPlane(tmp_path_factory.mktemp("remediation-plane")) as p:
        apply_chart_rbac(p.kubeconfig)
        yield p


@pytest.fixture(scope="module")
def admin(plane: ControlPlane) -> Kube:
    return Kube.from_environment(str(plane.kubeconfig))


@pytest.fixture(scope="module")
def sa(plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sa") / "agent.kubeconfig"
    return plane.service_account_kubeconfig(NAMESPACE, "memfrag-agent", path)


def reasons(admin: Kube, node: str) -> dict[str, str]:
    return {reason: str(e["message"]) for reason, e in events(admin, node).items()}


@contextlib.contextmanager
def fragmented_agent(
    plane: ControlPlane,
    sa: Path,
    tmp_path: Path,
    node: str,
    config: dict[str, Any],
    heals_on: str | None = None,
    unmovable: bool = False,
) -> Iterator[tuple[AgentProcess, FakeKernel]]:
    """A registered Node, a fragmented fake /proc with a fake kernel behind /proc/sys/vm, and
    the agent running on it as the chart's ServiceAccount."""
    plane.register_node(node)
    host = FakeHost(tmp_path / "proc")
    kernel = FakeKernel(host, heals_on=heals_on)
    if unmovable:
        host.unmovable()
    else:
        host.fragmented()
    agent = AgentProcess(tmp_path / "a", node, sa, host, config).start()
    try:
        yield agent, kernel
    finally:
        agent.stop(signal.SIGKILL)
        kernel.close()


def test_lease_slots_hold_under_contention(admin: Kube, sa: Path) -> None:
    """Eight contenders, two slots, as the agent's ServiceAccount: never more than two holders."""
    agent = Kube.from_environment(str(sa))
    holding: set[str] = set()
    lock = threading.Lock()
    peak = [0]
    turns: dict[str, int] = {}
    errors: list[BaseException] = []

    def contender(name: str) -> None:
        sem = Semaphore(agent, NAMESPACE, "test-slot", name)
        try:
            while turns.get(name, 0) < 3:
                slot = sem.acquire(2, 30)
                if slot is None:
                    time.sleep(0.02)
                    continue
                with lock:
                    holding.add(name)
                    peak[0] = max(peak[0], len(holding))
                time.sleep(0.05)
                with lock:
                    holding.discard(name)
                turns[name] = turns.get(name, 0) + 1
                sem.release(slot)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=contender, args=(f"node-{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    assert peak[0] == 2  # contention really happened, and the cap held
    assert turns == {f"node-{i}": 3 for i in range(8)}


def test_a_dead_holders_slot_frees_itself(sa: Path) -> None:
    """Expiry counts on the observer's own monotonic clock from the last change it saw."""
    agent = Kube.from_environment(str(sa))
    dead = Semaphore(agent, NAMESPACE, "test-expiry", "dead-pod", monotonic=Clock())
    mono = Clock()
    alive = Semaphore(agent, NAMESPACE, "test-expiry", "alive-pod", monotonic=mono)
    assert dead.acquire(1, 2) == "test-expiry-0"  # and never released: kill -9
    assert alive.acquire(1, 2) is None  # first sight: held for a full duration from now
    mono.t += 2
    assert alive.acquire(1, 2) is None
    mono.t += 1
    assert alive.acquire(1, 2) == "test-expiry-0"  # unchanged for 3 s > 2 s: taken over
    assert dead.acquire(1, 2) is None  # the old holder sees the change: it cannot grab it back


@pytest.mark.parametrize(("holder_skew", "taker_skew"), [(0, 301), (-3600, 0)])
def test_skewed_clocks_neither_steal_nor_lose_a_slot(
    sa: Path, holder_skew: float, taker_skew: float
) -> None:
    """Before: expiry compared renewTime (the holder's clock) with the taker's clock, so a node
    301 s ahead took a held 300 s slot at once, and a holder an hour behind lost its slot a
    second after taking it. Now renewTime is never compared with anyone's clock."""
    agent = Kube.from_environment(str(sa))
    prefix = f"test-skew-{int(taker_skew)}"
    holder = Semaphore(agent, NAMESPACE, prefix, "holder-pod", wall=Clock(holder_skew, True))
    taker = Semaphore(agent, NAMESPACE, prefix, "taker-pod", wall=Clock(taker_skew, True))
    assert holder.acquire(1, 300) == f"{prefix}-0"
    assert taker.acquire(1, 300) is None
    assert holder.acquire(1, 300) == f"{prefix}-0"  # renewed
    assert taker.acquire(1, 300) is None
    holder.release(f"{prefix}-0")


def test_tainted_share_cap(plane: ControlPlane, admin: Kube, sa: Path, tmp_path: Path) -> None:
    """Ten nodes, a 20 % cap: of five fragmented nodes, exactly two get tainted; the others
    report TaintSkipped."""
    nodes = [f"cap-{i}" for i in range(10)]
    for n in nodes:
        plane.register_node(n)
    assert node_count(admin) == 10
    assert taint_slots(10, 20) == 2
    agents = []
    try:
        for i, n in enumerate(nodes[:5]):
            host = FakeHost(tmp_path / f"proc-{i}")
            host.fragmented()
            agents.append(
                AgentProcess(
                    tmp_path / f"a{i}",
                    n,
                    sa,
                    host,
                    {
                        "reporting": {"max_tainted_percent": 20, "fragmented_for_seconds": 0},
                    },
                ).start()
            )

        def tainted() -> list[str]:
            return [
                n
                for n in nodes
                if any(
                    t["key"] == TAINT
                    for t in admin.request("GET", f"/api/v1/nodes/{n}")["spec"].get("taints") or []
                )
            ]

        wait_for(lambda: len(tainted()) == 2, "two tainted nodes")
        wait_for(
            lambda: sum("TaintSkipped" in reasons(admin, n) for n in nodes[:5]) == 3,
            "three TaintSkipped events",
        )
        time.sleep(3)  # a few more polls: still two
        assert len(tainted()) == 2
        # One tainted node recovers: its slot frees and a waiting node takes it.
        first = tainted()[0]
        agents[nodes.index(first)].host.healthy()
        wait_for(lambda: first not in tainted() and len(tainted()) == 2, "the slot handed on")
    finally:
        for a in agents:
            a.stop(signal.SIGKILL)


def test_two_pods_on_one_node_share_its_budget(
    plane: ControlPlane, admin: Kube, sa: Path, tmp_path: Path
) -> None:
    """A maxSurge rollout runs two agent pods on one node. Before: they held Leases as the
    node, shared a slot, and each kept its own history: 6 actions in 20 s against a cap of 4
    an hour. Now they hold as pods, one at a time per node (the node's record), and the cap
    counts the node's actions whichever pod ran them."""
    plane.register_node("surge")
    host = FakeHost(tmp_path / "proc")
    kernel = FakeKernel(host, delay=1.0)
    host.fragmented()
    config = {"remediation": {"mode": "on", "cooldown_seconds": 0, "max_actions_per_hour": 4}}
    pods = [AgentProcess(tmp_path / f"pod-{i}", "surge", sa, host, config) for i in range(2)]
    try:
        for p in pods:
            p.start()
        wait_for(lambda: len(kernel.writes) >= 4, "four actions on the node")
        wait_for(
            lambda: "4 actions in the last hour (max 4)" in (_condition(admin, "surge") or ""),
            "the node at its cap",
        )
        time.sleep(3)  # three more polls of each
        assert len(kernel.writes) == 4
        record = admin.request(
            "GET", f"/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/leases/memfrag-node-surge"
        )
        actions = json.loads(record["metadata"]["annotations"]["memfrag.dev/actions"])
        assert len(actions) == 4 and len({a["by"] for a in actions}) == 2  # both pods ran some
    finally:
        for p in pods:
            p.stop(signal.SIGKILL)
        kernel.close()


def test_ladder_climbs_once_and_never_loops(
    plane: ControlPlane, admin: Kube, sa: Path, tmp_path: Path
) -> None:
    """Nothing helps (the fake kernel never heals): each step runs once, then the agent stops
    and says why, however many polls follow."""
    with fragmented_agent(
        plane,
        sa,
        tmp_path,
        "ladder",
        {
            "remediation": {"mode": "on", "cooldown_seconds": 0, "max_actions_per_hour": 100},
        },
    ) as (a, kernel):
        wait_for(lambda: len(kernel.writes) == 3, "three actions")
        assert kernel.writes == [
            ("compact_memory", "1"),
            ("drop_caches", "1"),
            ("drop_caches", "2"),
        ]
        wait_for(
            lambda: "ran without recovery" in (_condition(admin, "ladder") or ""),
            "the condition saying the ladder is exhausted",
        )
        time.sleep(4)  # four more polls
        assert len(kernel.writes) == 3
        m = a.metrics()
        assert m['memfrag_remediation_actions_total{action="compact",result="no_effect"}'] == 1
        assert "RemediationNoEffect" in reasons(admin, "ladder")


def test_compaction_that_works_stops_the_ladder_and_clears_the_taint(
    plane: ControlPlane, admin: Kube, sa: Path, tmp_path: Path
) -> None:
    with fragmented_agent(
        plane,
        sa,
        tmp_path,
        "heals",
        {
            "remediation": {"mode": "on"},
            "reporting": {"fragmented_for_seconds": 0},
        },
        heals_on="compact_memory=1",
    ) as (_a, kernel):
        wait_for(lambda: "RemediationSucceeded" in reasons(admin, "heals"), "success event")
        assert "blocks 0 -> " in reasons(admin, "heals")["RemediationSucceeded"]
        wait_for(
            lambda: (_condition(admin, "heals") or "").startswith("Enough"),
            "condition back to healthy",
        )
        assert kernel.writes == [("compact_memory", "1")]  # no drop_caches: it was not needed


def test_dry_run_reports_and_writes_nothing(
    plane: ControlPlane, admin: Kube, sa: Path, tmp_path: Path
) -> None:
    with fragmented_agent(
        plane,
        sa,
        tmp_path,
        "dry",
        {
            "remediation": {"mode": "dry-run", "cooldown_seconds": 0},
        },
    ) as (_a, kernel):
        wait_for(lambda: "RemediationDryRun" in reasons(admin, "dry"), "dry-run event")
        assert reasons(admin, "dry")["RemediationDryRun"].startswith("Would run compact")
        time.sleep(2)
        assert kernel.writes == []


def test_cleanup_removes_every_trace(
    plane: ControlPlane, admin: Kube, sa: Path, tmp_path: Path
) -> None:
    from agent.kube.admin import cleanup

    with fragmented_agent(
        plane, sa, tmp_path, "gone", {"reporting": {"fragmented_for_seconds": 0}}
    ) as (a, _):
        wait_for(lambda: our_taint(admin, "gone"), "taint")
        a.stop()  # SIGTERM: the agent leaves its taint and condition for the next start
    theirs = {"key": TAINT, "value": "other-tool", "effect": "PreferNoSchedule"}
    n = admin.request("GET", "/api/v1/nodes/gone")
    admin.request(
        "PATCH",
        "/api/v1/nodes/gone",
        body={"spec": {"taints": [*n["spec"]["taints"], theirs]}},
        content_type=SMP,
    )
    done = cleanup(admin, NAMESPACE, TAINT)  # the node's record names the effect it put on
    assert "node/gone: removed taint memfrag.dev/fragmented:NoSchedule" in done
    node = admin.request("GET", "/api/v1/nodes/gone")
    # Before: everything under the key went, another tool's taint too.
    assert [t for t in node["spec"].get("taints") or [] if t["key"] == TAINT] == [theirs]
    assert not any(c["type"].startswith("MemoryFragment") for c in node["status"]["conditions"])
    assert "memfrag.dev/summary" not in (node["metadata"].get("annotations") or {})
    leases = admin.request("GET", f"/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/leases")
    assert [x["metadata"]["name"] for x in leases["items"]] == []


def _condition(admin: Kube, node: str) -> str | None:
    c = condition(admin, node)
    return None if c is None else str(c["message"])


def test_status_lists_every_node(
    plane: ControlPlane, admin: Kube, sa: Path, tmp_path: Path
) -> None:
    with fragmented_agent(
        plane, sa, tmp_path, "shown", {"reporting": {"fragmented_for_seconds": 0}}
    ) as (_a, _kernel):
        wait_for(lambda: _condition(admin, "shown") is not None, "a condition")
        out = subprocess.run(
            [str(AGENT_BIN), "status", "--kubeconfig", str(plane.kubeconfig), "--output", "json"],
            capture_output=True,
            text=True,
            check=True,
        )
        rows = {r["node"]: r for r in json.loads(out.stdout)["nodes"]}
        assert rows["shown"]["condition"] == "True"
        assert rows["shown"]["reason"] == "FreeMemoryFragmented"
        table = subprocess.run(
            [str(AGENT_BIN), "status", "--kubeconfig", str(plane.kubeconfig)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert table.splitlines()[0].split() == [
            "NODE",
            "MEMORYFRAGMENTED",
            "REASON",
            "SINCE",
            "TAINT",
            "LAST",
            "REMEDIATION",
        ]
        assert any(line.startswith("shown ") and " True " in line for line in table.splitlines())


def test_unmovable_cause_one_attempt_then_no_pointless_action(
    plane: ControlPlane, admin: Kube, sa: Path, tmp_path: Path
) -> None:
    """One short attempt (drop page cache, compact); when it does not help, nothing more runs
    however many polls follow, and the node says why, once."""
    with fragmented_agent(
        plane,
        sa,
        tmp_path,
        "unmovable",
        {"remediation": {"mode": "on", "cooldown_seconds": 0}},
        unmovable=True,
    ) as (_a, kernel):
        wait_for(lambda: "RemediationNotPossible" in reasons(admin, "unmovable"), "the event")
        time.sleep(3)  # three more polls
        assert kernel.writes == [("drop_caches", "1"), ("compact_memory", "1")]
        assert events(admin, "unmovable")["RemediationNotPossible"]["count"] == 1
        msg = _condition(admin, "unmovable") or ""
        assert "cause: unmovable" in msg and "the operator's call" in msg


def test_a_drop_that_recovers_is_finished_by_one_compaction(
    plane: ControlPlane, admin: Kube, sa: Path, tmp_path: Path
) -> None:
    """Dropping page cache recovers the node: the ladder's compaction still runs once at the next
    poll (it drops nothing and merges what the drop freed), then nothing more."""
    with fragmented_agent(
        plane,
        sa,
        tmp_path,
        "finish",
        {"remediation": {"mode": "on", "cooldown_seconds": 0}},
        heals_on="drop_caches=1",
        unmovable=True,
    ) as (a, kernel):
        wait_for(lambda: len(kernel.writes) == 2, "the drop, then the compaction")
        assert kernel.writes == [("drop_caches", "1"), ("compact_memory", "1")]
        time.sleep(3)  # three more polls
        assert len(kernel.writes) == 2
        assert "RemediationNotPossible" not in reasons(admin, "finish")
        m = a.metrics()
        assert m['memfrag_remediation_actions_total{action="compact",result="no_effect"}'] == 1


def kubectl_memfrag(plane: ControlPlane, *argv: str) -> subprocess.CompletedProcess[str]:
    """`kubectl memfrag ...` through the real kubectl, the plugin found on PATH beside
    memfrag-agent (krew's way: kubectl runs kubectl-memfrag with the arguments after it)."""
    env = {"PATH": f"{AGENT_BIN.parent}:{TOOLS}:/usr/bin:/bin", "HOME": str(plane.workdir)}
    return subprocess.run(
        [str(TOOLS / "kubectl"), "memfrag", *argv, "--kubeconfig", str(plane.kubeconfig)],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        timeout=60,
    )


def test_kubectl_memfrag_against_the_cluster(
    plane: ControlPlane, admin: Kube, sa: Path, tmp_path: Path
) -> None:
    """The unmovable node's one attempt fails: the agent says MemoryFragmentationUnremediable
    (what deploy/nhc selects), publishes its NUMA nodes in the condition's PATCH, and `kubectl
    memfrag` shows them per NUMA node, with the last action and the Events."""
    with fragmented_agent(
        plane,
        sa,
        tmp_path,
        "plugin",
        {"remediation": {"mode": "on", "cooldown_seconds": 0}},
        unmovable=True,
    ) as (_a, kernel):
        wait_for(
            lambda: (unremediable(admin, "plugin") or {}).get("status") == "True",
            "MemoryFragmentationUnremediable=True",
        )
        assert kernel.writes == [("drop_caches", "1"), ("compact_memory", "1")]
        u = unremediable(admin, "plugin") or {}
        assert u["reason"] == "RemediationExhausted" and "operator's call" in u["message"]
        # the summary went through nodes/status with the conditions, as the agent's own account
        node = admin.request("GET", "/api/v1/nodes/plugin")
        summary = json.loads(node["metadata"]["annotations"]["memfrag.dev/summary"])
        assert summary["cause"] == "unmovable" and len(summary["numa"]) == 2

        ctx = str(yaml_context(plane))
        out = kubectl_memfrag(plane, "nodes", "-o", "json", "-n", NAMESPACE, "--context", ctx)
        assert out.returncode == 0, out.stderr
        rows = [r for r in json.loads(out.stdout)["nodes"] if r["node"] == "plugin"]
        assert [(r["numa_node"], r["verdict"]) for r in rows] == [
            (n["node"], n["state"]) for n in summary["numa"]
        ]
        assert rows[0]["unremediable"] == "True" and rows[0]["cause"] == "unmovable"
        assert rows[0]["last_action"].startswith("compact ")  # the record's last action
        table = kubectl_memfrag(plane, "nodes", "-n", NAMESPACE)
        assert table.returncode == 0 and table.stderr == ""
        head, *lines = table.stdout.splitlines()
        assert head.split()[:4] == ["NODE", "NUMA", "VERDICT", "BLOCKS"]
        mine = [line.split() for line in lines if line.startswith("plugin ")]
        assert [m[1] for m in mine] == ["0", "1"] and mine[0][5] == "unmovable"

        desc = kubectl_memfrag(plane, "describe", "plugin", "-n", NAMESPACE)
        assert "Unremediable:  MemoryFragmentationUnremediable=True" in desc.stdout
        assert "RemediationNotPossible" in desc.stdout
        ev = kubectl_memfrag(plane, "events", "-o", "yaml")
        assert ev.returncode == 0 and "FragmentationDetected" in ev.stdout
    missing = kubectl_memfrag(plane, "describe", "no-such-node")
    assert missing.returncode == 3 and missing.stdout == ""
    assert "404" in missing.stderr


def unremediable(admin: Kube, node: str) -> dict[str, Any] | None:
    n = admin.request("GET", f"/api/v1/nodes/{node}")
    for c in n["status"].get("conditions") or []:
        if c["type"] == "MemoryFragmentationUnremediable":
            return dict(c)
    return None


def yaml_context(plane: ControlPlane) -> object:
    """The admin kubeconfig's current context, named explicitly (--context)."""
    return yaml.safe_load(plane.kubeconfig.read_text())["current-context"]
