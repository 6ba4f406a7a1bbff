"""`memfrag-agent cleanup`: remove every trace of the agent (its taints, conditions and Leases),
and only the agent's: the same taint key with another tool's effect stays."""

from __future__ import annotations

import argparse
from typing import Any

from agent.cli.common import DEFAULT_NAMESPACE
from agent.config.model import ReportingConfig


def cmd_cleanup(args: argparse.Namespace) -> int:
    from agent.kube.admin import cleanup
    from agent.kube.client import Kube

    kube = Kube.from_environment(args.kubeconfig)
    for line in cleanup(kube, args.namespace, args.taint_key, args.taint_effect):
        print(line)
    print("cleanup: done")
    return 0


def add_parser(sub: Any) -> None:
    cl = sub.add_parser("cleanup", help="remove the agent's taints, conditions and leases")
    cl.add_argument("--kubeconfig")
    cl.add_argument(
        "--namespace",
        default=DEFAULT_NAMESPACE,
        help="where the Lease slots live (the release namespace)",
    )
    cl.add_argument("--taint-key", default=ReportingConfig().taint_key)
    cl.add_argument(
        "--taint-effect",
        action="append",
        default=[],
        choices=("NoSchedule", "PreferNoSchedule"),
        help="the configured effect (repeatable); besides those each node's record names, "
        "the same key with another effect is another tool's taint and stays",
    )
    cl.set_defaults(func=cmd_cleanup)
