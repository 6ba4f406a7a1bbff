"""`memfrag-agent status`: what the agent says about every node (condition, reason, since, taint,
the last remediation)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from agent.config.model import ReportingConfig


def cmd_status(args: argparse.Namespace) -> int:
    from agent.kube.admin import status_rows, status_table
    from agent.kube.client import Kube

    rows = status_rows(Kube.from_environment(args.kubeconfig), args.taint_key)
    if args.output == "json":
        print(json.dumps({"nodes": rows}, indent=2))
    else:
        sys.stdout.write(status_table(rows))
    return 0


def add_parser(sub: Any) -> None:
    st = sub.add_parser("status", help="the agent's condition and taint on every node")
    st.add_argument("--kubeconfig")
    st.add_argument("--taint-key", default=ReportingConfig().taint_key)
    st.add_argument("--output", choices=("table", "json"), default="table")
    st.set_defaults(func=cmd_status)
