"""Every API path the agent uses, written once."""

from __future__ import annotations

from urllib.parse import quote

NODES = "/api/v1/nodes"
PODS = "/api/v1/pods"
EVENTS = "/api/v1/events"  # every namespace's


def _seg(name: str) -> str:
    return quote(name, safe="")


def node(name: str) -> str:
    return f"{NODES}/{_seg(name)}"


def node_status(name: str) -> str:
    return f"{node(name)}/status"


def pod(namespace: str, name: str) -> str:
    return f"/api/v1/namespaces/{_seg(namespace)}/pods/{_seg(name)}"


def events(namespace: str) -> str:
    return f"/api/v1/namespaces/{_seg(namespace)}/events"


def event(namespace: str, name: str) -> str:
    return f"{events(namespace)}/{_seg(name)}"


def leases(namespace: str) -> str:
    return f"/apis/coordination.k8s.io/v1/namespaces/{_seg(namespace)}/leases"


def lease(namespace: str, name: str) -> str:
    return f"{leases(namespace)}/{_seg(name)}"
