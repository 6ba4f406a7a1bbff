"""The bounded informer, the sandbox-Event filter and the node's record, without a server (the
list call is a stand-in; the real control plane runs them in tests/integration)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from agent.assess.pods import concerns_node
from agent.decide.remediation import ActionOutcome, PastAction
from agent.kube.client import Kube
from agent.kube.informer import WATCH_SECONDS_MAX, WATCH_SECONDS_MIN, Informer, object_key
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


class Watches(Pages):
    """Lists once (resourceVersion 99), then plays one script of events per watch; the informer
    is stopped when the scripts run out."""

    def __init__(self, scripts: list[list[dict[str, Any]]]) -> None:
        super().__init__([])
        self.scripts, self.watched = scripts, []  # type: ignore[var-annotated]
        self.informer: Informer | None = None

    def watch(self, path: str, query: Any, timeout_seconds: int = 300) -> Iterator[Any]:
        self.watched.append((dict(query), timeout_seconds))
        if not self.scripts:
            assert self.informer is not None
            self.informer.stop()
            return
        yield from self.scripts.pop(0)


def bookmark(rv: str) -> dict[str, Any]:
    return {"type": "BOOKMARK", "object": {"kind": "Node", "metadata": {"resourceVersion": rv}}}


def test_a_watch_ended_by_the_server_resumes_from_its_last_bookmark_without_a_relist() -> None:
    node = {"metadata": {"name": "n1", "resourceVersion": "120"}}
    kube = Watches(
        [[bookmark("105"), {"type": "MODIFIED", "object": node}, bookmark("130")], [], []]
    )
    inf = Informer(kube, "/api/v1/nodes", {"fieldSelector": "metadata.name=n1"})
    kube.informer = inf
    inf.run()
    rvs = [q["resourceVersion"] for q, _ in kube.watched]
    assert rvs == ["99", "130", "130", "130"]  # a watch that brought nothing keeps its rv
    assert inf.relists == 1 and len(kube.queries) == 1 and inf.watches == 4
    assert inf.get("n1") == node and inf.get("") is None  # a bookmark is no object
    assert all(q["fieldSelector"] == "metadata.name=n1" for q, _ in kube.watched)


def test_watch_timeouts_are_long_and_spread() -> None:
    """30-60 min, uniformly: a fleet's renewals do not fall together."""
    kube = Watches([[] for _ in range(199)])
    inf = Informer(kube, "/api/v1/nodes", {})
    kube.informer = inf
    inf.run()
    seconds = [t for _, t in kube.watched]
    assert all(WATCH_SECONDS_MIN <= t <= WATCH_SECONDS_MAX for t in seconds)
    assert WATCH_SECONDS_MIN == 1800 and WATCH_SECONDS_MAX == 3600
    assert len(set(seconds)) > 100
    assert min(seconds) < 2100 and max(seconds) > 3300


def test_an_expired_watch_relists() -> None:
    gone = {"type": "ERROR", "object": {"kind": "Status", "code": 410}}
    kube = Watches([[bookmark("150"), gone], []])
    inf = Informer(kube, "/api/v1/nodes", {})
    kube.informer = inf
    inf.run()
    assert inf.relists == 2 and [q["resourceVersion"] for q, _ in kube.watched] == ["99"] * 3


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


class RefusedWatches(Pages):
    """Lists fine; each watch is refused with `status` (429: API Priority and Fairness) until
    `refusals` run out, then delivers one bookmark and the informer is stopped."""

    def __init__(self, refusals: int, status: int = 429) -> None:
        super().__init__([])
        self.refusals, self.status, self.watched = refusals, status, []  # type: ignore[var-annotated]
        self.informer: Informer | None = None

    def watch(self, path: str, query: Any, timeout_seconds: int = 300) -> Iterator[Any]:
        from agent.kube.errors import ApiError

        self.watched.append(dict(query))
        if self.refusals:
            self.refusals -= 1
            raise ApiError("WATCH", path, self.status, "Too many requests")
        assert self.informer is not None
        self.informer.stop()
        yield bookmark("120")


def _backoffs(monkeypatch: Any, kube: RefusedWatches) -> tuple[Informer, list[int]]:
    from agent.kube import informer

    attempts: list[int] = []

    def no_wait(attempt: int, **_: float) -> float:
        attempts.append(attempt)
        return 0.0

    monkeypatch.setattr(informer, "backoff_delay", no_wait)
    inf = Informer(kube, "/api/v1/pods", {"fieldSelector": "spec.nodeName=n1"})
    kube.informer = inf
    inf.run()
    return inf, attempts


def test_refused_watches_back_off_further_each_time_and_do_not_relist(monkeypatch: Any) -> None:
    """A list that works says nothing of the watch after it: the backoff grows until a watch
    works, and a 429'd watch is retried from the list's resourceVersion, not re-listed (the
    informer re-listed about every second while its watches were refused)."""
    kube = RefusedWatches(refusals=5)
    inf, attempts = _backoffs(monkeypatch, kube)
    assert attempts == [0, 1, 2, 3, 4]
    assert len(kube.queries) == 1 and inf.relists == 1  # one list, six watches from it
    assert [q["resourceVersion"] for q in kube.watched] == ["99"] * 6
    assert inf.healthy and inf.errors == 5


def test_a_watch_failing_otherwise_relists_with_a_growing_backoff(monkeypatch: Any) -> None:
    kube = RefusedWatches(refusals=3, status=500)
    inf, attempts = _backoffs(monkeypatch, kube)
    assert attempts == [0, 1, 2] and inf.relists == 4
