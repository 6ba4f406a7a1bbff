"""An in-memory API server for unit tests of the parts that take an `agent.kube.api.Api`: objects
by path, resourceVersions, 404/409 as the real one answers, and faults a test injects. Only what
the agent uses: GET (object, or a list of a collection with the agent's field selectors and
`limit`), POST, PUT and DELETE with resourceVersion preconditions, and the four PATCHes it sends
(condition by type, spec.taints with a resourceVersion, an Event's count, our label by key)."""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

from agent.kube.api import JSON
from agent.kube.errors import ApiError

COLLECTIONS = ("nodes", "pods", "events", "leases")
CLUSTER_WIDE = {"/api/v1/pods": "pods", "/api/v1/events": "events"}


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class FakeKube:
    def __init__(self) -> None:
        self.objects: dict[str, JSON] = {}
        self.rv = 0
        self.calls: list[tuple[str, str]] = []
        # (method, a part of the path, status): raised once, by the first matching call
        self.faults: list[tuple[str, str, int]] = []
        self.observer: Callable[[ApiError | None], None] | None = None
        self.on_request: Callable[[str], None] | None = None
        self.budgets: list[float] = []

    # --- test set-up -------------------------------------------------------------------------
    def put(self, path: str, obj: JSON) -> JSON:
        self.rv += 1
        obj = copy.deepcopy(obj)
        obj.setdefault("metadata", {})["resourceVersion"] = str(self.rv)
        obj["metadata"].setdefault("name", path.rsplit("/", 1)[1])
        self.objects[path] = obj
        return copy.deepcopy(obj)

    def add_node(self, name: str, **spec: Any) -> JSON:
        return self.put(
            f"/api/v1/nodes/{name}",
            {"metadata": {"name": name, "uid": f"uid-{name}"}, "spec": spec, "status": {}},
        )

    def fail(self, method: str, path_part: str, status: int, times: int = 1) -> None:
        self.faults += [(method, path_part, status)] * times

    def count(self, method: str, path_part: str = "") -> int:
        return sum(1 for m, p in self.calls if m == method and path_part in p)

    # --- the Api Protocol --------------------------------------------------------------------
    def budget(self, seconds: float) -> AbstractContextManager[None]:
        self.budgets.append(seconds)
        return contextlib.nullcontext()

    def with_retries(self, fn: Any, *args: Any, attempts: int = 5, **kwargs: Any) -> JSON:
        for attempt in range(attempts):
            try:
                out: JSON = fn(*args, **kwargs)
                return out
            except ApiError as exc:
                if not exc.retryable or attempt == attempts - 1:
                    raise
        raise AssertionError("unreachable")

    def watch(self, path: str, query: dict[str, Any], timeout_seconds: int = 300) -> Iterator[JSON]:
        if self.on_request is not None:
            self.on_request("WATCH")
        time.sleep(0.05)  # a watch that ends with nothing new: the informer opens the next
        yield from ()

    def request(
        self,
        method: str,
        path: str,
        query: dict[str, Any] | None = None,
        body: Any = None,
        content_type: str | None = None,
        timeout: float | None = None,
    ) -> JSON:
        self.calls.append((method, path))
        if self.on_request is not None:
            self.on_request(method)
        for i, (m, part, status) in enumerate(self.faults):
            if m == method and part in path:
                del self.faults[i]
                raise self._err(ApiError(method, path, status, "injected"))
        try:
            out = self._answer(method, path, query or {}, body)
        except ApiError as exc:
            raise self._err(exc) from None
        if self.observer is not None:
            self.observer(None)
        return out

    def _err(self, exc: ApiError) -> ApiError:
        if self.observer is not None:
            self.observer(exc)
        return exc

    # --- the server ----------------------------------------------------------------------------
    def _items(self, path: str, query: dict[str, Any]) -> list[JSON]:
        kind = CLUSTER_WIDE.get(path)
        if kind is not None:
            items = [o for k, o in self.objects.items() if k.split("/")[-2:-1] == [kind]]
        else:
            items = [
                o
                for k, o in self.objects.items()
                if k.startswith(path + "/") and "/" not in k[len(path) + 1 :]
            ]
        for sel in filter(None, str(query.get("fieldSelector", "")).split(",")):
            field, _, want = sel.partition("=")
            items = [o for o in items if _field(o, field) == want]
        return [copy.deepcopy(o) for o in items]

    def _answer(self, method: str, path: str, query: dict[str, Any], body: Any) -> JSON:
        is_collection = path.rsplit("/", 1)[1] in COLLECTIONS
        obj = self.objects.get(path)
        if method == "GET":
            if is_collection:
                items = self._items(path, query)
                limit = int(query.get("limit") or 0) or len(items)
                meta: JSON = {"resourceVersion": str(self.rv)}
                if len(items) > limit:
                    meta["remainingItemCount"] = len(items) - limit
                return {"items": items[:limit], "metadata": meta}
            if obj is None:
                raise ApiError(method, path, 404, "not found")
            return copy.deepcopy(obj)
        if method == "POST":
            target = f"{path}/{body['metadata']['name']}"
            if target in self.objects:
                raise ApiError(method, path, 409, "already exists")
            return self.put(target, body)
        if path.endswith("/status"):
            path, obj = path[: -len("/status")], self.objects.get(path[: -len("/status")])
        if obj is None:
            raise ApiError(method, path, 404, "not found")
        rv = obj["metadata"]["resourceVersion"]
        if method == "DELETE":
            want = ((body or {}).get("preconditions") or {}).get("resourceVersion")
            if want is not None and want != rv:
                raise ApiError(method, path, 409, "precondition failed")
            del self.objects[path]
            return {}
        want = ((body or {}).get("metadata") or {}).get("resourceVersion")
        if want is not None and want != rv:
            raise ApiError(method, path, 409, "the object has been modified")
        if method == "PUT":
            return self.put(path, body)
        if method == "PATCH":
            new = copy.deepcopy(obj)
            for c in (body.get("status") or {}).get("conditions") or []:
                conds = [x for x in new["status"].get("conditions") or [] if x["type"] != c["type"]]
                new["status"]["conditions"] = conds + ([] if c.get("$patch") else [c])
            notes = (body.get("metadata") or {}).get("annotations") or {}
            for k, v in notes.items():  # a merge: null removes
                kept = new["metadata"].setdefault("annotations", {})
                if v is None:
                    kept.pop(k, None)
                else:
                    kept[k] = v
            if "spec" in body:
                new["spec"].update(body["spec"])
            labels = (body.get("metadata") or {}).get("labels") or {}
            if labels:  # merged by key; null removes
                mine = new["metadata"].setdefault("labels", {})
                for k, v in labels.items():
                    if v is None:
                        mine.pop(k, None)
                    else:
                        mine[k] = v
            for k, v in body.items():
                if k not in ("metadata", "spec", "status"):
                    new[k] = v
            return self.put(path, new)
        raise ApiError(method, path, 405, "method not allowed")


def _field(obj: JSON, name: str) -> object:
    """A field selector's field: dotted (metadata.name, spec.nodeName, involvedObject.name);
    `source` is an Event's source.component, as the API server has it."""
    if name == "source":
        return (obj.get("source") or {}).get("component")
    value: Any = obj
    for part in name.split("."):
        value = (value or {}).get(part) if isinstance(value, dict) else None
    return value
