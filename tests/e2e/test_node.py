"""End to end on a real node, the way users run it: `helm install` -> a pod on the node ->
`kubectl describe node` -> `helm uninstall`.

The node is this machine (tests.cluster.node: kubelet, containerd, runc, CNI, kube-proxy), the
image is built from the Dockerfile, the chart goes into kube-system (not the default
namespace), and stuck pods are made by kubelet itself through a runtime that fails sandboxes.
The only test-only setting is the agent's proc root: a hostPath snapshot the test switches
between this machine's real buddyinfo and the seed incident's, since the kernel here is not
fragmented. The tests run in file order and share one release.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cluster.fakehost import FakeHost
from tests.cluster.node import host_footprint
from tests.cluster.plane import ControlPlaneError
from tests.cluster.realcluster import NodeCluster, container_cgroup
from tests.cluster.scrape import scrape
from tests.cluster.waiting import wait_for
from tests.e2e.conftest import REPO, Images, require_node

# The first test waits for the images: a cold build (debootstrap, pip) takes a few minutes.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]

CHART = REPO / "charts" / "memfrag-agent"
NAMESPACE = "kube-system"
RELEASE = "memfrag-agent"
CONDITION = "MemoryFragmented"
TAINT = "memfrag.dev/fragmented"
SNAPSHOT_IN_POD = "/host/snapshot"
OUT = REPO / "out" / "e2e"
# Written by root into /dev/kmsg, so it carries the user facility: the agent accepts it because
# the test's values say so (sources.accept_user_facility exists for exactly this).
KMSG_MARK = f"memfrag-e2e-{os.getpid()}"
KMSG_LINE = (
    f"<4>{KMSG_MARK}: page allocation failure: order:5, "
    "mode:0x40cc0(GFP_KERNEL|__GFP_COMP), nodemask=(null),cpuset=/,mems_allowed=0\n"
)


# --- the node itself ----------------------------------------------------------------------


def test_node_starts_twice_and_leaves_nothing_behind(
    images: Images, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Two runs in a row on one machine: each comes up Ready, runs a pod, and its teardown
    leaves the host as it found it (processes, mounts, bridge, iptables, cgroups, paths)."""
    require_node()
    base = tmp_path_factory.getbasetemp()
    before = host_footprint(base)
    for run in (1, 2):
        work = tmp_path_factory.mktemp(f"lifecycle-{run}")
        with NodeCluster(work, images=(images.pause,), pause_image=images.pause_ref) as c:
            c.kubectl("run", "pause", "--image", images.pause_ref,
                      "--image-pull-policy", "Never", "--restart", "Never")  # fmt: skip
            wait_for(
                lambda: c.get("pod", "pause")["status"].get("phase") == "Running",
                f"a pod running on the real node (run {run})",
                timeout=120,
                every=1,
            )
        assert host_footprint(base) == before, f"run {run} left something behind"


# --- helm install on the real node --------------------------------------------------------


