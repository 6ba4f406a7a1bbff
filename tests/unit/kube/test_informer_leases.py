"""The bounded informer, the sandbox-Event filter and the node's record, without a server (the
list call is a stand-in; the real control plane runs them in tests/integration)."""

from __future__ import annotations

from typing import Any

from agent.assess.pods import concerns_node
from agent.decide.remediation import ActionOutcome, PastAction
from agent.kube.client import Kube
from agent.kube.informer import Informer, object_key
from agent.kube.leases import (
    ACTIONS,
    MAX_ACTIONS,
    TAINT_EFFECTS,
    NodeState,
    node_record_name,
    node_state_annotations,
    parse_node_state,
)


def event(i: int, pod: str, host: str) -> dict[str, Any]:
    return {
        "metadata": {"name": f"e{i}", "namespace": "default", "resourceVersion": str(i)},
        "involvedObject": {"kind": "Pod", "namespace": "default", "name": pod},
        "source": {"host": host},
    }


class Pages(Kube):
    """Answers list calls from a fixed list, `limit` at a time, with continue tokens."""

    def __init__(self, items: list[dict[str, Any]]) -> None:
        super().__init__(api_client=None)
        self.items, self.queries = items, []  # type: ignore[var-annotated]

    def request(self, method: str, path: str, query: Any = None, *a: Any, **k: Any) -> Any:
        self.queries.append(dict(query or {}))
        start = int((query or {}).get("continue") or 0)
        end = start + int(query["limit"])
        more = {"continue": str(end)} if end < len(self.items) else {}
        return {"metadata": {"resourceVersion": "99", **more}, "items": self.items[start:end]}


def test_the_list_is_paged_and_keeps_only_what_concerns_the_node() -> None:
    items = [event(i, f"p{i}", f"other-{i % 7}") for i in range(2000)] + [event(9, "mine", "x")]
    kube = Pages(items)
    inf = Informer(
        kube,
        "/api/v1/events",
        {},
        keep=lambda e: concerns_node(e, "n1", {"default/mine"}.__contains__),
    )
    assert inf._list() == "99"
    assert inf.pages == 5 and all(q["limit"] == "500" for q in kube.queries)
    assert [e["involvedObject"]["name"] for e in inf.items()] == ["mine"]


def test_the_cache_is_bounded_oldest_first() -> None:
    inf = Informer(Pages([]), "/api/v1/events", {}, max_items=3)
    for i in range(5):
        inf.offer(event(i, f"p{i}", "n1"))
    assert [object_key(e) for e in inf.items()] == ["default/e2", "default/e3", "default/e4"]
    assert inf.dropped == 2


def test_namespaced_objects_of_one_name_do_not_collide() -> None:
    inf = Informer(Pages([]), "/api/v1/events", {})
    a, b = event(1, "p", "n1"), event(1, "p", "n1")
    b["metadata"]["namespace"] = "kube-system"
    inf.offer(a)
    inf.offer(b)
    assert len(inf.items()) == 2


def test_concerns_node() -> None:
    local = {"default/mine"}.__contains__
    assert concerns_node(event(1, "x", "n1"), "n1", local)  # kubelet of this node said it
    assert concerns_node(event(1, "mine", "elsewhere"), "n1", local)
    assert not concerns_node(event(1, "x", "n2"), "n1", local)
    assert not concerns_node({"involvedObject": {"kind": "Node", "name": "mine"}}, "n1", local)


def test_the_node_record_round_trips_and_drops_garbage() -> None:
    state = NodeState((PastAction("compact", 1.5, ActionOutcome.OK, "pod-a"),), ("NoSchedule",))
    lease = {"metadata": {"annotations": node_state_annotations(state)}}
    assert parse_node_state(lease) == state
    bad = {ACTIONS: '[{"step": "compact"}, 7, {"step": "x", "at": "y", "result": 1, "by": 2}]'}
    assert parse_node_state({"metadata": {"annotations": bad}}) == NodeState()
    assert parse_node_state({"metadata": {"annotations": {ACTIONS: "{not json"}}}) == NodeState()
    assert parse_node_state(None) == NodeState()
    many = NodeState(tuple(PastAction("compact", i, ActionOutcome.OK, "p") for i in range(200)), ())
    kept = parse_node_state({"metadata": {"annotations": node_state_annotations(many)}})
    assert len(kept.actions) == MAX_ACTIONS and kept.actions[-1].wall == 199
    assert node_state_annotations(NodeState())[TAINT_EFFECTS] == ""


def test_node_record_names_fit_a_lease_name() -> None:
    assert node_record_name("worker-3") == "memfrag-node-worker-3"
    long = node_record_name("n" * 253)
    assert len(long) <= 253 and long.startswith("memfrag-node-")
