"""`memfrag-agent run` against the real local control plane, as the chart's ServiceAccount."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from agent.config.reload import ConfigFile
from agent.daemon.loop import Agent
from agent.decide.nodeview import node_view
from agent.kernel.procfs import ProcReader
from agent.kube.client import SMP, ApiError, Kube
from tests.cluster import ControlPlane
from tests.cluster.agentprocess import SEED_LINE, AgentProcess, kmsg_line
from tests.cluster.fakehost import FakeHost
from tests.cluster.rbac import NAMESPACE, apply_chart_rbac
from tests.cluster.waiting import wait_for
from tests.integration.harness import (
    TAINT,
    Clock,
    condition,
    create_pod,
    events,
    our_taint,
    sandbox_event,
    status_is,
    taints,
)

_counter = iter(range(1000))


@pytest.fixture
def node(control_plane: ControlPlane) -> str:
    name = f"node-{next(_counter)}"
    control_plane.register_node(name)
    return name


@pytest.fixture
def agents() -> Iterator[list[AgentProcess]]:
    started: list[AgentProcess] = []
    yield started
    for a in started:
        a.stop(signal.SIGKILL)


def start_agent(
    agents: list[AgentProcess],
    tmp: Path,
    node: str,
    kubeconfig: Path,
    config: dict[str, Any] | None = None,
    host: FakeHost | None = None,
) -> AgentProcess:
    a = AgentProcess(
        tmp / f"agent-{len(agents)}", node, kubeconfig, host or FakeHost(tmp / "proc"), config
    )
    agents.append(a)
    return a.start()


def start_kmsg_driven_agent(
    admin: Kube, agents: list[AgentProcess], tmp: Path, node: str, kubeconfig: Path
) -> AgentProcess:
    """An agent whose next poll is 10 minutes away after the first: only the kernel log moves it."""
    a = start_agent(
        agents,
        tmp,
        node,
        kubeconfig,
        {"sources": {"poll_interval_seconds": 600, "pagetypeinfo_interval_seconds": 600}},
    )
    wait_for(lambda: status_is(admin, node, "False"), "first poll")
    return a


def start_tainted(
    admin: Kube, agents: list[AgentProcess], tmp: Path, node: str, kubeconfig: Path
) -> AgentProcess:
    """An agent on a fragmented host, once it has tainted its node."""
    host = FakeHost(tmp / "proc")
    host.fragmented()
    a = start_agent(agents, tmp, node, kubeconfig, host=host)
    wait_for(lambda: our_taint(admin, node), "taint")
    return a


def test_condition_and_taint_follow_the_verdict(
    admin: Kube, agent_kubeconfig: Path, node: str, agents: list[AgentProcess], tmp_path: Path
) -> None:
    a = start_agent(agents, tmp_path, node, agent_kubeconfig)
    wait_for(lambda: status_is(admin, node, "False"), "condition False on a healthy node")
    c = condition(admin, node)
    assert c is not None and c["reason"] == "ContiguousMemoryAvailable"
    assert not our_taint(admin, node)

    a.host.fragmented()
    wait_for(lambda: status_is(admin, node, "True"), "condition True once fragmented")
    c = condition(admin, node)
    assert c is not None and c["reason"] == "FreeMemoryFragmented"
    assert "0 free blocks of order>=4" in c["message"]
    wait_for(lambda: our_taint(admin, node), "the taint after fragmented_for_seconds")
    assert [t for t in taints(admin, node) if t["key"] == TAINT] == [
        {"key": TAINT, "value": "true", "effect": "NoSchedule"}
    ]
    transition = condition(admin, node)["lastTransitionTime"]  # type: ignore[index]

    a.host.healthy()
    wait_for(lambda: not our_taint(admin, node), "the taint removed after recovery")
    wait_for(lambda: status_is(admin, node, "False"), "condition False after recovery")
    assert condition(admin, node)["lastTransitionTime"] != transition  # type: ignore[index]
    wait_for(lambda: "Recovered" in events(admin, node), "a Recovered event")
    ev = events(admin, node)
    assert {"FragmentationDetected", "NodeTainted", "Recovered", "TaintRemoved"} <= set(ev)
    assert ev["FragmentationDetected"]["type"] == "Warning"
    assert ev["FragmentationDetected"]["source"]["component"] == "memfrag-agent"

    m = a.metrics()
    assert m['memfrag_verdict{verdict="healthy"}'] == 1.0
    assert m['memfrag_free_blocks{numa_node="0",order="10",zone="Normal"}'] > 0
    assert m["memfrag_api_up"] == 1.0
    assert a.stop() == 0  # SIGTERM: a clean exit


def test_state_survives_a_kill_and_restart(
    admin: Kube, agent_kubeconfig: Path, node: str, agents: list[AgentProcess], tmp_path: Path
) -> None:
    a = start_tainted(admin, agents, tmp_path, node, agent_kubeconfig)
    host = a.host
    before = condition(admin, node)
    assert before is not None
    a.stop(signal.SIGKILL)
    host.healthy()  # recovered while the agent was down: hysteresis still applies
    b = start_agent(
        agents,
        tmp_path,
        node,
        agent_kubeconfig,
        {"reporting": {"healthy_for_seconds": 4}},
        host=host,
    )
    time.sleep(1.5)
    kept = condition(admin, node)
    assert kept is not None and kept["status"] == "True"
    assert kept["lastTransitionTime"] == before["lastTransitionTime"]  # read, not reset
    assert our_taint(admin, node)
    wait_for(lambda: not our_taint(admin, node), "taint cleared after healthy_for_seconds")
    assert "Recovering" not in (condition(admin, node) or {}).get("message", "")
    b.stop()


def test_never_loses_another_controllers_taint(
    admin: Kube, agent_kubeconfig: Path, node: str, agents: list[AgentProcess], tmp_path: Path
) -> None:
    """Another writer adds its own taints (read-modify-write with resourceVersion, as a correct
    controller does) while the agent taints and untaints: every one of them survives."""
    a = start_agent(
        agents,
        tmp_path,
        node,
        agent_kubeconfig,
        {"reporting": {"fragmented_for_seconds": 0, "healthy_for_seconds": 0}},
    )
    stop = threading.Event()
    written: list[str] = []

    def writer() -> None:
        i = 0
        while not stop.is_set() and i < 60:
            n = admin.request("GET", f"/api/v1/nodes/{node}")
            v = node_view(n)
            key = f"example.com/other-{i}"
            try:
                admin.request(
                    "PATCH",
                    f"/api/v1/nodes/{node}",
                    body={
                        "metadata": {"resourceVersion": v.resource_version},
                        "spec": {"taints": [*v.taints, {"key": key, "effect": "PreferNoSchedule"}]},
                    },
                    content_type=SMP,
                )
                written.append(key)
                i += 1
            except ApiError as exc:
                assert exc.status == 409
            time.sleep(0.05)

    t = threading.Thread(target=writer)
    t.start()
    for _ in range(3):
        a.host.fragmented()
        wait_for(lambda: our_taint(admin, node), "our taint")
        a.host.healthy()
        wait_for(lambda: not our_taint(admin, node), "our taint gone")
    stop.set()
    t.join()
    keys = [tt["key"] for tt in taints(admin, node)]
    assert len(written) >= 10
    assert sorted(written) == sorted(k for k in keys if k.startswith("example.com/"))
    assert len(keys) == len(set(keys))  # nothing duplicated


def test_kernel_log_finding_triggers_an_assessment_at_once(
    admin: Kube, agent_kubeconfig: Path, node: str, agents: list[AgentProcess], tmp_path: Path
) -> None:
    a = start_kmsg_driven_agent(admin, agents, tmp_path, node, agent_kubeconfig)
    a.host.fragmented()
    a.write_kmsg(kmsg_line(SEED_LINE))
    # The next poll is 10 minutes away: only the kernel-log trigger can make this True.
    wait_for(lambda: status_is(admin, node, "True"), "condition True after the kmsg line", 60)
    m = a.metrics()
    assert m['memfrag_kernel_log_findings_total{kind="page_allocation_failure",order="4"}'] == 1
    ev = events(admin, node)
    assert "order 4, process mysqld" in ev["HighOrderAllocationFailed"]["message"]


def test_user_facility_lines_are_ignored_by_default(
    admin: Kube, agent_kubeconfig: Path, node: str, agents: list[AgentProcess], tmp_path: Path
) -> None:
    a = start_agent(agents, tmp_path, node, agent_kubeconfig)
    a.write_kmsg(kmsg_line(SEED_LINE, facility=1))
    wait_for(
        lambda: a.metrics().get("memfrag_kmsg_ignored_records_total") == 1.0,
        "the spoofed line counted as ignored",
    )
    assert "HighOrderAllocationFailed" not in events(admin, node)


def test_scheduler_keeps_pods_off_the_tainted_node(
    control_plane: ControlPlane,
    admin: Kube,
    agent_kubeconfig: Path,
    node: str,
    agents: list[AgentProcess],
    tmp_path: Path,
) -> None:
    control_plane.start_scheduler()
    host = FakeHost(tmp_path / "proc")
    host.fragmented()
    start_agent(agents, tmp_path, node, agent_kubeconfig, host=host)
    wait_for(lambda: our_taint(admin, node), "taint")
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"web-{node}", "namespace": "default"},
        "spec": {
            "automountServiceAccountToken": False,
            "nodeSelector": {"kubernetes.io/hostname": node},
            "containers": [{"name": "c", "image": "registry.example/web:1"}],
        },
    }
    admin.request("POST", "/api/v1/namespaces/default/pods", body=pod)
    path = f"/api/v1/namespaces/default/pods/web-{node}"

    def unschedulable() -> bool:
        conds = admin.request("GET", path)["status"].get("conditions") or []
        return any(
            c["type"] == "PodScheduled" and c.get("reason") == "Unschedulable" for c in conds
        )

    wait_for(unschedulable, "the scheduler to refuse the tainted node")
    assert not admin.request("GET", path)["spec"].get("nodeName")
    host.healthy()
    wait_for(
        lambda: admin.request("GET", path)["spec"].get("nodeName") == node,
        "the pod bound once the taint is gone",
        60,
    )


def test_stuck_pods_are_reported(
    admin: Kube, agent_kubeconfig: Path, node: str, agents: list[AgentProcess], tmp_path: Path
) -> None:
    name = f"stuck-{node}"
    create_pod(admin, name, node)
    admin.request(
        "PATCH",
        f"/api/v1/namespaces/default/pods/{name}/status",
        body={
            "status": {
                "phase": "Pending",
                "conditions": [
                    {
                        "type": "PodScheduled",
                        "status": "True",
                        "lastTransitionTime": "2020-01-01T00:00:00Z",
                    }
                ],
                "containerStatuses": [
                    {
                        "name": "c",
                        "image": "registry.example/app:1",
                        "imageID": "",
                        "ready": False,
                        "restartCount": 0,
                        "state": {"waiting": {"reason": "ContainerCreating"}},
                    }
                ],
            }
        },
        content_type=SMP,
    )
    a = start_agent(agents, tmp_path, node, agent_kubeconfig)
    wait_for(lambda: a.metrics().get("memfrag_stuck_pods") == 1.0, "one stuck pod")
    wait_for(
        lambda: f"default/{name}" in (condition(admin, node) or {}).get("message", ""),
        "the stuck pod named in the condition message",
    )


def test_invalid_config_keeps_the_last_good_one(
    admin: Kube, agent_kubeconfig: Path, node: str, agents: list[AgentProcess], tmp_path: Path
) -> None:
    a = start_agent(agents, tmp_path, node, agent_kubeconfig)
    a.write_config("reporting:\n  taint_efect: NoSchedule\n")
    wait_for(lambda: a.metrics().get("memfrag_config_valid") == 0.0, "config_valid 0")
    wait_for(lambda: "ConfigInvalid" in events(admin, node), "a ConfigInvalid event")
    assert "reporting.taint_efect: unknown key" in events(admin, node)["ConfigInvalid"]["message"]
    a.host.fragmented()  # still working with the last good config
    wait_for(lambda: our_taint(admin, node), "taint with the last good config")
    a.write_config()
    wait_for(lambda: a.metrics().get("memfrag_config_valid") == 1.0, "config_valid 1 again")


def test_garbage_proc_reports_unknown_and_recovers(
    admin: Kube, agent_kubeconfig: Path, node: str, agents: list[AgentProcess], tmp_path: Path
) -> None:
    a = start_agent(agents, tmp_path, node, agent_kubeconfig)
    wait_for(lambda: status_is(admin, node, "False"), "first poll")
    a.host.garbage()
    wait_for(lambda: status_is(admin, node, "Unknown"), "Unknown on a malformed buddyinfo")
    c = condition(admin, node)
    assert c is not None and "buddyinfo:1" in c["message"]
    # Success means the node was assessed. Before: every failed poll counted as one, so an
    # agent that cannot read /proc never tripped its liveness probe or MemfragAgentDown.
    last = a.metrics()["memfrag_last_successful_poll_timestamp_seconds"]
    wait_for(lambda: not a.healthz(), "/healthz 503 after 3 polls + 30 s without one", 60)
    assert a.metrics()["memfrag_last_successful_poll_timestamp_seconds"] == last
    assert a.metrics()["memfrag_input_errors_total"] >= 30  # it kept trying every poll
    a.host.healthy()
    wait_for(lambda: status_is(admin, node, "False"), "back to False")
    wait_for(a.healthz, "/healthz 200 again")


def test_missing_permission_fails_clearly(
    control_plane: ControlPlane,
    admin: Kube,
    node: str,
    agents: list[AgentProcess],
    tmp_path: Path,
) -> None:
    """A ServiceAccount without the chart's RBAC: the agent keeps running and says 403."""
    admin.request(
        "POST",
        f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts",
        body={"metadata": {"name": f"bare-{node}"}},
    )
    kc = control_plane.service_account_kubeconfig(NAMESPACE, f"bare-{node}", tmp_path / "kc")
    a = start_agent(agents, tmp_path, node, kc)
    wait_for(lambda: "403" in a.log() and "forbidden" in a.log(), "a 403 in the agent's log")
    assert a.proc is not None and a.proc.poll() is None
    assert condition(admin, node) is None


