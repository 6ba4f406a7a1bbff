"""The chart's RBAC and admission policies against a stolen agent token, on the real local API
server: every request below is a real one, made with a ServiceAccount token bound to a pod of the
agent on node A (the token names node A), exactly as the kubelet would project it.

Each attack is data (ATTACKS, EVENT_ATTACKS, POD_CASES): one request that must be denied, and the
stored object must not change; next to them the agent's own writes, through the agent's own code
(agent.decide.nodeview's patches, agent.kube.events.EventRecorder), must be allowed. An attack on
the Node is first made by the admin as a dry run, which must change the object: a patch the API
server would ignore anyway proves nothing about the policy."""

from __future__ import annotations

import dataclasses
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from agent.base.times import rfc3339
from agent.decide.nodeview import (
    SUMMARY_ANNOTATION,
    UNREMEDIABLE_TYPE,
    Condition,
    ConditionStatus,
    condition_patch,
    node_view,
    removal_patch,
    taint_patch,
    with_taint,
    without_taint,
)
from agent.decide.report import EventReason, EventSpec, EventType, PodRef
from agent.kube.client import MERGE, SMP, ApiError, Kube
from agent.kube.events import EventRecorder
from tests.chart_tools import by_kind, documents, render
from tests.cluster import ControlPlane
from tests.cluster.rbac import KUBECTL
from tests.cluster.waiting import wait_for

pytestmark = pytest.mark.integration

JSON = dict[str, Any]
JSON_PATCH = "application/json-patch+json"
RELEASE = "adm"
NAMESPACE = "memfrag-adm"
FULLNAME = f"{RELEASE}-memfrag-agent"
NODE_A, NODE_B = "adm-node-a", "adm-node-b"
KEY = "memfrag.dev/fragmented"
CONDITION = "MemoryFragmented"
VAP = "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies"
RBAC = "/apis/rbac.authorization.k8s.io/v1"
POLICIES = ("node-scope", "pod-delete", "events")
FOREIGN = {"key": "example.com/other", "effect": "NoSchedule"}
OURS = {"key": KEY, "value": "true", "effect": "NoSchedule"}
DENIED_BY_POLICY = "ValidatingAdmissionPolicy"


# --- the cluster: the chart's RBAC and policies, two nodes, an agent pod on node A -------------


@dataclasses.dataclass
class Scope:
    admin: Kube
    agent: Kube  # token bound to the agent's pod on NODE_A
    unbound: Kube  # the same ServiceAccount, a token bound to nothing: names no node
    owner: JSON  # an ownerReference (controller) to an object that exists
    plane: ControlPlane


def _apply(plane: ControlPlane, docs: list[JSON]) -> None:
    subprocess.run(
        [str(KUBECTL), "--kubeconfig", str(plane.kubeconfig), "apply", "-f", "-"],
        input=yaml.safe_dump_all(docs),
        check=True,
        capture_output=True,
        text=True,
    )


def _realistic_status(node: str) -> JSON:
    """What a kubelet reports beyond register_node: 50 images (its default cap) and the kubelet
    endpoint. The policy compares all of it on every write, so the agent's own writes below
    also show the comparison stays within the CEL cost budget on a full-sized Node."""
    images = [
        {
            "names": [
                f"registry.example/team-{i}/app@sha256:{i:064x}",
                f"registry.example/app:{i}",
            ],
            "sizeBytes": 100_000_000 + i,
        }
        for i in range(50)
    ]
    return {
        "images": images,
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
        "nodeInfo": {
            "architecture": "amd64",
            "operatingSystem": "linux",
            "kubeletVersion": "v1.35.4",
            "kernelVersion": "6.18.0",
            "containerRuntimeVersion": "containerd://2.1.0",
            "osImage": "Debian GNU/Linux 13",
            "machineID": node,
            "systemUUID": node,
            "bootID": node,
        },
    }


KINDS = ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")
POLICY_KINDS = ("ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding")


def _chart(*sets: str, kinds: tuple[str, ...] = KINDS + POLICY_KINDS) -> list[JSON]:
    """The chart's objects of these kinds (no hooks), as `helm install` would create them."""
    docs = documents(
        render(
            release=RELEASE,
            namespace=NAMESPACE,
            sets=("config.remediation.delete_stuck_pods=true", *sets),
        )
    )
    return [
        d
        for kind in kinds
        for d in by_kind(docs, kind)
        if "helm.sh/hook" not in d["metadata"].get("annotations", {})
    ]


