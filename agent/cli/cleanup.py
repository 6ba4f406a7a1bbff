"""`memfrag-agent cleanup`: remove every trace of the agent (its taints, conditions, summary
annotation and Leases), and only the agent's: the same taint key with another tool's effect
stays."""

from __future__ import annotations

import argparse
from typing import Any

from agent.cli.common import DEFAULT_NAMESPACE, TAINT_KEY_HELP, add_cluster, add_command, kube_of
from agent.cli.output import add_output, emit
from agent.config.model import ReportingConfig


def cmd_cleanup(args: argparse.Namespace) -> int:
    from agent.kube.admin import cleanup

    done = cleanup(kube_of(args), args.namespace, args.taint_key, args.taint_effect)
    emit(
        args.output, {"done": done}, lambda _w: "".join(f"{d}\n" for d in done) + "cleanup: done\n"
    )
    return 0


def add_parser(sub: Any) -> None:
    cl = add_command(sub, "cleanup", "remove the agent's taints, conditions and leases")
    add_cluster(cl, "where the Lease slots live (the release namespace)", DEFAULT_NAMESPACE)
    cl.add_argument("--taint-key", default=ReportingConfig().taint_key, help=TAINT_KEY_HELP)
    cl.add_argument(
        "--taint-effect",
        action="append",
        default=[],
        choices=("NoSchedule", "PreferNoSchedule"),
        help="the configured effect (repeatable); besides those each node's record names, "
        "the same key with another effect is another tool's taint and stays",
    )
    add_output(cl)
    cl.set_defaults(func=cmd_cleanup)