@dataclass
class Release:
    cluster: NodeCluster
    snapshot: FakeHost
    values: Path
    peak: dict[str, int] = field(default_factory=dict)

    @property
    def node(self) -> str:
        return self.cluster.name

    def pods(self) -> list[dict[str, Any]]:
        selector = "app.kubernetes.io/name=memfrag-agent,app.kubernetes.io/component=agent"
        items: list[dict[str, Any]] = self.cluster.get("pods", "-n", NAMESPACE, "-l", selector)[
            "items"
        ]
        return items

    def pod(self) -> dict[str, Any]:
        (pod,) = [p for p in self.pods() if not p["metadata"].get("deletionTimestamp")]
        return pod

    def metrics(self) -> dict[str, float]:
        pod = self.pod()
        port = pod["spec"]["containers"][0]["ports"][0]["containerPort"]
        return scrape(f"http://{pod['status']['podIP']}:{port}/metrics")

    def condition(self) -> dict[str, Any] | None:
        for c in self.cluster.get("node", self.node)["status"].get("conditions", []):
            if c["type"] == CONDITION:
                return dict(c)
        return None

    def tainted(self) -> bool:
        taints = self.cluster.get("node", self.node)["spec"].get("taints") or []
        return any(t["key"] == TAINT for t in taints)

    def events(self, reason: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.cluster.get("events", "-A")["items"]
        return [e for e in items if e["reason"] == reason]

    def helm(self, *args: str) -> str:
        return self.cluster.helm(*args, "--namespace", NAMESPACE)


def container_peak_bytes(pod: dict[str, Any], container: str) -> int | None:
    """The container's peak memory (cgroup v1 max_usage_in_bytes) as the kernel measured it."""
    path = container_cgroup(pod, container)
    if path is None:
        return None
    try:
        return int((path / "memory.max_usage_in_bytes").read_text())
    except (OSError, ValueError):
        return None


@pytest.fixture(scope="module")
def release(cluster: NodeCluster, images: Images) -> Iterator[Release]:
    snapshot = FakeHost(cluster.workdir / "snapshot")
    name, _, tag = images.agent_ref.rpartition(":")
    values = {
        "image": {"repository": name, "tag": tag, "pullPolicy": "Never"},
        "config": {
            "sources": {"poll_interval_seconds": 2, "accept_user_facility": True},
            "reporting": {
                "fragmented_for_seconds": 0,
                "healthy_for_seconds": 5,
                "stuck_pod_seconds": 20,
                "max_tainted_percent": 100,
            },
            "remediation": {"mode": "dry-run", "delete_stuck_pods": True},
        },
        # Test only: the agent's proc root is a snapshot the test controls.
        "extraArgs": ["--proc-root", SNAPSHOT_IN_POD],
        "extraVolumes": [
            {"name": "snapshot", "hostPath": {"path": str(snapshot.root), "type": "Directory"}}
        ],
        "extraVolumeMounts": [{"name": "snapshot", "mountPath": SNAPSHOT_IN_POD, "readOnly": True}],
    }
    path = cluster.workdir / "e2e-values.yaml"
    path.write_text(yaml.safe_dump(values))
    rel = Release(cluster, snapshot, path)
    yield rel
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "peak-memory.json").write_text(json.dumps(rel.peak, indent=1) + "\n")
    rel.cluster.helm("uninstall", RELEASE, "--namespace", NAMESPACE, check=False)


def test_helm_install_runs_a_ready_agent_pod_in_kube_system(release: Release) -> None:
    release.helm("install", RELEASE, str(CHART), "--values", str(release.values))
    # What the README says to run: rollout status, not `helm install --wait` (which returned
    # while the only pod was still ContainerCreating).
    release.cluster.kubectl(
        "rollout", "status", f"daemonset/{RELEASE}", "-n", NAMESPACE, "--timeout", "300s"
    )
    pod = release.pod()
    assert pod["spec"]["nodeName"] == release.node
    assert pod["status"]["phase"] == "Running"
    ready = {c["type"]: c["status"] for c in pod["status"]["conditions"]}
    assert ready["Ready"] == "True"
    # The liveness probe (GET /healthz by kubelet) has passed: no restart since it started.
    (cs,) = pod["status"]["containerStatuses"]
    assert cs["restartCount"] == 0 and cs["ready"]
    first = wait_for(release.condition, "the agent's first report", timeout=60, every=1)
    assert first["status"] == "False", first


def test_a_kernel_log_line_on_the_host_reaches_the_agent_in_the_pod(release: Release) -> None:
    with open("/dev/kmsg", "w") as kmsg:
        kmsg.write(KMSG_LINE)

    def found() -> list[dict[str, Any]]:
        events = release.events("HighOrderAllocationFailed")
        return [e for e in events if KMSG_MARK in e["message"]]

    (event, *_) = wait_for(found, "the HighOrderAllocationFailed Event", timeout=60, every=1)
    assert event["involvedObject"]["name"] == release.node and "order 5" in event["message"]
    key = 'memfrag_kernel_log_findings_total{kind="page_allocation_failure",order="5"}'
    assert release.metrics().get(key, 0) >= 1