@pytest.fixture(scope="module")
def scope(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scope]:
    plane = control_plane
    # Its policy status controller type-checks the policies (the node lifecycle controller,
    # which would taint kubelet-less nodes, stays off).
    plane.start_controller_manager()
    admin = Kube.from_environment(str(plane.kubeconfig))
    chart = _chart()
    admin.request("POST", "/api/v1/namespaces", body={"metadata": {"name": NAMESPACE}})
    _apply(plane, chart)
    for node in (NODE_A, NODE_B):
        plane.register_node(node)
        admin.request(
            "PATCH",
            f"/api/v1/nodes/{node}/status",
            body={"status": _realistic_status(node)},
            content_type=SMP,
        )
    # The agent's pod on node A (no kubelet runs it): its token names node A.
    admin.request(
        "POST",
        f"/api/v1/namespaces/{NAMESPACE}/pods",
        body={
            "metadata": {"name": "agent-a"},
            "spec": {
                "nodeName": NODE_A,
                "serviceAccountName": FULLNAME,
                "tolerations": [{"operator": "Exists"}],  # as the DaemonSet's: never evicted
                "containers": [{"name": "agent", "image": "registry.example/memfrag-agent:1"}],
            },
        },
    )
    cm = admin.request(
        "POST", "/api/v1/namespaces/default/configmaps", body={"metadata": {"name": "adm-owner"}}
    )
    owner = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "name": "adm-owner",
        "uid": cm["metadata"]["uid"],
        "controller": True,
    }
    tmp = tmp_path_factory.mktemp("adm")
    bound = plane.service_account_kubeconfig(NAMESPACE, FULLNAME, tmp / "a", bound_pod="agent-a")
    unbound = plane.service_account_kubeconfig(NAMESPACE, FULLNAME, tmp / "u")
    s = Scope(
        admin, Kube.from_environment(str(bound)), Kube.from_environment(str(unbound)), owner, plane
    )
    # New policies reach the admission chain within moments: wait for each to be in force.
    wait_for(
        lambda: (
            DENIED_BY_POLICY in _answer(s.agent, "PATCH", f"/api/v1/nodes/{NODE_B}", _taint_b())
        ),
        "the node policy in force",
    )
    wait_for(
        lambda: DENIED_BY_POLICY in _answer(s.agent, "POST", EVENTS, _event(NODE_B)),
        "the events policy in force",
    )
    yield s
    for node in (NODE_A, NODE_B):
        _gone(admin, f"/api/v1/nodes/{node}")
    _gone(admin, "/api/v1/namespaces/default/configmaps/adm-owner")
    _gone(admin, f"/api/v1/namespaces/{NAMESPACE}")
    for d in chart:
        if d["metadata"].get("namespace") == "default":
            kind = d["kind"].lower() + "s"
            _gone(
                admin,
                f"{RBAC}/namespaces/default/{kind}/{d['metadata']['name']}",
            )


def _gone(kube: Kube, path: str) -> None:
    try:
        kube.request("DELETE", path)
    except ApiError as exc:
        if exc.status != 404:
            raise


def _answer(
    kube: Kube,
    method: str,
    path: str,
    body: Any = None,
    content_type: str | None = None,
    query: dict[str, str] | None = None,
) -> str:
    """'allowed', or the status and message the API server answered. A PATCH is a
    strategic-merge patch unless content_type says otherwise."""
    if content_type is None and method == "PATCH":
        content_type = SMP
    try:
        kube.request(method, path, query, body, content_type)
    except ApiError as exc:
        return f"{exc.status} {exc.reason}"
    return "allowed"


def _taint_b() -> JSON:
    return {"spec": {"taints": [OURS]}}


def _node(kube: Kube, name: str = NODE_A) -> JSON:
    return kube.request("GET", f"/api/v1/nodes/{name}")


def _stored(node: JSON) -> JSON:
    """The node as stored, without what changes on every write."""
    meta = {
        k: v for k, v in node["metadata"].items() if k not in ("resourceVersion", "managedFields")
    }
    return {**node, "metadata": meta}


def test_policies_are_accepted_and_type_checked(scope: Scope) -> None:
    """The API server accepted each policy and type-checked every expression against the
    schema of what it matches (Node, Pod, Event): no warning, no compile error."""
    for policy in POLICIES:
        name = f"{FULLNAME}-{policy}"

        def checked(name: str = name) -> JSON:
            p = scope.admin.request("GET", f"{VAP}/{name}")
            status = p.get("status") or {}
            return (
                dict(status)
                if status.get("observedGeneration") == p["metadata"]["generation"]
                else {}
            )

        status = wait_for(checked, f"the type check of {name}")
        assert not (status.get("typeChecking") or {}).get("expressionWarnings"), (name, status)
        assert not [c for c in status.get("conditions") or [] if c.get("status") == "False"], status


# --- the Node: the attack list ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Attack:
    what: str
    patch: Any  # to nodes/NODE_A, or to its status subresource when it patches status
    denial: str  # part of the message the API server must answer with
    via_status: bool = False
    content_type: str = SMP

    @property
    def path(self) -> str:
        status = self.via_status or "status" in self.patch
        return f"/api/v1/nodes/{NODE_A}" + ("/status" if status else "")


def _meta(**fields: Any) -> JSON:
    return {"metadata": fields}


def _spec(**fields: Any) -> JSON:
    return {"spec": fields}


def _status(**fields: Any) -> JSON:
    return {"status": fields}


def _cond(kind: str, status: str = "True") -> JSON:
    return {"type": kind, "status": status, "reason": "X", "message": "x"}


