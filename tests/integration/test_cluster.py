"""The local control plane itself: it must behave like a real cluster for the agent's tests."""

from __future__ import annotations

import os
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s_client
from kubernetes.client import ApiClient, ApiException, V1DaemonSet, V1Pod

from tests.cluster import ControlPlane, ControlPlaneError
from tests.cluster.plane import BINARIES, DEFAULT_BIN_DIR, NOT_READY_TAINT, api_client_for
from tests.cluster.waiting import wait_for

pytestmark = pytest.mark.integration


def new_namespace(api: ApiClient) -> str:
    name = f"t-{uuid.uuid4().hex[:8]}"
    k8s_client.CoreV1Api(api).create_namespace(
        k8s_client.V1Namespace(metadata=k8s_client.V1ObjectMeta(name=name))
    )
    return name


def create_service_account(api: ApiClient, namespace: str, name: str) -> None:
    k8s_client.CoreV1Api(api).create_namespaced_service_account(
        namespace, k8s_client.V1ServiceAccount(metadata=k8s_client.V1ObjectMeta(name=name))
    )


def pod_spec(**extra: Any) -> dict[str, Any]:
    """A pod that never needs a kubelet or a token: there is neither here."""
    return {
        "automountServiceAccountToken": False,
        "containers": [{"name": "pause", "image": "registry.k8s.io/pause:3.10"}],
        **extra,
    }


def node_name_of(pod: V1Pod) -> str | None:
    return pod.spec.node_name if pod.spec else None


def readyz(plane: ControlPlane, timeout: float = 10) -> bytes:
    with urllib.request.urlopen(
        f"{plane.server}/readyz", context=plane.ssl_context(), timeout=timeout
    ) as response:
        body: bytes = response.read()
        return body


