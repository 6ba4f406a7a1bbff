"""A small list-and-watch cache over raw JSON (what client-go calls an informer).

The agent reads the API server only through watches: one for its own Node (a field selector on
metadata.name) and one for the pods on it (spec.nodeName), never a list of all nodes per poll.
An expired watch (410 Gone) re-lists; any other failure backs off with jitter and re-lists.

Each watch asks the server to end it after WATCH_SECONDS_MIN..MAX (uniform, so a fleet's
renewals do not fall together) and asks for bookmarks: the server sends one about every minute
and just before it ends the watch, so the next watch resumes from a fresh resourceVersion (no
410, no re-list) and a healthy node costs one GET per watch per 30-60 min (it was every 300 s:
24 requests per node-hour for two watches). The minute's bookmark also tells a live stream
from a dead connection (Kube.watch's idle read timeout).

A cluster-wide watch (FailedCreatePodSandBox Events) is bounded three ways: the list is paged
(limit/continue), `keep` drops every object that does not concern this node as it arrives, and
the cache holds at most `max_items` (the oldest go first).
"""

from __future__ import annotations

import logging
import random
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from agent.kube.api import Api
from agent.kube.errors import ApiError, backoff_delay

log = logging.getLogger(__name__)
JSON = dict[str, Any]
PAGE = 500
WATCH_SECONDS_MIN, WATCH_SECONDS_MAX = 1800, 3600  # the server ends each watch within these


def object_key(obj: JSON) -> str:
    """namespace/name, or the name of a cluster-scoped object (a Node)."""
    meta = obj.get("metadata") or {}
    ns, name = meta.get("namespace"), str(meta.get("name", ""))
    return f"{ns}/{name}" if ns else name


def _newer(a: str, b: str) -> bool:
    """Whether resourceVersion a is newer than b (opaque strings; etcd's are integers)."""
    if a.isdigit() and b.isdigit():
        return int(a) > int(b)
    return a != b