def test_api_up_after_a_restart_before_any_write(
    admin: Kube, agent_kubeconfig: Path, node: str, agents: list[AgentProcess], tmp_path: Path
) -> None:
    """memfrag_api_up follows every request (the watches' lists too). Before: it followed
    writes only, so a restarted agent with nothing to write read 0 until its heartbeat."""
    a = start_agent(agents, tmp_path, node, agent_kubeconfig)
    wait_for(lambda: status_is(admin, node, "False"), "first report")
    a.stop()
    b = start_agent(agents, tmp_path, node, agent_kubeconfig)
    wait_for(
        lambda: b.metrics().get("memfrag_last_successful_poll_timestamp_seconds", 0) > 0,
        "a poll after the restart",
    )
    assert b.metrics()["memfrag_api_up"] == 1.0  # the heartbeat (30 s) is not due yet
    assert '"msg": "taint' not in b.log()  # and nothing was written


def test_api_up_is_0_when_the_token_loses_its_rights(
    control_plane: ControlPlane,
    admin: Kube,
    node: str,
    agents: list[AgentProcess],
    tmp_path: Path,
) -> None:
    """Before: a 403 is not retryable, so it left memfrag_api_up at 1 while every write
    failed (179 errors in 45 s, the node fragmented, the API still saying False)."""
    sa_name = f"revoked-{node}"
    admin.request(
        "POST",
        f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts",
        body={"metadata": {"name": sa_name}},
    )
    subject = [{"kind": "ServiceAccount", "name": sa_name, "namespace": NAMESPACE}]
    role = {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "memfrag-agent"}
    admin.request(
        "POST",
        "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
        body={"metadata": {"name": sa_name}, "roleRef": role, "subjects": subject},
    )
    kc = control_plane.service_account_kubeconfig(NAMESPACE, sa_name, tmp_path / "kc")
    a = start_agent(agents, tmp_path, node, kc)
    wait_for(lambda: status_is(admin, node, "False"), "first report")
    wait_for(lambda: a.metrics().get("memfrag_api_up") == 1.0, "api_up 1")
    admin.request("DELETE", f"/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/{sa_name}")
    a.host.fragmented()  # something to write, and every write is now forbidden
    wait_for(lambda: a.metrics().get("memfrag_api_up") == 0.0, "api_up 0 on 403")
    m = a.metrics()
    assert m['memfrag_api_down_reason{reason="forbidden"}'] == 1.0
    assert m['memfrag_api_down_reason{reason="unreachable"}'] == 0.0
    assert status_is(admin, node, "False")


