"""The benchmark's own view of the API server, independent of the agent's code: /metrics scrapes
(admin client cert) and a raw HTTPS watch on one Node, timestamped when each event arrives."""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import ssl
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from bench.stats import (
    LONG_RUNNING_VERBS,
    Series,
    delta,
    histogram_buckets,
    histogram_quantile,
    label,
    parse_prometheus,
    request_counts,
)

PREFIXES = (
    "apiserver_request_total",
    "apiserver_request_duration_seconds_bucket",
    "apiserver_longrunning_requests",
)


class ApiServerMetrics:
    """Scrapes kube-apiserver's /metrics. Scrapes go to a non-resource URL, which
    apiserver_request_total does not count (only resource requests are summed here)."""

    def __init__(self, server: str, ctx: ssl.SSLContext) -> None:
        self.server, self.ctx = server, ctx

    def scrape(self) -> dict[Series, float]:
        with urllib.request.urlopen(f"{self.server}/metrics", context=self.ctx, timeout=30) as r:
            return parse_prometheus(r.read().decode(), PREFIXES)


@dataclass
class Window:
    """What the API server counted between two scrapes."""

    seconds: float
    counts: dict[tuple[str, str, str], float]  # (verb, resource, subresource) -> requests
    p99_s: float | None  # non-watch request latency, server side
    p50_s: float | None
    watches_open: float  # at the end


def window(before: dict[Series, float], after: dict[Series, float], seconds: float) -> Window:
    d = delta(before, after)
    buckets = histogram_buckets(d, "apiserver_request_duration_seconds", LONG_RUNNING_VERBS)
    watches = sum(
        v
        for s, v in after.items()
        if s[0] == "apiserver_longrunning_requests" and label(s, "verb") == "WATCH"
    )
    return Window(
        seconds=seconds,
        counts=request_counts(d),
        p99_s=histogram_quantile(0.99, buckets),
        p50_s=histogram_quantile(0.50, buckets),
        watches_open=watches,
    )


@dataclass(frozen=True)
class Seen:
    at: float  # time.monotonic() when the event was read off the socket
    status: str | None  # the condition's status, None when the node has no such condition
    tainted: bool
    resource_version: str


class RawWatch:
    """A list-then-watch of `path` over a plain HTTPS connection (admin client cert), in a
    thread; `on_event(type, object, arrival)` gets the listed items as ADDED and every event.
    Independent of agent.kube.client on purpose: the benchmark does not measure with the code it
    measures. stop() shuts the socket down."""

    def __init__(
        self,
        server: str,
        ctx: ssl.SSLContext,
        path: str,
        query: str,
        on_event: Callable[[str, dict[str, Any], float], None],
        name: str = "watch",
    ) -> None:
        u = urlsplit(server)
        self.host, self.port = u.hostname or "127.0.0.1", u.port or 443
        self.ctx, self.path, self.query, self.on_event, self.name = ctx, path, query, on_event, name
        self._stop = threading.Event()
        self._conn: http.client.HTTPSConnection | None = None
        self._thread: threading.Thread | None = None
        self.errors = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        conn = self._conn
        if conn is not None and conn.sock is not None:
            with contextlib.suppress(OSError):
                conn.sock.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        rv = ""
        sep = "&" if self.query else ""
        deadline = time.monotonic() + 7200  # bounded: no benchmark run lasts this long
        while not self._stop.is_set() and time.monotonic() < deadline:
            conn = http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=30)
            self._conn = conn
            try:
                if not rv:
                    conn.request("GET", f"{self.path}?{self.query}")
                    listing = json.loads(conn.getresponse().read())
                    rv = str(listing["metadata"]["resourceVersion"])
                    for item in listing.get("items") or []:
                        self.on_event("ADDED", item, time.monotonic())
                conn.request(
                    "GET",
                    f"{self.path}?{self.query}{sep}watch=1&allowWatchBookmarks=true"
                    f"&timeoutSeconds=3600&resourceVersion={rv}",
                )
                resp = conn.getresponse()
                if resp.status != 200:
                    raise OSError(f"watch answered {resp.status}")
                if conn.sock is not None:
                    conn.sock.settimeout(None)  # stop() shuts the socket down
                buf = b""
                while not self._stop.is_set():
                    chunk = resp.read1(65536)
                    if not chunk:
                        break
                    at = time.monotonic()
                    buf += chunk
                    *lines, buf = buf.split(b"\n")
                    for line in lines:
                        if not line.strip():
                            continue
                        ev = json.loads(line)
                        obj = ev.get("object") or {}
                        if ev.get("type") == "ERROR":
                            rv = ""  # expired: list again
                            break
                        rv = str((obj.get("metadata") or {}).get("resourceVersion", rv))
                        if ev.get("type") != "BOOKMARK":
                            self.on_event(str(ev.get("type")), obj, at)
            except (OSError, ValueError, KeyError, http.client.HTTPException):
                if self._stop.is_set():
                    break
                self.errors += 1
                self._stop.wait(0.2)
            finally:
                with contextlib.suppress(OSError):
                    conn.close()


