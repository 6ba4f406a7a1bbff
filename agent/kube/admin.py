"""Cluster-wide operator commands: `status` (what the agent says about every node) and
`cleanup` (remove every trace of the agent: taints, conditions, labels, leases)."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from agent.decide.contiguity import LABEL as CONTIGUITY_LABEL
from agent.decide.nodeview import CONDITION_TYPE, has_taint, node_view
from agent.kube import paths
from agent.kube.api import Api
from agent.kube.errors import ApiError
from agent.kube.leases import LABEL, LABEL_VALUE, OWNER, node_record_name, parse_node_state
from agent.kube.nodes import delete_condition, write_label, write_taint


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


def status_rows(kube: Api, taint_key: str) -> list[dict[str, Any]]:
    nodes = list_all(kube, paths.NODES)
    last: dict[str, dict[str, Any]] = {}
    try:
        for e in list_all(kube, paths.EVENTS, {"fieldSelector": "source=memfrag-agent"}):
            if not str(e.get("reason", "")).startswith("Remediation"):
                continue
            node = (e.get("involvedObject") or {}).get("name", "")
            if str(e.get("lastTimestamp", "")) >= str(last.get(node, {}).get("lastTimestamp", "")):
                last[node] = e
    except ApiError:
        pass  # events are optional to the table; the conditions are what matters
    rows = []
    for n in nodes:
        v = node_view(n)
        c = v.condition
        ev = last.get(v.name)
        rows.append(
            {
                "node": v.name,
                "condition": c.status if c else "-",
                "reason": c.reason if c else "-",
                "since": c.last_transition if c else "-",
                "tainted": has_taint(v.taints, taint_key),
                "last_remediation": (
                    f"{ev.get('lastTimestamp', '')} {ev.get('reason', '')}: {ev.get('message', '')}"
                    if ev
                    else "-"
                ),
                "message": c.message if c else "",
            }
        )
    return rows


def status_table(rows: list[dict[str, Any]]) -> str:
    head = ("NODE", "MEMORYFRAGMENTED", "REASON", "SINCE", "TAINT", "LAST REMEDIATION")
    table = [head] + [
        (
            r["node"],
            r["condition"],
            r["reason"],
            r["since"],
            "yes" if r["tainted"] else "no",
            r["last_remediation"][:70],
        )
        for r in rows
    ]
    widths = [max(len(str(row[i])) for row in table) for i in range(len(head))]
    return (
        "\n".join(
            "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
            for row in table
        )
        + "\n"
    )


def cleanup(
    kube: Api, namespace: str, taint_key: str, taint_effects: Collection[str] = ()
) -> list[str]:
    """Remove our taint, condition and label from every node and our Leases; report what was
    done.

    Our taint is our key with an effect the agent put on: the one each node's record names,
    and `taint_effects` (the configured effect, from the chart). The same key with any other
    effect is another tool's, and stays."""
    done: list[str] = []
    path = paths.leases(namespace)
    leases = list_all(kube, path, {"labelSelector": f"{LABEL}={LABEL_VALUE}"})
    recorded: dict[str, set[str]] = {}
    for lease in leases:
        owner = ((lease.get("metadata") or {}).get("annotations") or {}).get(OWNER)
        if owner and lease["metadata"]["name"] == node_record_name(str(owner)):
            recorded[str(owner)] = set(parse_node_state(lease).taint_effects)
    for listed in list_all(kube, paths.NODES):
        name = listed["metadata"]["name"]
        ours = recorded.get(name, set()) | set(taint_effects)
        w = write_taint(kube, name, taint_key, None, ours, listed)
        if w.changed:
            done.append(f"node/{name}: removed taint {taint_key}:{','.join(w.removed)}")
        view = node_view(w.node)
        if view.condition is not None:
            delete_condition(kube, name)
            done.append(f"node/{name}: removed condition {CONDITION_TYPE}")
        if CONTIGUITY_LABEL in view.labels:
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