def test_sandbox_event_watch_keeps_only_this_nodes_pods(
    admin: Kube, agent_kubeconfig: Path, node: str, tmp_path: Path
) -> None:
    """One Pending pod here and 1,200 FailedCreatePodSandBox Events about pods elsewhere.
    Before: one unpaged list and a cache of every one of them (20,000 took the agent from 47 to
    206 MiB). Now the list is paged and only Events about this node's pods are kept."""
    name = f"sandbox-{node}"
    create_pod(admin, name, node)
    filler = 'failed to start sandbox container: "exit status 6" ' + "x" * 400

    with ThreadPoolExecutor(8) as pool:
        list(
            pool.map(
                lambda i: sandbox_event(
                    admin, f"{node}.{i}.sandbox", f"elsewhere-{node}-{i}", f"other-{i % 50}", filler
                ),
                range(1200),
            )
        )
    sandbox_event(admin, f"{name}.sandbox", name, node)
    host = FakeHost(tmp_path / "proc")
    cfg = tmp_path / "config.yaml"
    cfg.write_text("reporting:\n  stuck_pod_seconds: 3600\n")
    agent = Agent(
        node,
        Kube.from_environment(str(agent_kubeconfig)),
        ConfigFile(str(cfg)),
        ProcReader(host.root),
    )
    assert agent.stuck is not None
    stuck = agent.stuck
    stuck.pods.start()
    try:
        wait_for(stuck.pods.synced.is_set, "the pod list")
        stuck.update_watch(time.monotonic())  # starts the Event watch
        assert stuck.stuck(time.time(), 3600) == []
        inf = stuck.sandbox
        assert inf is not None
        wait_for(inf.synced.is_set, "the Event list", 120)
        assert [e["involvedObject"]["name"] for e in inf.items()] == [name]
        assert inf.pages >= 3  # 1,201 Events and more, 500 a page
        assert stuck.stuck(time.time(), 3600) == [f"default/{name}"]
    finally:
        stuck.stop()


