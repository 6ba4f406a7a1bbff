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
# Set True only when nothing the agent may do helps (agent.decide.cycle.unremediable): what a
# NodeHealthCheck selects to escalate, since NHC matches a condition by type and status only.
UNREMEDIABLE_TYPE = "MemoryFragmentationUnremediable"
CONDITION_TYPES = (CONDITION_TYPE, UNREMEDIABLE_TYPE)
# Per NUMA node verdict, blocks and cause (agent.decide.summary), written in the condition's PATCH.
SUMMARY_ANNOTATION = "memfrag.dev/summary"


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
    type: str = CONDITION_TYPE

    def to_json(self) -> dict[str, str]:
        return {
            "type": self.type,
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
    unremediable: Condition | None = None
    summary: str | None = None  # the SUMMARY_ANNOTATION as written
    labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def ours(self) -> bool:
        """Whether anything the agent reports is on the Node (what `cleanup` removes)."""
        return self.condition is not None or self.unremediable is not None or bool(self.summary)


def node_view(node: dict[str, Any]) -> NodeView:
    meta = node.get("metadata") or {}
    found: dict[str, Condition] = {}
    for c in (node.get("status") or {}).get("conditions") or []:
        kind = c.get("type") if isinstance(c, dict) else None
        if kind in CONDITION_TYPES:
            found[str(kind)] = Condition(
                status=_status(c.get("status")),
                reason=str(c.get("reason", "")),
                message=str(c.get("message", "")),
                last_transition=str(c.get("lastTransitionTime", "")),
                last_heartbeat=str(c.get("lastHeartbeatTime", "")),
                type=str(kind),
            )
    summary = (meta.get("annotations") or {}).get(SUMMARY_ANNOTATION)
    return NodeView(
        name=str(meta.get("name", "")),
        uid=str(meta.get("uid", "")),
        resource_version=str(meta.get("resourceVersion", "")),
        condition=found.get(CONDITION_TYPE),
        taints=tuple((node.get("spec") or {}).get("taints") or ()),
        unremediable=found.get(UNREMEDIABLE_TYPE),
        summary=None if summary is None else str(summary),
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


def condition_patch(
    cond: Condition, *more: Condition, summary: str | None = None
) -> dict[str, Any]:
    """status.conditions merges by type: this touches our conditions only; the summary
    annotation rides in the same PATCH (nodes/status stores metadata too), no extra write."""
    patch: dict[str, Any] = {"status": {"conditions": [c.to_json() for c in (cond, *more)]}}
    if summary is not None:
        patch["metadata"] = {"annotations": {SUMMARY_ANNOTATION: summary}}
    return patch


def removal_patch() -> dict[str, Any]:
    """Our conditions and the summary annotation, removed (`cleanup`)."""
    return {
        "metadata": {"annotations": {SUMMARY_ANNOTATION: None}},
        "status": {"conditions": [{"type": t, "$patch": "delete"} for t in CONDITION_TYPES]},
    }
