"""`memfrag-agent status`: what the agent says about every node (condition, reason, since, taint,
the last remediation). The same read as the kubectl plugin (agent.kube.admin.read_fleet)."""

from __future__ import annotations

import argparse
from typing import Any

from agent.cli.common import (
    DEFAULT_NAMESPACE,
    TAINT_KEY_HELP,
    add_cluster,
    add_command,
    kube_of,
    say_notes,
)
from agent.cli.output import add_output, emit, table
from agent.config.model import ReportingConfig

NAMESPACE_HELP = (
    f"where the agent's node records live (the release namespace, default {DEFAULT_NAMESPACE}): "
    "the last action of every node"
)


def status_text(rows: list[dict[str, Any]], wide: bool) -> str:
    head = ("NODE", "MEMORYFRAGMENTED", "REASON", "SINCE", "TAINT", "LAST REMEDIATION")
    body = [
        (
            r["node"],
            r["condition"],
            r["reason"],
            r["since"],
            "yes" if r["tainted"] else "no",
            r["last_remediation"] if wide else r["last_remediation"][:70],
        )
        + ((r["unremediable"], r["message"]) if wide else ())
        for r in rows
    ]
    return table(head + (("UNREMEDIABLE", "MESSAGE") if wide else ()), body)


def cmd_status(args: argparse.Namespace) -> int:
    from agent.kube.admin import read_fleet, status_rows

    fleet = read_fleet(kube_of(args), args.namespace)
    rows = status_rows(fleet, args.taint_key)
    say_notes(fleet.notes, "memfrag-agent status")
    emit(args.output, {"nodes": rows}, lambda wide: status_text(rows, wide))
    return 0


def add_parser(sub: Any) -> None:
    st = add_command(sub, "status", "the agent's condition and taint on every node")
    add_cluster(st, NAMESPACE_HELP, DEFAULT_NAMESPACE)
    st.add_argument("--taint-key", default=ReportingConfig().taint_key, help=TAINT_KEY_HELP)
    add_output(st, "adds the MemoryFragmentationUnremediable status and the condition's message")
    st.set_defaults(func=cmd_status)