@pytest.mark.parametrize("step", [-7200.0, 3600.0])
def test_a_wall_clock_step_neither_strands_nor_skips_the_hold(
    admin: Kube, agent_kubeconfig: Path, node: str, tmp_path: Path, step: float
) -> None:
    """The agent in-process with both clocks in the test's hands. Before: holds ran on the wall
    clock, so 2 h back left a recovered node tainted ("healthy for -7167s") and 1 h forward
    cleared the hold a second later. Now holds run on the monotonic clock."""
    host = FakeHost(tmp_path / "proc")
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        "reporting:\n  fragmented_for_seconds: 2\n  healthy_for_seconds: 10\n"
        "  max_tainted_percent: 100\n"
    )
    wall, mono = Clock(real=True), Clock(1000.0)
    agent = Agent(
        node,
        Kube.from_environment(str(agent_kubeconfig)),
        ConfigFile(str(cfg)),
        ProcReader(host.root),
        wall=wall,
        monotonic=mono,
    )
    for inf in agent.informers():
        inf.start()
    assert agent.reporter is not None
    node_inf = agent.reporter.node_inf

    def cycle(dt: float) -> None:
        mono.t += dt
        agent.cycle([])

    try:
        wait_for(lambda: node_inf.get(node), "the node")
        host.fragmented()
        cycle(0)
        cycle(3)
        assert our_taint(admin, node)
        host.healthy()
        cycle(1)  # recovery begins
        wall.t = step
        cycle(1)
        assert our_taint(admin, node)  # 1 s of 10: still held, whichever way the clock went
        msg = (condition(admin, node) or {}).get("message", "")
        assert "healthy for -" not in msg
        cycle(9)
        assert not our_taint(admin, node)  # 10 s healthy by the monotonic clock: cleared
        assert status_is(admin, node, "False")
    finally:
        for inf in agent.informers():
            inf.stop()