FOREIGN_TAINTS = _spec(taints=[FOREIGN])  # the node's taints before each attack
MISSING_OWNER = {"apiVersion": "v1", "kind": "ConfigMap", "name": "gone", "uid": "0-0-1"}
ONLY_OWN_TAINT, ONLY_EFFECT = "only its own taint", "only with the effect NoSchedule"
ONLY_OWN_CONDITION = "only its own node condition"
EVICT, PREFER = "NoExecute", "PreferNoSchedule"
ADDRESS = {"type": "InternalIP", "address": "203.0.113.7"}
KUBELET = {"kubeletEndpoint": {"Port": 31337}}
ATTACHED = {"name": "kubernetes.io/csi/x^y", "devicePath": "/dev/x"}
VOLUME = ATTACHED["name"]
# JSON patch (RBAC's patch allows every patch type): a second condition of its type
TWICE = [
    {"op": "add", "path": "/status/conditions/-", "value": _cond(CONDITION, s)}
    for s in ("True", "False")
]
TWICE_UNREMEDIABLE = [
    {"op": "add", "path": "/status/conditions/-", "value": _cond(UNREMEDIABLE_TYPE, s)}
    for s in ("True", "False")
]
ATTACKS = [
    # metadata, through either path (nodes/status stores metadata changes too)
    Attack("label", _meta(labels={"x.io/y": "z"}), "metadata.labels"),
    Attack("label, via status", _meta(labels={"x.io/y": "z"}), "metadata.labels", True),
    Attack("label changed", _meta(labels={"kubernetes.io/os": "windows"}), "metadata.labels"),
    Attack("label removed", _meta(labels={"kubernetes.io/arch": None}), "metadata.labels"),
    Attack("annotation", _meta(annotations={"x.io/y": "z"}), "metadata.annotations"),
    Attack("annotation, status", _meta(annotations={"x.io/y": "z"}), "metadata.annotations", True),
    # its own annotation is allowed; one beside it in the same patch is not
    Attack(
        "annotation beside the summary",
        _meta(annotations={SUMMARY_ANNOTATION: "{}", "x.io/y": "z"}),
        "metadata.annotations.x.io/y",
        True,
    ),
    Attack("finalizer", _meta(finalizers=["x.io/keep"]), "metadata.finalizers"),
    # the garbage collector deletes a Node whose owner is missing
    Attack("ownerReference", _meta(ownerReferences=[MISSING_OWNER]), "metadata.ownerReferences"),
    # spec
    Attack("cordon", _spec(unschedulable=True), "spec.unschedulable"),
    Attack("podCIDR", _spec(podCIDR="10.9.0.0/24", podCIDRs=["10.9.0.0/24"]), "spec.podCIDR"),
    Attack("providerID", _spec(providerID="aws:///us-east-1a/i-0123"), "spec.providerID"),
    # spec.taints: the node has FOREIGN
    Attack("foreign taint removed", _spec(taints=[]), ONLY_OWN_TAINT),
    Attack("taint added", _spec(taints=[FOREIGN, {**FOREIGN, "key": "x.io/y"}]), ONLY_OWN_TAINT),
    Attack("foreign taint changed", _spec(taints=[{**FOREIGN, "effect": PREFER}]), ONLY_OWN_TAINT),
    # NoExecute: the taint-eviction controller would delete the node's pods
    Attack("own key NoExecute", _spec(taints=[FOREIGN, {**OURS, "effect": EVICT}]), ONLY_EFFECT),
    Attack("own key Prefer...", _spec(taints=[FOREIGN, {**OURS, "effect": PREFER}]), ONLY_EFFECT),
    # status
    Attack("addresses", _status(addresses=[ADDRESS]), "status.addresses"),
    Attack("kubelet port", _status(daemonEndpoints=KUBELET), "status.daemonEndpoints"),
    Attack("capacity", _status(capacity={"cpu": "64"}), "status.capacity"),
    Attack("allocatable", _status(allocatable={"memory": "1Ti"}), "status.allocatable"),
    Attack("extended resource", _status(capacity={"example.com/gpu": "8"}), "status.capacity"),
    Attack("nodeInfo", _status(nodeInfo={"kubeletVersion": "v1.99.0"}), "status.nodeInfo"),
    Attack("images", _status(images=[{"names": ["evil:1"], "sizeBytes": 1}]), "status.images"),
    Attack("volumesInUse", _status(volumesInUse=[VOLUME]), "status.volumesInUse"),
    Attack("volumesAttached", _status(volumesAttached=[ATTACHED]), "status.volumesAttached"),
    Attack("phase", _status(phase="Terminated"), "status.phase"),
    Attack("Ready condition", _status(conditions=[_cond("Ready", "False")]), ONLY_OWN_CONDITION),
    Attack("another condition", _status(conditions=[_cond("x.io/Mine")]), ONLY_OWN_CONDITION),
    Attack("its condition twice", TWICE, ONLY_OWN_CONDITION, True, JSON_PATCH),
    Attack("its second condition twice", TWICE_UNREMEDIABLE, ONLY_OWN_CONDITION, True, JSON_PATCH),
]  # fmt: skip


