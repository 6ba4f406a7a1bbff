"""Pods on this node stuck in ContainerCreating: the Kubernetes face of a failed high-order
allocation (runc's namespace set-up fails, kubelet reports FailedCreatePodSandBox and retries)."""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Set as AbstractSet
from typing import Any

from agent.base.times import parse_rfc3339

_WAITING = ("ContainerCreating", "PodInitializing")


def _scheduled_at(pod: dict[str, Any]) -> float | None:
    for c in (pod.get("status") or {}).get("conditions") or []:
        if c.get("type") == "PodScheduled" and c.get("status") == "True":
            return parse_rfc3339(str(c.get("lastTransitionTime", "")))
    return parse_rfc3339(str((pod.get("metadata") or {}).get("creationTimestamp", "")))


def is_stuck(pod: dict[str, Any], now: float, threshold: float) -> bool:
    """Pending, bound to the node, no container started, waiting in ContainerCreating (or with
    no container status at all: the sandbox never came up) for longer than `threshold`."""
    status = pod.get("status") or {}
    if status.get("phase") != "Pending" or (pod.get("metadata") or {}).get("deletionTimestamp"):
        return False
    statuses = (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or [])
    for cs in statuses:
        waiting = (cs.get("state") or {}).get("waiting")
        # Without a sandbox no container starts: kubelet says ContainerCreating, or
        # PodInitializing for a pod with init containers.
        if waiting is None or waiting.get("reason") not in _WAITING:
            return False
    since = _scheduled_at(pod)
    return since is not None and now - since > threshold


def _key(meta: dict[str, Any]) -> str:
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


def concerns_node(event: dict[str, Any], node: str, local_pod: Callable[[str], bool]) -> bool:
    """An Event about a pod on this node: kubelet names its node in source.host, and the pod
    is one of this node's (namespace/name). The cluster-wide watch keeps nothing else."""
    if (event.get("source") or {}).get("host") == node:
        return True
    involved = event.get("involvedObject") or {}
    return involved.get("kind") == "Pod" and local_pod(_key(involved))


def sandbox_failures(events: list[dict[str, Any]], now: float, window: float) -> set[str]:
    """namespace/name of pods with a FailedCreatePodSandBox Event seen within `window`: runc's
    'exit status 6' as kubelet reports it, a signal that needs no waiting threshold."""
    out = set()
    for e in events:
        if e.get("reason") != "FailedCreatePodSandBox":
            continue
        last = parse_rfc3339(str(e.get("lastTimestamp") or e.get("eventTime") or "")[:19] + "Z")
        if last is not None and now - last <= window:
            out.add(_key(e.get("involvedObject") or {}))
    return out


def stuck_pods(
    pods: list[dict[str, Any]],
    now: float,
    threshold: float,
    sandbox_failed: AbstractSet[str] = frozenset(),
) -> list[str]:
    """namespace/name of each stuck pod (waiting past the threshold, or pending with a recent
    FailedCreatePodSandBox Event), sorted for stable messages."""
    out = []
    for p in pods:
        key = _key(p.get("metadata") or {})
        pending = (p.get("status") or {}).get("phase") == "Pending"
        if is_stuck(p, now, threshold) or (pending and key in sandbox_failed):
            out.append(key)
    return sorted(out)


def owned_by_controller(pod: dict[str, Any]) -> bool:
    """Deleting such a pod gets it recreated; a bare pod would simply be gone."""
    refs = (pod.get("metadata") or {}).get("ownerReferences") or []
    return any(r.get("controller") for r in refs)