def test_failed_sandbox_events_count_at_once(
    admin: Kube, agent_kubeconfig: Path, node: str, agents: list[AgentProcess], tmp_path: Path
) -> None:
    """kubelet's FailedCreatePodSandBox (runc 'exit status 6') marks a pod stuck at once,
    without waiting for the stuck threshold."""
    name = f"sandbox-{node}"
    create_pod(admin, name, node)
    a = start_agent(
        agents, tmp_path, node, agent_kubeconfig, {"reporting": {"stuck_pod_seconds": 3600}}
    )
    wait_for(lambda: status_is(admin, node, "False"), "first report")
    assert a.metrics()["memfrag_stuck_pods"] == 0.0
    sandbox_event(
        admin,
        f"{name}.sandbox",
        name,
        node,
        "failed to start sandbox container: ... running exec setns process for init "
        'caused "exit status 6"',
    )
    wait_for(lambda: a.metrics().get("memfrag_stuck_pods") == 1.0, "the pod counted as stuck")


def test_repeated_findings_are_counted_once_announced(
    admin: Kube, agent_kubeconfig: Path, node: str, agents: list[AgentProcess], tmp_path: Path
) -> None:
    a = start_agent(agents, tmp_path, node, agent_kubeconfig)
    for seq in range(1, 21):
        a.write_kmsg(kmsg_line(SEED_LINE, seq=seq))
    key = 'memfrag_kernel_log_findings_total{kind="page_allocation_failure",order="4"}'
    wait_for(lambda: a.metrics().get(key) == 20.0, "twenty findings counted")
    wait_for(lambda: "HighOrderAllocationFailed" in events(admin, node), "the event")
    time.sleep(2)
    assert events(admin, node)["HighOrderAllocationFailed"]["count"] == 1
    assert a.log().count('"msg": "kernel log finding"') == 1