@pytest.fixture
def node_a(scope: Scope) -> JSON:
    """Node A with a foreign taint and without the agent's condition, as each case starts."""
    admin = scope.admin
    admin.request("PATCH", f"/api/v1/nodes/{NODE_A}", body=FOREIGN_TAINTS, content_type=SMP)
    if node_view(_node(admin)).ours:  # both conditions and the summary, as `cleanup` does
        admin.request(
            "PATCH", f"/api/v1/nodes/{NODE_A}/status", body=removal_patch(), content_type=SMP
        )
    return _node(admin)


@pytest.mark.parametrize("attack", ATTACKS, ids=[a.what for a in ATTACKS])
def test_node_attack_is_denied(scope: Scope, node_a: JSON, attack: Attack) -> None:
    path = attack.path
    # The admin's dry run: the API server would store this change (the attack is real).
    would = scope.admin.request("PATCH", path, {"dryRun": "All"}, attack.patch, attack.content_type)
    assert _stored(would) != _stored(node_a), f"{attack.what}: a no-op, proves nothing"
    answer = _answer(scope.agent, "PATCH", path, attack.patch, attack.content_type)
    assert answer.startswith("403 ") and DENIED_BY_POLICY in answer, answer
    assert attack.denial in answer, answer
    assert _stored(_node(scope.admin)) == _stored(node_a), "denied, yet stored"


def test_other_node_and_unbound_token_are_denied(scope: Scope, node_a: JSON) -> None:
    cond = {"type": CONDITION, "status": "True", "reason": "FreeMemoryFragmented", "message": "m"}
    b = f"/api/v1/nodes/{NODE_B}"
    for path, patch in ((b, _taint_b()), (f"{b}/status", {"status": {"conditions": [cond]}})):
        answer = _answer(scope.agent, "PATCH", path, patch)
        assert f"Node its pod runs on ({NODE_A}), not {NODE_B}" in answer, answer
    # A token bound to no pod names no node: it may change none (RBAC alone would allow it).
    answer = _answer(
        scope.unbound, "PATCH", f"/api/v1/nodes/{NODE_A}", {"spec": {"taints": [FOREIGN, OURS]}}
    )
    assert answer.startswith("403 ") and "no node in its token" in answer, answer
    # RBAC: no create, update (PUT), delete of Nodes at all.
    node = _node(scope.admin)
    assert _answer(scope.agent, "PUT", f"/api/v1/nodes/{NODE_A}", node, None).startswith("403 ")
    assert _answer(scope.agent, "DELETE", f"/api/v1/nodes/{NODE_A}").startswith("403 ")
    assert _stored(_node(scope.admin)) == _stored(node_a)
    # Everyone else is outside the policy: the admin may do what the agent may not.
    assert (
        _answer(
            scope.admin,
            "PATCH",
            b,
            {"metadata": {"labels": {"x.io/y": "z"}}},
            SMP,
            {"dryRun": "All"},
        )
        == "allowed"
    )


def _condition(status: ConditionStatus) -> Condition:
    now = rfc3339(time.time())
    return Condition(
        status,
        "FreeMemoryFragmented" if status == ConditionStatus.TRUE else "FreeMemoryOK",
        "m",
        now,
        now,
    )


def test_agents_own_writes_are_allowed(scope: Scope, node_a: JSON) -> None:
    """What agent/daemon/reporter.py sends, built by agent/decide/nodeview.py: the condition by
    strategic-merge patch on nodes/status, the taint by read-modify-write with the resourceVersion
    as precondition; the foreign taint stays."""
    agent, status = scope.agent, f"/api/v1/nodes/{NODE_A}/status"
    for value in (
        ConditionStatus.TRUE,
        ConditionStatus.FALSE,
        ConditionStatus.TRUE,
    ):  # set, clear, set
        stored = agent.request(
            "PATCH", status, body=condition_patch(_condition(value)), content_type=SMP
        )
        view = node_view(stored)
        assert view.condition is not None and view.condition.status == value
    # Both conditions and the summary in one PATCH, as the reporter writes them.
    second = dataclasses.replace(_condition(ConditionStatus.TRUE), type=UNREMEDIABLE_TYPE)
    body = condition_patch(_condition(ConditionStatus.TRUE), second, summary='{"order":4}')
    view = node_view(agent.request("PATCH", status, body=body, content_type=SMP))
    assert view.unremediable == second and view.summary == '{"order":4}'
    for present in (True, False):
        v = node_view(_node(agent))
        taints = (
            with_taint(v.taints, KEY, "NoSchedule", "true", ())
            if present
            else without_taint(v.taints, KEY, {"NoSchedule"})
        )
        stored = agent.request(
            "PATCH",
            f"/api/v1/nodes/{NODE_A}",
            body=taint_patch(v.resource_version, taints),
            content_type=SMP,
        )
        keys = [t["key"] for t in stored["spec"]["taints"]]
        assert keys == ([FOREIGN["key"], KEY] if present else [FOREIGN["key"]])
    # A taint under its key left by an earlier taint_effect may go (never a NoExecute one).
    scope.admin.request(
        "PATCH",
        f"/api/v1/nodes/{NODE_A}",
        body={"spec": {"taints": [FOREIGN, {**OURS, "effect": "PreferNoSchedule"}]}},
        content_type=SMP,
    )
    v = node_view(_node(agent))
    taints = without_taint(v.taints, KEY, {"PreferNoSchedule"})
    agent.request(
        "PATCH",
        f"/api/v1/nodes/{NODE_A}",
        body=taint_patch(v.resource_version, taints),
        content_type=SMP,
    )
    scope.admin.request(
        "PATCH",
        f"/api/v1/nodes/{NODE_A}",
        body={"spec": {"taints": [FOREIGN, {**OURS, "effect": "NoExecute"}]}},
        content_type=SMP,
    )
    try:
        v = node_view(_node(agent))
        answer = _answer(
            agent,
            "PATCH",
            f"/api/v1/nodes/{NODE_A}",
            taint_patch(v.resource_version, without_taint(v.taints, KEY, {"NoExecute"})),
        )
        assert "may not remove a NoExecute taint" in answer, answer
    finally:  # the taint-eviction controller would delete the pods the other tests put there
        scope.admin.request(
            "PATCH", f"/api/v1/nodes/{NODE_A}", body=FOREIGN_TAINTS, content_type=SMP
        )
    # The precondition still works through the policy: a stale resourceVersion is a conflict.
    stale = taint_patch(node_a["metadata"]["resourceVersion"], [FOREIGN])
    assert _answer(agent, "PATCH", f"/api/v1/nodes/{NODE_A}", stale).startswith("409 ")