class LeaseWrites:
    """Counts writes to Leases in kube-system, where kube-apiserver renews its identity Lease
    every 10 s: the one periodic write of an idle API server, taken out of every window
    exactly (by watch events) rather than estimated from a rate."""

    def __init__(self, server: str, ctx: ssl.SSLContext) -> None:
        self.events: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._started = False
        self.watch = RawWatch(
            server,
            ctx,
            "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases",
            "",
            self._on,
            name="kube-system-leases",
        )

    def _on(self, etype: str, obj: dict[str, Any], at: float) -> None:
        with self._lock:
            if self._started or etype != "ADDED":
                self.events.append((at, etype))

    def start(self) -> LeaseWrites:
        self.watch.start()
        time.sleep(1.0)  # the initial listing is not a write
        with self._lock:
            self.events.clear()
            self._started = True
        return self

    def counts(self, t0: float, t1: float) -> dict[tuple[str, str, str], float]:
        verbs = {"ADDED": "POST", "MODIFIED": "PUT", "DELETED": "DELETE"}
        out: dict[tuple[str, str, str], float] = {}
        with self._lock:
            for at, etype in self.events:
                if t0 <= at <= t1 and etype in verbs:
                    key = (verbs[etype], "leases", "")
                    out[key] = out.get(key, 0.0) + 1
        return out


class NodeWatcher:
    """Follows one Node through `GET /api/v1/nodes?fieldSelector=metadata.name=...&watch=1`,
    recording (arrival time, condition status, taint) for every event."""

    def __init__(
        self,
        server: str,
        ctx: ssl.SSLContext,
        node: str,
        condition_type: str = "MemoryFragmented",
        taint_key: str = "memfrag.dev/fragmented",
    ) -> None:
        self.node = node
        self.condition_type, self.taint_key = condition_type, taint_key
        self.history: list[Seen] = []
        self._cv = threading.Condition()
        self.watch = RawWatch(
            server,
            ctx,
            "/api/v1/nodes",
            "fieldSelector=" + quote(f"metadata.name={node}"),
            self._on,
            name=f"watch-{node}",
        )

    def _on(self, etype: str, obj: dict[str, Any], at: float) -> None:
        if etype in ("ADDED", "MODIFIED"):
            seen = self._view(obj, at)
            with self._cv:
                self.history.append(seen)
                self._cv.notify_all()

    def _view(self, node: dict[str, Any], at: float) -> Seen:
        status = None
        for c in (node.get("status") or {}).get("conditions") or []:
            if c.get("type") == self.condition_type:
                status = str(c.get("status"))
        taints = (node.get("spec") or {}).get("taints") or []
        tainted = any(t.get("key") == self.taint_key for t in taints)
        rv = str((node.get("metadata") or {}).get("resourceVersion", ""))
        return Seen(at, status, tainted, rv)

    def latest(self) -> Seen | None:
        with self._cv:
            return self.history[-1] if self.history else None

    def start(self) -> NodeWatcher:
        self.watch.start()
        return self

    def stop(self) -> None:
        self.watch.stop()

    def wait(self, pred: Callable[[Seen], bool], after: float, timeout: float) -> Seen | None:
        """The first event that arrived at or after `after` (monotonic) and satisfies pred;
        None on timeout."""
        end = time.monotonic() + timeout
        with self._cv:
            while True:
                for s in self.history:
                    if s.at >= after and pred(s):
                        return s
                left = end - time.monotonic()
                if left <= 0:
                    return None
                self._cv.wait(left)

    def wait_state(self, status: str, tainted: bool | None, timeout: float) -> Seen | None:
        """Wait until the latest event shows `status` (and the taint as given)."""
        end = time.monotonic() + timeout
        with self._cv:
            while True:
                s = self.history[-1] if self.history else None
                if (
                    s is not None
                    and s.status == status
                    and (tainted is None or s.tainted == tainted)
                ):
                    return s
                left = end - time.monotonic()
                if left <= 0:
                    return None
                self._cv.wait(left)
