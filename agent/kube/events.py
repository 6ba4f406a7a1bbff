"""Events on our Node, aggregated client-side: a repeat within the window bumps the count of the
Event already written instead of creating another (what kubectl describe shows as 'x12')."""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from agent.base.times import rfc3339
from agent.decide.report import EventSpec, PodRef
from agent.kube import paths
from agent.kube.api import SMP, Api
from agent.kube.errors import ApiError

log = logging.getLogger(__name__)
COMPONENT = "memfrag-agent"


@dataclass
class _Seen:
    name: str
    count: int
    last: float


class EventRecorder:
    def __init__(
        self,
        kube: Api,
        node: str,
        namespace: str = "default",
        window: float = 600.0,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """The aggregation window runs on `monotonic`; `wall` only stamps the Events."""
        self.kube, self.node, self.namespace, self.window = kube, node, namespace, window
        self._seen: OrderedDict[tuple[str, str], _Seen] = OrderedDict()
        self._wall, self._monotonic = wall, monotonic

    def emit(self, ev: EventSpec) -> None:
        """Write or bump one Event; failures are logged and counted by the caller, never raised
        (an Event is a courtesy to the operator, not state)."""
        if ev.pod is not None:
            return self._on_pod(ev, ev.pod)
        now, wall = self._monotonic(), self._wall()
        key = (ev.reason, ev.message)
        seen = self._seen.get(key)
        try:
            if seen and now - seen.last < self.window:
                seen.count += 1
                seen.last = now
                self.kube.request(
                    "PATCH",
                    paths.event(self.namespace, seen.name),
                    body={"count": seen.count, "lastTimestamp": rfc3339(wall)},
                    content_type=SMP,
                )
                self._seen.move_to_end(key)
                return
            digest = hashlib.sha1(f"{ev.reason}{ev.message}{wall}{now}".encode()).hexdigest()[:10]
            name = f"{self.node}.memfrag.{digest}"
            self.kube.request(
                "POST",
                paths.events(self.namespace),
                body=self._event(
                    ev,
                    {"name": name, "namespace": self.namespace},
                    # uid as kubelet does; kubectl describe node looks events up by it
                    {"apiVersion": "v1", "kind": "Node", "name": self.node, "uid": self.node},
                    wall,
                ),
            )
            self._seen[key] = _Seen(name, 1, now)
            while len(self._seen) > 200:
                self._seen.popitem(last=False)
        except ApiError as exc:
            if seen is not None and exc.status == 404:
                self._seen.pop(key, None)  # expired server-side (TTL 1h): write a new one
                return self.emit(ev)
            log.warning("event not written", extra={"reason": ev.reason, "error": str(exc)})
            raise
        return None

    def _on_pod(self, ev: EventSpec, pod: PodRef) -> None:
        """An Event about a pod, in its namespace (kubectl describe pod shows it). Written once
        (the decision says it once per episode): never patched, so the agent needs only create
        there."""
        wall = self._wall()
        digest = hashlib.sha1(f"{ev.reason}{pod.uid}{wall}".encode()).hexdigest()[:10]
        try:
            self.kube.request(
                "POST",
                paths.events(pod.namespace),
                body=self._event(
                    ev,
                    {"name": f"{pod.name[:200]}.memfrag.{digest}", "namespace": pod.namespace},
                    {
                        "apiVersion": "v1",
                        "kind": "Pod",
                        "namespace": pod.namespace,
                        "name": pod.name,
                        "uid": pod.uid,
                    },
                    wall,
                ),
            )
        except ApiError as exc:
            log.warning(
                "pod event not written",
                extra={
                    "reason": ev.reason,
                    "pod": f"{pod.namespace}/{pod.name}",
                    "error": str(exc),
                },
            )
            raise

    def _event(
        self, ev: EventSpec, metadata: dict[str, str], involved: dict[str, str], wall: float
    ) -> dict[str, object]:
        """One new Event's body, about the node or a pod: written by this node's agent."""
        return {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": metadata,
            "involvedObject": involved,
            "reason": ev.reason,
            "message": ev.message[:1024],
            "type": ev.type,
            "count": 1,
            "firstTimestamp": rfc3339(wall),
            "lastTimestamp": rfc3339(wall),
            "source": {"component": COMPONENT, "host": self.node},
            "reportingComponent": COMPONENT,
            "reportingInstance": self.node,
        }
