"""Pure views of the Node object: our condition and taint, read from and written to plain JSON.

`spec.taints` has no merge key: a patch replaces the whole list, so every change is computed
from the list just read (with its resourceVersion) and keeps every other controller's taint.
A taint is identified by key AND effect (the API allows one of each pair): ours is our key with
an effect we put on; the same key with another effect belongs to someone else.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

CONDITION_TYPE = "MemoryFragmented"


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


@dataclass(frozen=True)
class Condition:
    status: ConditionStatus
    reason: str
    message: str
    last_transition: str  # RFC 3339, as the API server stores it
    last_heartbeat: str

    def to_json(self) -> dict[str, str]:
        return {
            "type": CONDITION_TYPE,
            "status": self.status,
            "reason": self.reason,
            "message": self.message,
            "lastTransitionTime": self.last_transition,
            "lastHeartbeatTime": self.last_heartbeat,
        }


@dataclass(frozen=True)
class NodeView:
    name: str
    uid: str
    resource_version: str
    condition: Condition | None
    taints: tuple[dict[str, Any], ...]
    labels: Mapping[str, str] = field(default_factory=dict)


def node_view(node: dict[str, Any]) -> NodeView:
    meta = node.get("metadata") or {}
    cond = None
    for c in (node.get("status") or {}).get("conditions") or []:
        if c.get("type") == CONDITION_TYPE:
            cond = Condition(
                status=_status(c.get("status")),
                reason=str(c.get("reason", "")),
                message=str(c.get("message", "")),
                last_transition=str(c.get("lastTransitionTime", "")),
                last_heartbeat=str(c.get("lastHeartbeatTime", "")),
            )
    return NodeView(
        name=str(meta.get("name", "")),
        uid=str(meta.get("uid", "")),
        resource_version=str(meta.get("resourceVersion", "")),
        condition=cond,
        taints=tuple((node.get("spec") or {}).get("taints") or ()),
        labels={
            str(k): str(v) for k, v in (meta.get("labels") or {}).items() if isinstance(v, str)
        },
    )


def _status(value: object) -> ConditionStatus:
    """What another writer put there: anything but True/False reads as Unknown."""
    try:
        return ConditionStatus(str(value))
    except ValueError:
        return ConditionStatus.UNKNOWN


def has_taint(taints: tuple[dict[str, Any], ...], key: str, effect: str | None = None) -> bool:
    """A taint under `key` (with `effect`, if given)."""
    return any(t.get("key") == key and effect in (None, t.get("effect")) for t in taints)


def taint_effects(taints: tuple[dict[str, Any], ...], key: str) -> set[str]:
    """The effects of the taints under `key` (ours among them: those with an effect we own)."""
    return {str(t.get("effect")) for t in taints if t.get("key") == key}


def with_taint(
    taints: tuple[dict[str, Any], ...], key: str, effect: str, value: str, owned: Collection[str]
) -> list[dict[str, Any]]:
    """The list with our taint present exactly once, with `effect`: ours under other effects
    (`owned`: a taint_effect changed since) go, another tool's taint under our key stays."""
    return [
        *without_taint(taints, key, {*owned, effect}),
        {"key": key, "value": value, "effect": effect},
    ]


def without_taint(
    taints: tuple[dict[str, Any], ...], key: str, effects: Collection[str]
) -> list[dict[str, Any]]:
    """The list without our taints: our key with one of the `effects` we put on."""
    return [t for t in taints if not (t.get("key") == key and t.get("effect") in effects)]


def taint_patch(resource_version: str, taints: list[dict[str, Any]]) -> dict[str, Any]:
    """A strategic-merge patch that replaces spec.taints only if nobody wrote the node since
    we read it: the resourceVersion is a precondition (409 Conflict otherwise)."""
    return {"metadata": {"resourceVersion": resource_version}, "spec": {"taints": taints}}


def label_patch(key: str, value: str | None) -> dict[str, Any]:
    """metadata.labels merges by key: this touches our label only (None: removes it)."""
    return {"metadata": {"labels": {key: value}}}


def condition_patch(cond: Condition) -> dict[str, Any]:
    """status.conditions merges by type: this touches our condition only."""
    return {"status": {"conditions": [cond.to_json()]}}