class Informer:
    def __init__(
        self,
        kube: Api,
        path: str,
        query: dict[str, str],
        on_change: Callable[[], None] | None = None,
        name: str = "informer",
        keep: Callable[[JSON], bool] | None = None,
        max_items: int | None = None,
        page: int = PAGE,
        watch_seconds: Callable[[], int] | None = None,
    ) -> None:
        """`watch_seconds`: the timeoutSeconds of each watch (default: uniform over
        WATCH_SECONDS_MIN..MAX)."""
        self.kube, self.path, self.query, self.name = kube, path, query, name
        self.watch_seconds = watch_seconds or (
            lambda: random.randint(WATCH_SECONDS_MIN, WATCH_SECONDS_MAX)
        )
        self.watches = 0  # watches opened (each one GET)
        self.on_change, self.keep, self.max_items, self.page = on_change, keep, max_items, page
        self.pages = 0  # list pages read (a paged list of N objects reads N / page)
        self.dropped = 0  # objects evicted to stay within max_items
        self._items: OrderedDict[str, JSON] = OrderedDict()
        self._lock = threading.Lock()
        self.synced = threading.Event()
        self.healthy = False
        self.errors = 0
        self.relists = 0
        self._stop = threading.Event()
        self._streamed = False  # the current watch delivered an event

    def items(self) -> list[JSON]:
        with self._lock:
            return list(self._items.values())

    def get(self, key: str) -> JSON | None:
        """By name (cluster-scoped) or namespace/name."""
        with self._lock:
            return self._items.get(key)

    def has(self, key: str) -> bool:
        with self._lock:
            return key in self._items

    def offer(self, obj: JSON) -> None:
        """Take an object we just wrote (the PATCH response) if it is newer than the cache."""
        meta = obj.get("metadata") or {}
        key = object_key(obj)
        with self._lock:
            old = self._items.get(key)
            old_rv = str((old or {}).get("metadata", {}).get("resourceVersion", "0"))
            if old is None or _newer(str(meta.get("resourceVersion", "0")), old_rv):
                self._put(self._items, key, obj)

    def _put(self, items: OrderedDict[str, JSON], key: str, obj: JSON) -> None:
        if self.keep is not None and not self.keep(obj):
            items.pop(key, None)  # no longer of interest (or never was)
            return
        items[key] = obj
        items.move_to_end(key)
        while self.max_items is not None and len(items) > self.max_items:
            items.popitem(last=False)
            self.dropped += 1
            if self.dropped == 1:
                log.warning(
                    "too many objects: dropping the oldest",
                    extra={"informer": self.name, "max_items": self.max_items},
                )

    def stop(self) -> None:
        self._stop.set()

    def start(self) -> threading.Thread:
        t = threading.Thread(target=self.run, name=self.name, daemon=True)
        t.start()
        return t

    def _list(self) -> str:
        """A paged list: one page of objects in memory at a time, only the kept ones stay."""
        items: OrderedDict[str, JSON] = OrderedDict()
        query = dict(self.query, limit=str(self.page))
        while True:
            result = self.kube.request("GET", self.path, query)
            self.pages += 1
            for obj in result.get("items") or []:
                self._put(items, object_key(obj), obj)
            meta = result.get("metadata") or {}
            if not meta.get("continue"):
                break
            query["continue"] = str(meta["continue"])
        with self._lock:
            self._items = items
        self.relists += 1
        self.synced.set()
        if self.on_change:
            self.on_change()
        return str(meta.get("resourceVersion", ""))

    def run(self) -> None:
        """List, then watch from the list's resourceVersion, again and again. The backoff grows
        until a watch has worked (delivered an event or ran until the server ended it): a list
        that succeeds says nothing of the watch after it, and resetting there made an informer
        whose watches got 429s re-list every second or so. A watch refused with 429 (API
        Priority and Fairness) or unreachable is retried from the same resourceVersion, as
        client-go's reflector does; any other failure re-lists."""
        attempt = 0
        rv = ""
        while not self._stop.is_set():
            self._streamed = False
            try:
                if not rv:
                    rv = self._list()
                    self.healthy = True
                rv = self._watch_once(rv)  # '': expired, re-list
                attempt = 0
            except ApiError as exc:
                if self._streamed:
                    attempt = 0  # it worked for a while: a new failure starts a new backoff
                self.healthy = False
                self.errors += 1
                if not (exc.method == "WATCH" and exc.status in (0, 429)):
                    rv = ""
                delay = backoff_delay(attempt, base=1.0, cap=30.0)
                attempt += 1
                log.warning(
                    "list or watch failed: retrying",
                    extra={"informer": self.name, "error": str(exc), "retry_s": round(delay, 1)},
                )
                self._stop.wait(delay)

    def _watch_once(self, rv: str) -> str:
        """Follow one watch; return the resourceVersion to resume from, '' to re-list."""
        self.watches += 1
        query = dict(self.query, resourceVersion=rv)
        for event in self.kube.watch(self.path, query, timeout_seconds=self.watch_seconds()):
            self._streamed, self.healthy = True, True
            etype, obj = event.get("type"), event.get("object") or {}
            if etype == "ERROR":
                if obj.get("code") == 410:
                    log.info("watch expired (410 Gone): re-listing", extra={"informer": self.name})
                    return ""
                raise ApiError("WATCH", self.path, int(obj.get("code") or 0), str(obj))
            meta = obj.get("metadata") or {}
            rv = str(meta.get("resourceVersion", rv))
            if etype == "BOOKMARK":
                continue  # only a newer resourceVersion to resume from
            key = object_key(obj)
            with self._lock:
                if etype == "DELETED":
                    self._items.pop(key, None)
                else:
                    self._put(self._items, key, obj)
            if self.on_change:
                self.on_change()
            if self._stop.is_set():
                break
        return rv