def test_another_tools_taint_under_our_key_stays(
    admin: Kube, agent_kubeconfig: Path, node: str, agents: list[AgentProcess], tmp_path: Path
) -> None:
    """Our taint is our key AND effect. Before: every taint under the key was replaced when
    ours went on and removed when it came off, another tool's PreferNoSchedule too."""
    theirs = {"key": TAINT, "value": "other-tool", "effect": "PreferNoSchedule"}
    admin.request(
        "PATCH", f"/api/v1/nodes/{node}", body={"spec": {"taints": [theirs]}}, content_type=SMP
    )
    a = start_agent(agents, tmp_path, node, agent_kubeconfig)
    wait_for(lambda: status_is(admin, node, "False"), "first report")
    assert not a.metrics()["memfrag_tainted"]  # theirs is not ours
    a.host.fragmented()
    wait_for(
        lambda: (
            {t["effect"] for t in taints(admin, node) if t["key"] == TAINT}
            == {"NoSchedule", "PreferNoSchedule"}
        ),
        "ours next to theirs",
    )
    a.host.healthy()
    wait_for(lambda: status_is(admin, node, "False"), "recovered")
    wait_for(lambda: [t for t in taints(admin, node) if t["key"] == TAINT] == [theirs], "theirs")


def test_a_changed_taint_effect_is_applied(
    admin: Kube, agent_kubeconfig: Path, node: str, agents: list[AgentProcess], tmp_path: Path
) -> None:
    """Before: a new reporting.taint_effect never reached a taint already on the node."""
    a = start_tainted(admin, agents, tmp_path, node, agent_kubeconfig)
    a.config["reporting"]["taint_effect"] = "PreferNoSchedule"
    a.write_config()
    wait_for(
        lambda: (
            [t["effect"] for t in taints(admin, node) if t["key"] == TAINT] == ["PreferNoSchedule"]
        ),
        "the taint with its new effect",
    )
    # The Event is written after the taint's PATCH, in the same tick: seeing the taint first
    # does not mean the Event is there yet (asserting at once failed 1 run in 3 on a busy host).
    wait_for(lambda: "TaintChanged" in events(admin, node), "the TaintChanged Event")


