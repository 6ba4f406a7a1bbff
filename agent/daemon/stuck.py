"""The pods stuck in ContainerCreating on this node, from two watches: the node's pods (always)
and FailedCreatePodSandBox Events. The Events' field selector cannot name the node, so that watch
is cluster-wide: it runs only while this node has Pending pods (and SANDBOX_WATCH_LINGER after
the last), lists in pages and keeps only Events about this node's pods, at most
SANDBOX_EVENTS_MAX.

`update_watch` starts or stops the Event watch; `stuck` only answers; `delete` deletes the stuck
pods a controller recreates."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from agent.assess.pods import concerns_node, owned_by_controller, sandbox_failures, stuck_pods
from agent.decide.report import EventReason, EventSpec, EventType
from agent.kube import paths
from agent.kube.api import Api
from agent.kube.errors import ApiError
from agent.kube.informer import Informer

log = logging.getLogger("memfrag.agent")
SANDBOX_WATCH_LINGER = 300.0  # keep the sandbox-Event watch this long after the last Pending pod
SANDBOX_EVENTS_MAX = 1000  # the node's own FailedCreatePodSandBox Events kept at most
Failed = Callable[[str, ApiError], None]  # an API call failed: counted and logged by the caller


class StuckPods:
    def __init__(self, kube: Api, node: str, failed: Failed) -> None:
        self.kube, self.node, self.failed = kube, node, failed
        self.pods = Informer(
            kube, paths.PODS, {"fieldSelector": f"spec.nodeName={node}"}, name="pods"
        )
        self.sandbox: Informer | None = None
        self._last_pending = -1e18

    def informers(self) -> list[Informer]:
        return [self.pods] + ([self.sandbox] if self.sandbox is not None else [])

    def _new_sandbox_watch(self) -> Informer:
        return Informer(
            self.kube,
            paths.EVENTS,
            {"fieldSelector": "reason=FailedCreatePodSandBox,involvedObject.kind=Pod"},
            name="sandbox-events",
            keep=lambda e: concerns_node(e, self.node, self.pods.has),
            max_items=SANDBOX_EVENTS_MAX,
        )

    def update_watch(self, now: float) -> None:
        """Start the Event watch when a pod is Pending; stop it SANDBOX_WATCH_LINGER after the
        last was (`now`: monotonic)."""
        pods = self.pods.items()
        if any((p.get("status") or {}).get("phase") == "Pending" for p in pods):
            self._last_pending = now
            if self.sandbox is None:
                self.sandbox = self._new_sandbox_watch()
                self.sandbox.start()
        elif self.sandbox is not None and now - self._last_pending > SANDBOX_WATCH_LINGER:
            self.sandbox.stop()
            self.sandbox = None

    def stuck(self, wall: float, threshold: float) -> list[str]:
        """namespace/name of the stuck pods. Pod and Event timestamps come from the API:
        compared with `wall`."""
        window = max(threshold, 300.0)
        events = self.sandbox.items() if self.sandbox is not None else []
        failed = sandbox_failures(events, wall, window)
        return stuck_pods(self.pods.items(), wall, threshold, failed)

    def delete(self, keys: list[str]) -> list[EventSpec]:
        """Delete the stuck pods a controller recreates (a bare pod would simply be gone)."""
        pods: dict[str, dict[str, Any]] = {
            f"{p['metadata'].get('namespace')}/{p['metadata'].get('name')}": p
            for p in self.pods.items()
        }
        events = []
        for key in keys:
            pod = pods.get(key)
            if pod is None or not owned_by_controller(pod):
                continue
            ns, name = key.split("/", 1)
            try:
                self.kube.request("DELETE", paths.pod(ns, name))
                events.append(
                    EventSpec(
                        EventType.NORMAL,
                        EventReason.STUCK_POD_DELETED,
                        f"Deleted {key} (stuck in ContainerCreating) so its "
                        "controller recreates it on the recovered node",
                    )
                )
            except ApiError as exc:
                self.failed("pod-delete", exc)
        return events

    def stop(self) -> None:
        for inf in self.informers():
            inf.stop()
