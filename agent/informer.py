"""A small list-and-watch cache over raw JSON (what client-go calls an informer).

The agent reads the API server only through watches: one for its own Node (a field selector on
metadata.name) and one for the pods on it (spec.nodeName), never a list of all nodes per poll.
An expired watch (410 Gone) re-lists; any other failure backs off with jitter and re-lists.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from agent.kube import ApiError, Kube, backoff_delay

log = logging.getLogger(__name__)
JSON = dict[str, Any]


def _newer(a: str, b: str) -> bool:
    """Whether resourceVersion a is newer than b (opaque strings; etcd's are integers)."""
    if a.isdigit() and b.isdigit():
        return int(a) > int(b)
    return a != b


class Informer:
    def __init__(
        self,
        kube: Kube,
        path: str,
        query: dict[str, str],
        on_change: Callable[[], None] | None = None,
        name: str = "informer",
    ) -> None:
        self.kube, self.path, self.query, self.name = kube, path, query, name
        self.on_change = on_change
        self._items: dict[str, JSON] = {}
        self._lock = threading.Lock()
        self.synced = threading.Event()
        self.healthy = False
        self.errors = 0
        self.relists = 0
        self._stop = threading.Event()

    def items(self) -> list[JSON]:
        with self._lock:
            return list(self._items.values())

    def get(self, name: str) -> JSON | None:
        with self._lock:
            return self._items.get(name)

    def offer(self, obj: JSON) -> None:
        """Take an object we just wrote (the PATCH response) if it is newer than the cache."""
        meta = obj.get("metadata") or {}
        key = str(meta.get("name", ""))
        with self._lock:
            old = self._items.get(key)
            old_rv = str((old or {}).get("metadata", {}).get("resourceVersion", "0"))
            if old is None or _newer(str(meta.get("resourceVersion", "0")), old_rv):
                self._items[key] = obj

    def stop(self) -> None:
        self._stop.set()

    def start(self) -> threading.Thread:
        t = threading.Thread(target=self.run, name=self.name, daemon=True)
        t.start()
        return t

    def _list(self) -> str:
        result = self.kube.request("GET", self.path, self.query)
        items = {str(i["metadata"]["name"]): i for i in result.get("items", [])}
        with self._lock:
            self._items = items
        self.relists += 1
        self.synced.set()
        if self.on_change:
            self.on_change()
        return str(result.get("metadata", {}).get("resourceVersion", ""))

    def run(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            try:
                rv = self._list()
                self.healthy, attempt = True, 0
                while not self._stop.is_set():
                    rv = self._watch_once(rv)
                    if not rv:
                        break  # expired: re-list
            except ApiError as exc:
                self.healthy = False
                self.errors += 1
                delay = backoff_delay(attempt, base=1.0, cap=30.0)
                attempt += 1
                log.warning("%s: %s; retrying in %.1fs", self.name, exc, delay)
                self._stop.wait(delay)

    def _watch_once(self, rv: str) -> str:
        """Follow one watch; return the resourceVersion to resume from, '' to re-list."""
        for event in self.kube.watch(self.path, dict(self.query, resourceVersion=rv)):
            etype, obj = event.get("type"), event.get("object") or {}
            if etype == "ERROR":
                if obj.get("code") == 410:
                    log.info("%s: watch expired (410 Gone); re-listing", self.name)
                    return ""
                raise ApiError("WATCH", self.path, int(obj.get("code") or 0), str(obj))
            meta = obj.get("metadata") or {}
            rv = str(meta.get("resourceVersion", rv))
            if etype == "BOOKMARK":
                continue
            key = str(meta.get("name", ""))
            with self._lock:
                if etype == "DELETED":
                    self._items.pop(key, None)
                else:
                    self._items[key] = obj
            if self.on_change:
                self.on_change()
            if self._stop.is_set():
                break
        return rv