def test_recovery_deletes_stuck_pods_a_controller_owns(
    control_plane: ControlPlane,
    admin: Kube,
    node: str,
    agents: list[AgentProcess],
    tmp_path: Path,
) -> None:
    """remediation.delete_stuck_pods: after recovery, a stuck pod with a controller is deleted
    (so it is recreated); a bare pod is left alone. The chart grants pods/delete only then."""
    apply_chart_rbac(
        control_plane.kubeconfig, "memfrag-deleter", ("config.remediation.delete_stuck_pods=true",)
    )
    kc = control_plane.service_account_kubeconfig(
        NAMESPACE, "memfrag-deleter-memfrag-agent", tmp_path / "deleter.kc"
    )
    owned, bare = f"owned-{node}", f"bare-{node}"
    for name in (owned, bare):
        create_pod(admin, name, node)
    # The owner must exist: once kube-controller-manager runs (the chart tests start it), its
    # garbage collector deletes pods whose owner is gone. A ConfigMap stands in for the
    # ReplicaSet (no controller acts on it); the agent only reads `controller: true`.
    owner = admin.request(
        "POST",
        "/api/v1/namespaces/default/configmaps",
        body={"metadata": {"name": f"owner-{node}"}},
    )
    admin.request(
        "PATCH",
        f"/api/v1/namespaces/default/pods/{owned}",
        body={
            "metadata": {
                "ownerReferences": [
                    {
                        "apiVersion": "v1",
                        "kind": "ConfigMap",
                        "name": owner["metadata"]["name"],
                        "uid": owner["metadata"]["uid"],
                        "controller": True,
                    }
                ]
            }
        },
        content_type=SMP,
    )
    host = FakeHost(tmp_path / "proc")
    host.fragmented()
    a = start_agent(
        agents,
        tmp_path,
        node,
        kc,
        {
            "reporting": {"stuck_pod_seconds": 0},
            "remediation": {"delete_stuck_pods": True},
        },
        host=host,
    )
    wait_for(lambda: our_taint(admin, node), "taint")
    wait_for(lambda: a.metrics().get("memfrag_stuck_pods") == 2.0, "two stuck pods")
    host.healthy()
    wait_for(lambda: "StuckPodDeleted" in events(admin, node), "a StuckPodDeleted event")
    names = {
        p["metadata"]["name"]
        for p in admin.request(
            "GET", "/api/v1/namespaces/default/pods", {"fieldSelector": f"spec.nodeName={node}"}
        )["items"]
        if not p["metadata"].get("deletionTimestamp")
    }
    assert names == {bare}


def test_a_closed_kernel_log_is_reopened(
    agent_kubeconfig: Path, node: str, agents: list[AgentProcess], tmp_path: Path
) -> None:
    a = start_agent(agents, tmp_path, node, agent_kubeconfig)
    a.reopen_kmsg_writer()  # the writer goes away: the follower sees EOF
    wait_for(lambda: a.metrics().get("memfrag_kmsg_reopens_total") == 1.0, "one reopen")
    a.write_kmsg(kmsg_line(SEED_LINE))
    key = 'memfrag_kernel_log_findings_total{kind="page_allocation_failure",order="4"}'
    wait_for(lambda: a.metrics().get(key) == 1.0, "a finding after the reopen")
    assert "closed by the writer" in a.log() and "reopened" in a.log()


def test_suppressed_reports_are_counted_and_told(
    admin: Kube, agent_kubeconfig: Path, node: str, agents: list[AgentProcess], tmp_path: Path
) -> None:
    """`warn_alloc: N callbacks suppressed`: N failures the log did not print (issue 14)."""
    a = start_kmsg_driven_agent(admin, agents, tmp_path, node, agent_kubeconfig)
    a.write_kmsg(kmsg_line("warn_alloc: 3 callbacks suppressed", seq=1))
    wait_for(
        lambda: a.metrics().get("memfrag_kmsg_suppressed_total") == 3.0,
        "the suppressed reports counted",
    )
    a.host.fragmented()
    a.write_kmsg(kmsg_line(SEED_LINE, seq=2))
    wait_for(lambda: status_is(admin, node, "True"), "condition True after the kmsg line", 60)
    c = condition(admin, node)
    assert c is not None
    assert "suppressed 3 more allocation-failure report(s)" in c["message"]


def test_the_contiguity_label_follows_the_bucket_without_a_write_per_tick(
    admin: Kube, agent_kubeconfig: Path, node: str, agents: list[AgentProcess], tmp_path: Path
) -> None:
    """reporting.contiguity_label, as the chart's ServiceAccount (its nodes patch): high on a
    healthy host, none once fragmented, and the Node untouched while nothing changes."""
    label = "memfrag.dev/contiguity"

    def value() -> str | None:
        node_json = admin.request("GET", f"/api/v1/nodes/{node}")
        return (node_json["metadata"].get("labels") or {}).get(label)

    a = start_agent(
        agents, tmp_path, node, agent_kubeconfig, {"reporting": {"contiguity_label": True}}
    )
    wait_for(lambda: value() == "high", "the label on a healthy host")
    wait_for(lambda: status_is(admin, node, "False"), "the condition")
    rv = admin.request("GET", f"/api/v1/nodes/{node}")["metadata"]["resourceVersion"]
    time.sleep(4)  # four polls
    assert admin.request("GET", f"/api/v1/nodes/{node}")["metadata"]["resourceVersion"] == rv
    a.host.fragmented()
    wait_for(lambda: value() == "none", "the label once fragmented")
    a.host.healthy()
    wait_for(lambda: value() == "high", "the label after recovery")
    assert a.stop() == 0