def test_fragmented_node_gets_the_condition_and_the_taint_then_recovers(release: Release) -> None:
    release.snapshot.fragmented()
    wait_for(release.tainted, "the taint on the fragmented node", timeout=60, every=1)
    cond = release.condition()
    assert cond is not None and cond["status"] == "True", cond
    # The taint slot is a Lease in the release namespace (kube-system), where the Role allows.
    leases = release.cluster.get("leases", "-n", NAMESPACE)["items"]
    assert any(lease["metadata"]["name"].startswith("memfrag-taint") for lease in leases)

    release.snapshot.healthy()
    wait_for(lambda: not release.tainted(), "the taint to clear", timeout=60, every=1)
    cond = release.condition()
    assert cond is not None and cond["status"] == "False", cond


def test_stuck_pods_made_by_kubelet_are_counted_then_deleted_and_recreated(
    release: Release, images: Images
) -> None:
    release.snapshot.fragmented()
    wait_for(release.tainted, "the node fragmented again", timeout=60, every=1)
    node = release.cluster.node
    node.fail_sandboxes(True)
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "stuck", "namespace": "default"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "stuck"}},
            "template": {
                "metadata": {"labels": {"app": "stuck"}},
                "spec": {
                    "runtimeClassName": "memfrag-failing",
                    # It must land on the tainted node, as the pods of the incident did.
                    "tolerations": [{"key": TAINT, "operator": "Exists"}],
                    "containers": [
                        {"name": "c", "image": images.pause_ref, "imagePullPolicy": "Never"}
                    ],
                },
            },
        },
    }
    manifest = release.cluster.workdir / "stuck.yaml"
    manifest.write_text(yaml.safe_dump(deployment))
    release.cluster.kubectl("apply", "-f", str(manifest))

    def stuck_pod() -> dict[str, Any] | None:
        for p in release.cluster.get("pods", "-n", "default", "-l", "app=stuck")["items"]:
            waiting = [
                (cs.get("state") or {}).get("waiting", {}).get("reason")
                for cs in p["status"].get("containerStatuses") or []
            ]
            if waiting == ["ContainerCreating"]:
                return dict(p)
        return None

    stuck = wait_for(stuck_pod, "a pod stuck in ContainerCreating", timeout=120, every=1)
    name = stuck["metadata"]["name"]
    # kubelet itself said why, the way it did in the incident.
    sandbox = wait_for(
        lambda: [
            e
            for e in release.events("FailedCreatePodSandBox")
            if e["involvedObject"]["name"] == name
        ],
        "kubelet's FailedCreatePodSandBox Event",
        timeout=60,
        every=1,
    )
    assert "exit status 6" in sandbox[0]["message"]
    assert sandbox[0]["source"].get("component") == "kubelet"
    wait_for(
        lambda: f"default/{name}" in (release.condition() or {}).get("message", ""),
        "the stuck pod named in the condition",
        timeout=60,
        every=1,
    )
    assert release.metrics()["memfrag_stuck_pods"] == 1

    # Recovery: the agent deletes the stuck pod so its ReplicaSet recreates it.
    release.snapshot.healthy()
    wait_for(
        lambda: [e for e in release.events("StuckPodDeleted") if name in e["message"]],
        "the StuckPodDeleted Event",
        timeout=60,
        every=1,
    )
    node.fail_sandboxes(False)

    def replacement_running() -> bool:
        pods = release.cluster.get("pods", "-n", "default", "-l", "app=stuck")["items"]
        return any(
            p["metadata"]["name"] != name and p["status"].get("phase") == "Running" for p in pods
        )

    wait_for(replacement_running, "the recreated pod running", timeout=120, every=1)
    assert not release.tainted()
    release.cluster.kubectl("delete", "deployment", "stuck", "-n", "default", "--wait=true")


def test_helm_test_passes_as_a_real_pod(release: Release) -> None:
    out = release.helm("test", RELEASE, "--timeout", "300s")
    assert re.search(r"Phase:\s+Succeeded", out), out


def test_a_config_change_is_hot_reloaded_in_the_running_pod(release: Release) -> None:
    uid = release.pod()["metadata"]["uid"]
    ok = 'memfrag_config_reloads_total{result="ok"}'
    before = release.metrics().get(ok, 0)
    release.helm(
        "upgrade", RELEASE, str(CHART), "--reuse-values",
        "--set", "config.reporting.heartbeat_seconds=600",
    )  # fmt: skip
    wait_for(
        lambda: release.metrics().get(ok, 0) > before,
        "the running agent to reload its ConfigMap",
        timeout=120,
        every=2,
    )
    assert release.pod()["metadata"]["uid"] == uid, "a reloadable key must not restart the pod"