def _taint_answer(scope: Scope, effect: str) -> str:
    """The agent adding its taint with this effect (read-modify-write, a dry run)."""
    v = node_view(_node(scope.agent))
    patch = taint_patch(v.resource_version, with_taint(v.taints, KEY, effect, "true", ()))
    return _answer(scope.agent, "PATCH", f"/api/v1/nodes/{NODE_A}", patch, None, {"dryRun": "All"})


@pytest.mark.parametrize("effect", ["PreferNoSchedule", "none"])
def test_taint_effect_follows_the_chart(scope: Scope, node_a: JSON, effect: str) -> None:
    """The policy pins the effect to config.reporting.taint_effect: installed with another
    effect, that one only; with "none", no taint at all."""
    policy = _chart(f"config.reporting.taint_effect={effect}", kinds=POLICY_KINDS)
    _apply(scope.plane, policy)
    try:
        if effect == "none":

            def refused() -> str:
                answer = _taint_answer(scope, "NoSchedule")
                return answer if "never" in answer else ""

            denied = wait_for(refused, "the policy with taint_effect none in force")
            assert denied.startswith("403 ") and DENIED_BY_POLICY in denied, denied
            assert "never" in _taint_answer(scope, "PreferNoSchedule")
        else:
            wait_for(
                lambda: _taint_answer(scope, effect) == "allowed",
                f"the policy with taint_effect {effect} in force",
            )
            denied = _taint_answer(scope, "NoSchedule")
            assert f"only with the effect {effect}" in denied, denied
    finally:
        _apply(scope.plane, _chart(kinds=POLICY_KINDS))
        wait_for(
            lambda: _taint_answer(scope, "NoSchedule") == "allowed", "the chart's policy again"
        )


def _label_answer(scope: Scope, labels: JSON) -> str:
    """The agent patching its Node's labels (a dry run)."""
    body = {"metadata": {"labels": labels}}
    return _answer(scope.agent, "PATCH", f"/api/v1/nodes/{NODE_A}", body, None, {"dryRun": "All"})


def test_contiguity_label_only_when_on_only_its_own_only_a_bucket(
    scope: Scope, node_a: JSON
) -> None:
    """config.reporting.contiguity_label: the agent may set memfrag.dev/contiguity to a bucket
    (and remove it); never another label, never another value; off (the default), no label."""
    label = "memfrag.dev/contiguity"
    assert _label_answer(scope, {label: "high"}).startswith("403 ")  # off: not even ours
    _apply(scope.plane, _chart("config.reporting.contiguity_label=true", kinds=POLICY_KINDS))
    try:
        wait_for(
            lambda: _label_answer(scope, {label: "high"}) == "allowed",
            "the policy with contiguity_label in force",
        )
        assert _label_answer(scope, {label: None}) == "allowed"
        bogus = _label_answer(scope, {label: "plenty"})
        assert bogus.startswith("403 ") and "only to high, medium, low or none" in bogus, bogus
        other = _label_answer(scope, {label: "low", "example.com/zone": "a"})
        assert other.startswith("403 ") and "metadata.labels.example.com/zone" in other, other
        removed = _label_answer(scope, {"kubernetes.io/arch": None})
        assert removed.startswith("403 ") and "metadata.labels.kubernetes.io/arch" in removed
        assert _stored(_node(scope.admin)) == _stored(node_a)  # dry runs: nothing stored
    finally:
        _apply(scope.plane, _chart(kinds=POLICY_KINDS))
        wait_for(
            lambda: _label_answer(scope, {label: "high"}).startswith("403 "),
            "the chart's policy again",
        )


