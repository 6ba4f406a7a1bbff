"""Cluster-wide operator commands: what the agent says about every node (`status`, and the
kubectl plugin's `nodes`, `describe` and `events`, all from one read: `read_fleet`) and
`cleanup` (remove every trace of the agent: taints, conditions, the summary, the contiguity
label, leases)."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from agent.base.times import rfc3339
from agent.decide.contiguity import LABEL as CONTIGUITY_LABEL
from agent.decide.nodeview import SUMMARY_ANNOTATION, Condition, NodeView, has_taint, node_view
from agent.decide.remediation import PastAction
from agent.decide.summary import Summary, SummaryError, parse_summary
from agent.kube import paths
from agent.kube.api import Api
from agent.kube.errors import ApiError
from agent.kube.events import COMPONENT
from agent.kube.leases import (
    LABEL,
    LABEL_VALUE,
    OWNER,
    NodeState,
    node_record_name,
    parse_node_state,
)
from agent.kube.nodes import delete_condition, write_label, write_taint

EVENTS_SHOWN = 10  # recent Events in `describe`


def list_all(kube: Api, path: str, query: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Paged list (limit/continue), so a 5,000-node cluster is read in bounded chunks."""
    items: list[dict[str, Any]] = []
    q = dict(query or {}, limit="500")
    while True:
        page = kube.request("GET", path, q)
        items += page.get("items") or []
        token = (page.get("metadata") or {}).get("continue")
        if not token:
            return items
        q["continue"] = token


def node_records(kube: Api, namespace: str) -> tuple[list[dict[str, Any]], dict[str, NodeState]]:
    """The agent's Leases in `namespace`, and each node's record among them (by node)."""
    leases = list_all(kube, paths.leases(namespace), {"labelSelector": f"{LABEL}={LABEL_VALUE}"})
    records: dict[str, NodeState] = {}
    for lease in leases:
        owner = ((lease.get("metadata") or {}).get("annotations") or {}).get(OWNER)
        if owner and lease["metadata"]["name"] == node_record_name(str(owner)):
            records[str(owner)] = parse_node_state(lease)
    return leases, records


@dataclass
class Fleet:
    """One read of what the agent says: the Nodes, each node's record (its actions), the
    agent's Events; `notes` say what could not be read (the commands print them on stderr)."""

    views: list[NodeView]
    records: dict[str, NodeState] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def summary(self, v: NodeView) -> Summary | None:
        try:
            return parse_summary(v.summary)
        except SummaryError as exc:
            self.notes.append(f"node/{v.name}: annotation memfrag.dev/summary ignored: {exc}")
            return None

    def last_action(self, node: str) -> str:
        """The node record's last action (every agent pod's), else the latest Remediation
        Event (the record unreadable), else '-'."""
        rec = self.records.get(node)
        if rec is not None and rec.actions:
            return action_text(rec.actions[-1])
        ev = [
            e for e in self.events if _node_of(e) == node and _reason(e).startswith("Remediation")
        ]
        if not ev:
            return "-"
        e = max(ev, key=_last_seen)
        return f"{_last_seen(e)} {_reason(e)}: {e.get('message', '')}"


def action_text(a: PastAction) -> str:
    return f"{a.step} {a.result} ({rfc3339(a.wall)})"


def _node_of(e: dict[str, Any]) -> str:
    return str((e.get("involvedObject") or {}).get("name", ""))


def _reason(e: dict[str, Any]) -> str:
    return str(e.get("reason", ""))


def _last_seen(e: dict[str, Any]) -> str:
    return str(e.get("lastTimestamp") or e.get("eventTime") or e.get("firstTimestamp") or "")


def read_fleet(kube: Api, namespace: str, node: str | None = None) -> Fleet:
    """Every Node (or the one named), the node records in `namespace`, the agent's Events. The
    Nodes must be readable (ApiError otherwise); the records and Events are extras: what
    cannot be read is said in `notes`."""
    if node is None:
        views = [node_view(n) for n in list_all(kube, paths.NODES)]
    else:
        views = [node_view(kube.request("GET", paths.node(node)))]
    fleet = Fleet(views)
    try:
        if node is None:
            fleet.records = node_records(kube, namespace)[1]
        else:  # one node: its record only
            lease = kube.request("GET", paths.lease(namespace, node_record_name(node)))
            fleet.records = {node: parse_node_state(lease)}
    except ApiError as exc:
        if exc.status != 404:  # no record: the agent never acted there
            fleet.notes.append(f"node records in namespace {namespace} not read: {exc}")
    selector = f"source={COMPONENT}" + (f",involvedObject.name={node}" if node else "")
    try:
        fleet.events = list_all(kube, paths.EVENTS, {"fieldSelector": selector})
    except ApiError as exc:
        fleet.notes.append(f"the agent's Events not read: {exc}")
    return fleet