def test_a_key_read_at_start_rolls_the_daemonset(release: Release) -> None:
    uid = release.pod()["metadata"]["uid"]
    release.peak["agent_bytes"] = container_peak_bytes(release.pod(), "agent") or 0
    release.helm(
        "upgrade", RELEASE, str(CHART), "--reuse-values",
        "--set", "config.reporting.metrics_port=9809",
    )  # fmt: skip
    release.cluster.kubectl(
        "rollout", "status", f"daemonset/{RELEASE}", "-n", NAMESPACE, "--timeout", "300s"
    )
    wait_for(
        lambda: [p for p in release.pods() if p["metadata"]["uid"] != uid] == release.pods(),
        "the old agent pod replaced",
        timeout=120,
        every=1,
    )
    pod = release.pod()
    assert pod["spec"]["containers"][0]["ports"][0]["containerPort"] == 9809
    wait_for(lambda: release.metrics().get("memfrag_api_up") == 1, "the new pod reporting", 60)


class PeakWatcher(threading.Thread):
    """Follows the cleanup hook's pod while `helm uninstall` runs, keeping each container's
    peak memory as the kernel counts it. The pod is gone as soon as the hook succeeds and its
    last container lives a second or two, so once the pod's UID is known its cgroups are read
    directly, each container named by the command line of its process."""

    NAMES = (("memfrag-agent cleanup", "cleanup"), ("python -c", "stop-agents"))

    def __init__(self, cluster: NodeCluster) -> None:
        super().__init__(daemon=True)
        self.cluster = cluster
        self.done = threading.Event()
        self.peak: dict[str, int] = {}

    def _container(self, cgroup: Path) -> str | None:
        try:
            pids = (cgroup / "cgroup.procs").read_text().split()
            cmdline = Path(f"/proc/{pids[0]}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, IndexError):
            return None
        return next((name for mark, name in self.NAMES if mark in cmdline), None)

    def run(self) -> None:
        selector = "app.kubernetes.io/component=cleanup"
        uids: set[str] = set()
        named: dict[Path, str] = {}
        while not self.done.is_set():
            if not uids:
                try:
                    pods = self.cluster.get("pods", "-n", NAMESPACE, "-l", selector)["items"]
                    uids = {p["metadata"]["uid"] for p in pods}
                except (ControlPlaneError, ValueError):  # the test asserts on the outcome
                    pass
            for uid in uids:
                for d in Path("/sys/fs/cgroup/memory").glob(f"**/pod{uid}/*/"):
                    name = named.get(d) or self._container(d)
                    if name is None:
                        continue
                    named[d] = name
                    try:
                        value = int((d / "memory.max_usage_in_bytes").read_text())
                    except (OSError, ValueError):
                        continue
                    self.peak[name] = max(self.peak.get(name, 0), value)
            time.sleep(0.05)


def test_helm_uninstall_runs_the_hook_as_a_real_pod_and_leaves_nothing(release: Release) -> None:
    release.snapshot.fragmented()
    wait_for(release.tainted, "the taint, to see the hook remove it", timeout=60, every=1)
    watcher = PeakWatcher(release.cluster)
    watcher.start()
    try:
        release.helm("uninstall", RELEASE, "--wait", "--timeout", "300s")
    finally:
        watcher.done.set()
        watcher.join(10)
    release.peak.update({f"hook_{k}_bytes": v for k, v in watcher.peak.items()})
    assert release.condition() is None
    assert not release.tainted()
    leases = release.cluster.get("leases", "-n", NAMESPACE)["items"]
    assert not [x for x in leases if x["metadata"]["name"].startswith("memfrag-")]
    assert not release.pods()
    # The hook ran for real: both its containers were seen by the kernel.
    assert set(watcher.peak) == {"stop-agents", "cleanup"}, watcher.peak
    release.snapshot.healthy()