# --- Events -------------------------------------------------------------------------------------

EVENTS = "/api/v1/namespaces/default/events"


def _event(node: str, name: str = "", **over: Any) -> JSON:
    """An Event as agent/kube/events.py writes it, about `node`."""
    now = rfc3339(time.time())
    event: JSON = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": name or f"{node}.memfrag.{time.monotonic_ns():x}"},
        "involvedObject": {"apiVersion": "v1", "kind": "Node", "name": node, "uid": node},
        "reason": "MemoryFragmented",
        "message": "m",
        "type": "Warning",
        "count": 1,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "source": {"component": "memfrag-agent", "host": node},
        "reportingComponent": "memfrag-agent",
        "reportingInstance": node,
    }
    for k, v in over.items():
        event[k] = {**event[k], **v} if isinstance(v, dict) else v
    return event


def _pod_event(node: str, **over: Any) -> JSON:
    """An UnmovableKernelMemory Event as agent/kube/events.py writes it, about a pod in
    default (any namespace: RBAC grants create in all of them with kernel_memory_pods)."""
    pod = {"apiVersion": "v1", "kind": "Pod", "namespace": "default", "name": "cart", "uid": "u1"}
    pod.update(over.pop("involvedObject", {}))
    return _event(node, **{"involvedObject": pod, "reason": "UnmovableKernelMemory", **over})


def test_agents_events_are_allowed(scope: Scope) -> None:
    """The agent's own EventRecorder: a new Event, then the same again bumps its count."""
    recorder = EventRecorder(scope.agent, NODE_A)
    reason = EventReason.HIGH_ORDER_ALLOCATION_FAILED
    spec = EventSpec(EventType.WARNING, reason, f"admission test {time.monotonic_ns()}")
    recorder.emit(spec)
    recorder.emit(spec)
    (ev,) = [
        e
        for e in scope.admin.request("GET", EVENTS, {"fieldSelector": f"reason={reason}"})["items"]
        if e["message"] == spec.message
    ]
    assert ev["count"] == 2 and ev["involvedObject"]["name"] == NODE_A


def test_agents_pod_events_are_allowed(scope: Scope) -> None:
    """With reporting.kernel_memory_pods (on by default): an Event about a pod, in its namespace,
    as the recorder writes it."""
    recorder = EventRecorder(scope.agent, NODE_A)
    message = f"admission test {time.monotonic_ns()}"
    pod = PodRef("kube-system", "kube-proxy-x", "u1")
    recorder.emit(EventSpec(EventType.WARNING, EventReason.UNMOVABLE_KERNEL_MEMORY, message, pod))
    path = "/api/v1/namespaces/kube-system/events"
    (ev,) = [e for e in scope.admin.request("GET", path)["items"] if e["message"] == message]
    assert ev["involvedObject"]["kind"] == "Pod" and ev["involvedObject"]["name"] == "kube-proxy-x"


@dataclasses.dataclass(frozen=True)
class EventAttack:
    what: str
    method: str
    target: str  # "new" (POST this body), "ours" or "kubelet's" (PATCH that stored Event)
    body: JSON
    denial: str
    namespace: str = "default"


EVENT_ATTACKS = [
    EventAttack(
        "about another node", "POST", "new", _event(NODE_B), f"the Node its pod runs on ({NODE_A})"
    ),
    EventAttack(
        "about a pod",
        "POST",
        "new",
        _event(NODE_A, involvedObject={"kind": "Pod", "namespace": "default", "name": "web"}),
        "about the Node its pod runs on",
    ),
    EventAttack(
        "as the kubelet",
        "POST",
        "new",
        _event(NODE_A, reportingComponent="kubelet"),
        "reported as memfrag-agent",
    ),
    EventAttack(
        "from another node",
        "POST",
        "new",
        _event(NODE_A, reportingInstance=NODE_B),
        "reported as memfrag-agent",
    ),
    EventAttack(
        "a pod Event of another reason",
        "POST",
        "new",
        _pod_event(NODE_A, reason="Killing"),
        "UnmovableKernelMemory Events about a pod in its namespace",
    ),
    EventAttack(
        "a pod Event from another node",
        "POST",
        "new",
        _pod_event(NODE_A, reportingInstance=NODE_B),
        "reported as memfrag-agent from that node",
    ),
    EventAttack(
        "bump its pod Event",
        "PATCH",
        "its pod's",
        {"count": 2},
        "only the Events it reported about its own Node",
    ),
    EventAttack(
        "bump the kubelet's Event",
        "PATCH",
        "kubelet's",
        {"count": 7},
        "only the Events it reported",
    ),
    EventAttack(
        "re-point its Event at another node",
        "PATCH",
        "ours",
        {"involvedObject": {"name": NODE_B}},
        "the Node its pod runs on",
    ),
    EventAttack(
        "rewrite its Event's message", "PATCH", "ours", {"message": "all is well"}, "not message"
    ),
    EventAttack(
        "rewrite its Event's reason", "PATCH", "ours", {"reason": "NodeReady"}, "not reason"
    ),
    EventAttack(
        "label its Event",
        "PATCH",
        "ours",
        {"metadata": {"labels": {"x.io/y": "z"}}},
        "not metadata.labels",
    ),
    EventAttack("delete its Event (RBAC)", "DELETE", "ours", {}, "forbidden"),
]


