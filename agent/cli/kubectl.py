"""kubectl memfrag: what the memfrag agent says about the cluster's nodes, as a kubectl plugin.

Installed as `kubectl-memfrag` (krew's naming: kubectl finds it on PATH and runs it for
`kubectl memfrag ...`). The same read as `memfrag-agent status` (agent.kube.admin.read_fleet):
`nodes` (every node x NUMA node, from the summary annotation the agent writes with its
condition), `describe NODE` (both conditions, the taint, the last actions, recent Events) and
`events` (the agent's Events).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from agent import __version__
from agent.cli.common import (
    DEFAULT_NAMESPACE,
    TAINT_KEY_HELP,
    Parser,
    add_cluster,
    add_command,
    dispatch,
    kube_of,
    say_notes,
)
from agent.cli.output import add_output, emit, table
from agent.config.model import ReportingConfig

PROG = "kubectl memfrag"
NAMESPACE_HELP = (
    f"the agent's release namespace, where its node records live (default {DEFAULT_NAMESPACE})"
)


def _n(value: object) -> str:
    return "-" if value is None else str(value)


def nodes_text(rows: list[dict[str, Any]], wide: bool) -> str:
    head = ("NODE", "NUMA", "VERDICT", "BLOCKS", "ORDER", "CAUSE", "TAINT", "LAST ACTION", "STUCK")
    body = [
        (
            r["node"],
            _n(r["numa_node"]),
            r["verdict"],
            _n(r["blocks"]),
            _n(r["order"]),
            r["cause"],
            "yes" if r["tainted"] else "no",
            r["last_action"] if wide else r["last_action"][:48],
            _n(r["stuck_pods"]),
        )
        + ((r["condition"], r["reason"], r["unremediable"]) if wide else ())
        for r in rows
    ]
    extra = ("MEMORYFRAGMENTED", "REASON", "UNREMEDIABLE") if wide else ()
    return table(head + extra, body)


def describe_text(d: dict[str, Any], _wide: bool) -> str:
    out = [f"Name:  {d['node']}"]
    for title, c in (("Condition", d["condition"]), ("Unremediable", d["unremediable"])):
        if c is None:
            out.append(f"{title}:  none")
            continue
        out += [
            f"{title}:  {c['type']}={c['status']}",
            f"  Reason:   {c['reason']}",
            f"  Since:    {c['lastTransitionTime']}",
            f"  Message:  {c['message']}",
        ]
    taints = ", ".join(
        f"{t.get('key')}={t.get('value', '')}:{t.get('effect')}" for t in d["taints"]
    )
    out.append(f"Taint:  {taints or 'none'}")
    s = d["summary"]
    if s is not None:
        out.append(
            f"NUMA nodes (order {s['order']}, cause {s['cause']}, {s['stuck_pods']} stuck pods):"
        )
        out += [f"  {n['node']}: {n['state']}, {n['blocks']} blocks" for n in s["numa_nodes"]]
    out.append(f"Last remediation:  {d['last_remediation']}")
    out += [f"  {a['at']}  {a['step']} {a['result']} (by {a['by']})" for a in d["actions"]]
    out.append("Events:" if d["events"] else "Events:  none")
    if d["events"]:
        out += ["  " + line for line in events_text(d["events"], False).splitlines()]
    return "\n".join(out) + "\n"


def events_text(rows: list[dict[str, Any]], wide: bool) -> str:
    head = ("LAST SEEN", "TYPE", "REASON", "NODE", "COUNT", "MESSAGE")
    body = [
        (
            r["last_seen"],
            r["type"],
            r["reason"],
            r["node"],
            r["count"],
            r["message"] if wide else r["message"][:80],
        )
        for r in rows
    ]
    return table(head, body)


def cmd_nodes(args: argparse.Namespace) -> int:
    from agent.kube.admin import numa_rows, read_fleet

    fleet = read_fleet(kube_of(args), args.namespace)
    rows = numa_rows(fleet, args.taint_key)
    say_notes(fleet.notes, PROG)
    emit(args.output, {"nodes": rows}, lambda wide: nodes_text(rows, wide))
    return 0


def cmd_describe(args: argparse.Namespace) -> int:
    from agent.kube.admin import describe, read_fleet

    fleet = read_fleet(kube_of(args), args.namespace, node=args.node)
    doc = describe(fleet, args.taint_key)
    say_notes(fleet.notes, PROG)
    emit(args.output, doc, lambda wide: describe_text(doc, wide))
    return 0


def cmd_events(args: argparse.Namespace) -> int:
    from agent.kube.admin import event_rows, read_fleet

    fleet = read_fleet(kube_of(args), args.namespace)
    rows = event_rows(fleet.events)
    say_notes(fleet.notes, PROG)
    emit(args.output, {"events": rows}, lambda wide: events_text(rows, wide))
    return 0


def _common(p: Any, wide: str) -> None:
    add_cluster(p, NAMESPACE_HELP, DEFAULT_NAMESPACE)
    p.add_argument("--taint-key", default=ReportingConfig().taint_key, help=TAINT_KEY_HELP)
    add_output(p, wide)


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog=PROG, description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"kubectl-memfrag {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)
    n = add_command(sub, "nodes", "every node x NUMA node: verdict, blocks, cause, taint, action")
    _common(n, "adds the conditions' status and reason, the whole last action")
    n.set_defaults(func=cmd_nodes)
    d = add_command(sub, "describe", "one node: conditions, taint, NUMA nodes, actions, Events")
    d.add_argument("node", help="the node's name")
    _common(d, "the same as table")
    d.set_defaults(func=cmd_describe)
    e = add_command(sub, "events", "the agent's Events, the latest first")
    _common(e, "the whole message")
    e.set_defaults(func=cmd_events)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    return dispatch(build_parser(), argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