def status_rows(fleet: Fleet, taint_key: str) -> list[dict[str, Any]]:
    """`status`: one row per node."""
    rows = []
    for v in fleet.views:
        c, u = v.condition, v.unremediable
        rows.append(
            {
                "node": v.name,
                "condition": c.status if c else "-",
                "reason": c.reason if c else "-",
                "since": c.last_transition if c else "-",
                "tainted": has_taint(v.taints, taint_key),
                "last_remediation": fleet.last_action(v.name),
                "message": c.message if c else "",
                "unremediable": u.status if u else "-",
            }
        )
    return rows


def numa_rows(fleet: Fleet, taint_key: str) -> list[dict[str, Any]]:
    """`kubectl memfrag nodes`: one row per node x NUMA node, from the summary annotation (a
    node without one, e.g. an older agent's, gets one row from its condition)."""
    rows = []
    for v in fleet.views:
        c = v.condition
        s = fleet.summary(v)
        common = {
            "node": v.name,
            "condition": c.status if c else "-",
            "reason": c.reason if c else "-",
            "unremediable": v.unremediable.status if v.unremediable else "-",
            "tainted": has_taint(v.taints, taint_key),
            "last_action": fleet.last_action(v.name),
            "stuck_pods": s.stuck if s else None,
            "order": s.order if s else None,
            "cause": s.cause.value if s else "-",
        }
        if s is None or not s.numa:
            rows.append({**common, "numa_node": None, "verdict": "-", "blocks": None})
        for n in s.numa if s else ():
            rows.append(
                {**common, "numa_node": n.node, "verdict": n.state.value, "blocks": n.blocks}
            )
    return rows


def _condition_json(c: Condition | None) -> dict[str, str] | None:
    return None if c is None else c.to_json()


def describe(fleet: Fleet, taint_key: str) -> dict[str, Any]:
    """`kubectl memfrag describe NODE` (the fleet read for that one node)."""
    v = fleet.views[0]
    s = fleet.summary(v)
    rec = fleet.records.get(v.name)
    events = sorted(fleet.events, key=_last_seen, reverse=True)[:EVENTS_SHOWN]
    return {
        "node": v.name,
        "condition": _condition_json(v.condition),
        "unremediable": _condition_json(v.unremediable),
        "taints": [t for t in v.taints if t.get("key") == taint_key],
        "summary": None
        if s is None
        else {
            "order": s.order,
            "cause": s.cause.value,
            "stuck_pods": s.stuck,
            "numa_nodes": [
                {"node": n.node, "state": n.state.value, "blocks": n.blocks} for n in s.numa
            ],
        },
        "last_remediation": fleet.last_action(v.name),
        "actions": [
            {"step": a.step, "result": a.result.value, "at": rfc3339(a.wall), "by": a.by}
            for a in (rec.actions[-5:] if rec else ())
        ],
        "events": event_rows(events),
    }


def event_rows(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`kubectl memfrag events`: the agent's Events, the latest first."""
    return [
        {
            "last_seen": _last_seen(e),
            "type": str(e.get("type", "")),
            "reason": _reason(e),
            "node": _node_of(e),
            "count": int(e.get("count") or 1),
            "message": str(e.get("message", "")),
        }
        for e in sorted(events, key=_last_seen, reverse=True)
    ]


def cleanup(
    kube: Api, namespace: str, taint_key: str, taint_effects: Collection[str] = ()
) -> list[str]:
    """Remove our taint, conditions, summary and label from every node and our Leases; report
    what was done.

    Our taint is our key with an effect the agent put on: the one each node's record names,
    and `taint_effects` (the configured effect, from the chart). The same key with any other
    effect is another tool's, and stays."""
    done: list[str] = []
    leases, records = node_records(kube, namespace)
    recorded = {node: set(r.taint_effects) for node, r in records.items()}
    for listed in list_all(kube, paths.NODES):
        name = listed["metadata"]["name"]
        ours = recorded.get(name, set()) | set(taint_effects)
        w = write_taint(kube, name, taint_key, None, ours, listed)
        if w.changed:
            done.append(f"node/{name}: removed taint {taint_key}:{','.join(w.removed)}")
        v = node_view(w.node)
        if v.ours:
            delete_condition(kube, name)
            present = [
                f"condition {c.type}" for c in (v.condition, v.unremediable) if c is not None
            ] + ([f"annotation {SUMMARY_ANNOTATION}"] if v.summary is not None else [])
            done.append(f"node/{name}: removed {', '.join(present)}")
        if CONTIGUITY_LABEL in v.labels:
            write_label(kube, name, CONTIGUITY_LABEL, None)
            done.append(f"node/{name}: removed label {CONTIGUITY_LABEL}")
    for lease in leases:
        name = lease["metadata"]["name"]
        try:
            kube.request("DELETE", paths.lease(namespace, name))
            done.append(f"lease/{name}: deleted")
        except ApiError as exc:
            if exc.status != 404:
                raise
    return done