def test_missing_binary_fails_naming_it_and_make_tools(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in BINARIES:
        if name != "kube-apiserver":
            os.symlink(DEFAULT_BIN_DIR / name, bin_dir / name)
    with pytest.raises(ControlPlaneError, match=r"missing kube-apiserver in .*run `make tools`"):
        ControlPlane(tmp_path / "work", bin_dir=bin_dir)


def test_apiserver_is_ready(control_plane: ControlPlane, kube_api: ApiClient) -> None:
    assert readyz(control_plane) == b"ok"
    assert k8s_client.VersionApi(kube_api).get_code().git_version == "v1.35.4"
    assert control_plane.ca_file.read_text().startswith("-----BEGIN CERTIFICATE-----")


def test_registered_node_is_listed_ready_and_untainted(
    control_plane: ControlPlane, kube_api: ApiClient
) -> None:
    control_plane.register_node("node-listed", labels={"memfrag.io/test": "listed"})
    listed = k8s_client.CoreV1Api(kube_api).list_node(label_selector="memfrag.io/test=listed")
    nodes = [n.to_dict() for n in listed.items]
    assert [n["metadata"]["name"] for n in nodes] == ["node-listed"]
    node = nodes[0]
    assert node["metadata"]["labels"]["kubernetes.io/hostname"] == "node-listed"
    assert node["status"]["allocatable"] == {"cpu": "2", "memory": "24Gi", "pods": "110"}
    assert [c["status"] for c in node["status"]["conditions"] if c["type"] == "Ready"] == ["True"]
    assert not any(t["key"] == NOT_READY_TAINT for t in node["spec"]["taints"] or [])


def test_scheduler_binds_pod_to_registered_node(
    control_plane: ControlPlane, kube_api: ApiClient
) -> None:
    control_plane.register_node("node-sched")
    control_plane.start_scheduler()
    core = k8s_client.CoreV1Api(kube_api)
    ns = new_namespace(kube_api)  # no `default` ServiceAccount unless the controller-manager runs
    pod = V1Pod.model_validate(
        {
            "metadata": {"name": "p"},
            "spec": pod_spec(nodeSelector={"kubernetes.io/hostname": "node-sched"}),
        }
    )
    core.create_namespaced_pod(ns, pod)
    bound = wait_for(
        lambda: node_name_of(core.read_namespaced_pod("p", ns)), "pod to be bound", timeout=60
    )
    assert bound == "node-sched"


def test_apiserver_restart_keeps_data(control_plane: ControlPlane, kube_api: ApiClient) -> None:
    control_plane.register_node("node-restart")
    server = control_plane.server
    control_plane.stop_apiserver()
    assert not control_plane.running("kube-apiserver")
    assert control_plane.running("etcd")
    with pytest.raises(urllib.error.URLError):
        readyz(control_plane, timeout=2)
    control_plane.start_apiserver()
    assert control_plane.server == server
    node = k8s_client.CoreV1Api(kube_api).read_node("node-restart").to_dict()
    assert node["metadata"]["labels"]["kubernetes.io/hostname"] == "node-restart"


def test_service_account_without_rbac_is_forbidden(
    control_plane: ControlPlane, kube_api: ApiClient, tmp_path: Path
) -> None:
    ns = new_namespace(kube_api)
    create_service_account(kube_api, ns, "no-rbac")
    path = control_plane.service_account_kubeconfig(ns, "no-rbac", tmp_path / "sa.kubeconfig")
    with api_client_for(path) as sa_api:
        review = k8s_client.AuthenticationV1Api(sa_api).create_self_subject_review(
            k8s_client.V1SelfSubjectReview()
        )
        assert review.to_dict()["status"]["user_info"]["username"] == (
            f"system:serviceaccount:{ns}:no-rbac"
        )
        with pytest.raises(ApiException) as forbidden:
            k8s_client.CoreV1Api(sa_api).list_node()
    assert forbidden.value.status == 403


def test_pod_bound_token_carries_pod_and_node_name(
    control_plane: ControlPlane, kube_api: ApiClient, tmp_path: Path
) -> None:
    control_plane.register_node("node-bound")
    ns = new_namespace(kube_api)
    create_service_account(kube_api, ns, "agent")
    pod = V1Pod.model_validate(
        {
            "metadata": {"name": "agent-pod"},
            "spec": pod_spec(serviceAccountName="agent", nodeName="node-bound"),
        }
    )
    k8s_client.CoreV1Api(kube_api).create_namespaced_pod(ns, pod)
    path = control_plane.service_account_kubeconfig(
        ns, "agent", tmp_path / "agent.kubeconfig", bound_pod="agent-pod"
    )
    with api_client_for(path) as sa_api:
        review = k8s_client.AuthenticationV1Api(sa_api).create_self_subject_review(
            k8s_client.V1SelfSubjectReview()
        )
    extra = review.to_dict()["status"]["user_info"]["extra"]
    assert extra["authentication.kubernetes.io/pod-name"] == ["agent-pod"]
    assert extra["authentication.kubernetes.io/node-name"] == ["node-bound"]


def test_controller_manager_runs_a_daemonset_onto_the_node(
    control_plane: ControlPlane, kube_api: ApiClient
) -> None:
    control_plane.register_node("node-ds", labels={"memfrag.io/ds": "yes"})
    control_plane.start_scheduler()
    control_plane.start_controller_manager()
    core = k8s_client.CoreV1Api(kube_api)
    ns = new_namespace(kube_api)
    wait_for(
        lambda: core.list_namespaced_service_account(ns).items,
        "the default ServiceAccount",
        timeout=60,
    )
    labels = {"app": "ds"}
    daemonset = V1DaemonSet.model_validate(
        {
            "metadata": {"name": "ds"},
            "spec": {
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": pod_spec(nodeSelector={"memfrag.io/ds": "yes"}),
                },
            },
        }
    )
    k8s_client.AppsV1Api(kube_api).create_namespaced_daemon_set(ns, daemonset)
    nodes = wait_for(
        lambda: [n for p in core.list_namespaced_pod(ns).items if (n := node_name_of(p))],
        "the DaemonSet pod to be bound",
        timeout=60,
    )
    assert nodes == ["node-ds"]