@pytest.mark.parametrize("attack", EVENT_ATTACKS, ids=[a.what for a in EVENT_ATTACKS])
def test_event_attack_is_denied(scope: Scope, attack: EventAttack) -> None:
    """Denied by RBAC ("forbidden" before any admission) or by the policy; a request the policy
    denies is one the API server would otherwise accept (the admin's dry run)."""
    admin, by_rbac = scope.admin, attack.denial == "forbidden"
    path = f"/api/v1/namespaces/{attack.namespace}/events"
    if attack.target == "new":
        request: tuple[str, str, JSON | None, str | None] = ("POST", path, attack.body, None)
    else:
        kubelets = _event(NODE_A, reportingComponent="kubelet", source={"component": "kubelet"})
        stored = admin.request(
            "POST",
            path,
            body={"kubelet's": kubelets, "its pod's": _pod_event(NODE_A)}.get(
                attack.target, _event(NODE_A)
            ),
        )
        target = f"{path}/{stored['metadata']['name']}"
        request = (attack.method, target, attack.body or None, MERGE)
    if not by_rbac:
        assert _answer(admin, *request, {"dryRun": "All"}) == "allowed"
    answer = _answer(scope.agent, *request)
    assert answer.startswith("403 "), answer
    assert attack.denial in answer, answer
    assert (DENIED_BY_POLICY in answer) != by_rbac, answer
    if attack.target != "new":
        after = admin.request("GET", request[1])
        assert {k: v for k, v in after.items() if k != "metadata"} == {
            k: v for k, v in stored.items() if k != "metadata"
        }
        assert after["metadata"].get("labels") == stored["metadata"].get("labels")


def test_events_api_group_is_held_to_the_same_rule(scope: Scope) -> None:
    """RBAC does not grant events.k8s.io; were it granted, the policy still holds: those
    requests reach it converted to v1 (matchPolicy Equivalent)."""
    admin, name = scope.admin, f"{FULLNAME}-test-events-k8s-io"
    role = {
        "metadata": {"name": name},
        "rules": [{"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create"]}],
    }
    binding = {
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": FULLNAME, "namespace": NAMESPACE}],
    }
    path = "/apis/events.k8s.io/v1/namespaces/default/events"

    def event(node: str) -> JSON:
        return {
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            "metadata": {"name": f"{node}.memfrag.{time.monotonic_ns():x}"},
            "regarding": {"apiVersion": "v1", "kind": "Node", "name": node},
            "reason": "MemoryFragmented",
            "note": "m",
            "type": "Warning",
            "action": "Report",
            "eventTime": rfc3339(time.time()).replace("Z", ".000000Z"),
            "reportingController": "memfrag-agent",
            "reportingInstance": node,
        }

    def post(node: str) -> str:
        return _answer(scope.agent, "POST", path, event(node), None, {"dryRun": "All"})

    assert post(NODE_A).startswith("403 ") and DENIED_BY_POLICY not in post(NODE_A)  # RBAC
    admin.request("POST", f"{RBAC}/clusterroles", body=role)
    admin.request("POST", f"{RBAC}/clusterrolebindings", body=binding)
    try:
        wait_for(lambda: post(NODE_A) == "allowed", "the events.k8s.io grant")
        answer = post(NODE_B)
        assert answer.startswith("403 ") and DENIED_BY_POLICY in answer, answer
        assert f"the Node its pod runs on ({NODE_A})" in answer, answer
    finally:
        _gone(admin, f"{RBAC}/clusterrolebindings/{name}")
        _gone(admin, f"{RBAC}/clusterroles/{name}")


def test_unbound_token_writes_no_event(scope: Scope) -> None:
    answer = _answer(scope.unbound, "POST", EVENTS, _event(NODE_A), None)
    assert answer.startswith("403 ") and "no node in its token" in answer, answer


# --- deleting pods (remediation.delete_stuck_pods) ----------------------------------------------


def _waiting(reason: str) -> JSON:
    return {
        "name": "c",
        "image": "registry.example/app:1",
        "imageID": "",
        "ready": False,
        "restartCount": 0,
        "state": {"waiting": {"reason": reason}},
    }


RUNNING = {**_waiting(""), "name": "d", "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}}
STUCK = {"phase": "Pending", "containerStatuses": [_waiting("ContainerCreating")]}


@dataclasses.dataclass(frozen=True)
class PodCase:
    what: str
    node: str | None
    status: JSON | None  # what the (absent) kubelet would have reported; None: nothing yet
    owner: str  # "controller", "none", "not-controller", "node" (a mirror pod)
    denial: str | None  # None: allowed


ELSEWHERE = f"bound to the node its pod runs on ({NODE_A}), not one on"
NOT_STUCK = "only pods stuck before their containers start"
NOT_OWNED = "only pods a controller recreates"
INITIALIZING = {"phase": "Pending", "initContainerStatuses": [_waiting("PodInitializing")]}
PULLING = {"phase": "Pending", "containerStatuses": [_waiting("ImagePullBackOff")]}
UP = {"phase": "Running", "containerStatuses": [RUNNING]}
HALF_UP = {"phase": "Pending", "containerStatuses": [STUCK["containerStatuses"][0], RUNNING]}
POD_CASES = [
    PodCase("stuck in ContainerCreating, controller-owned", NODE_A, STUCK, "controller", None),
    PodCase("no status yet (the sandbox never came up)", NODE_A, None, "controller", None),
    PodCase("init containers in PodInitializing", NODE_A, INITIALIZING, "controller", None),
    PodCase("on another node", NODE_B, STUCK, "controller", f"{ELSEWHERE} {NODE_B}"),
    PodCase("not bound to a node", None, None, "controller", f"{ELSEWHERE} no node"),
    PodCase("running", NODE_A, UP, "controller", NOT_STUCK),
    PodCase("pending, pulling its image", NODE_A, PULLING, "controller", NOT_STUCK),
    PodCase("pending, one container running", NODE_A, HALF_UP, "controller", NOT_STUCK),
    PodCase("a bare pod (nobody recreates it)", NODE_A, STUCK, "none", NOT_OWNED),
    PodCase("owned, but not by a controller", NODE_A, STUCK, "not-controller", NOT_OWNED),
    PodCase("a mirror pod (a static pod's)", NODE_A, STUCK, "node", NOT_OWNED),
]  # fmt: skip


def _pod(scope: Scope, case: PodCase, index: int) -> str:
    owners = {
        "controller": [scope.owner],
        "none": [],
        "not-controller": [{**scope.owner, "controller": False}],
        "node": [
            {
                **scope.owner,
                "kind": "Node",
                "name": NODE_A,
                "uid": _node(scope.admin)["metadata"]["uid"],
            }
        ],
    }[case.owner]
    name = f"adm-pod-{index}"
    status = case.status or {}

    def containers(key: str, default: list[str]) -> list[JSON]:
        names = [s["name"] for s in status.get(key) or []] or default
        return [{"name": n, "image": "registry.example/app:1"} for n in names]

    spec: JSON = {"containers": containers("containerStatuses", ["c"])}
    if status.get("initContainerStatuses"):
        spec["initContainers"] = containers("initContainerStatuses", [])
        spec["containers"] = [{"name": "main", "image": "registry.example/app:1"}]
    if case.node:
        spec["nodeName"] = case.node
    else:
        # A scheduler another test started (the control plane is the session's) would bind it.
        spec["schedulerName"] = "no-scheduler-runs-this"
    path = "/api/v1/namespaces/default/pods"
    _gone(scope.admin, f"{path}/{name}")
    wait_for(
        lambda: _answer(scope.admin, "GET", f"{path}/{name}").startswith("404"), f"{name} gone"
    )
    scope.admin.request(
        "POST", path, body={"metadata": {"name": name, "ownerReferences": owners}, "spec": spec}
    )
    if case.status is not None:
        scope.admin.request(
            "PATCH", f"{path}/{name}/status", body={"status": case.status}, content_type=MERGE
        )
    return f"{path}/{name}"


@pytest.mark.parametrize("case", POD_CASES, ids=[c.what for c in POD_CASES])
def test_pod_delete(scope: Scope, case: PodCase) -> None:
    """A dry run (admission runs in full, nothing is deleted: without a kubelet a deleted bound
    pod would stay Terminating)."""
    path = _pod(scope, case, POD_CASES.index(case))
    answer = _answer(scope.agent, "DELETE", path, query={"dryRun": "All"})
    # A pod already being deleted answers 200 to any DELETE without admission: proves nothing.
    assert "deletionTimestamp" not in scope.admin.request("GET", path)["metadata"]
    if case.denial is None:
        assert answer == "allowed"
        assert _answer(scope.unbound, "DELETE", path, query={"dryRun": "All"}).startswith("403 ")
    else:
        assert answer.startswith("403 ") and DENIED_BY_POLICY in answer, answer
        assert case.denial in answer, answer
    assert _answer(scope.admin, "DELETE", path, query={"dryRun": "All"}) == "allowed"


def test_pod_bulk_delete_and_eviction_are_not_granted(scope: Scope) -> None:
    path = _pod(scope, POD_CASES[0], 99)
    assert _answer(
        scope.agent, "DELETE", "/api/v1/namespaces/default/pods", query={"dryRun": "All"}
    ).startswith("403 ")
    eviction = {
        "apiVersion": "policy/v1",
        "kind": "Eviction",
        "metadata": {"name": path.rsplit("/", 1)[1]},
    }
    assert _answer(
        scope.agent, "POST", f"{path}/eviction", eviction, None, {"dryRun": "All"}
    ).startswith("403 ")
