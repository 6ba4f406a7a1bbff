"""`memfrag-agent run`: the per-node daemon (DaemonSet), or with --standalone the same loop
without an API server (a plain Linux host under systemd): observe, assess, remediate, metrics,
/healthz and structured logs."""

from __future__ import annotations

import argparse
import os
import socket
from collections.abc import Mapping
from typing import Any

from agent.base.errors import MemfragError
from agent.cli.common import (
    DEFAULT_NAMESPACE,
    EXIT_UNKNOWN,
    PROC_ROOT_HELP,
    SYS_ROOT_HELP,
    add_cluster,
    add_command,
)
from agent.kernel.procfs import ProcReader


def run_identity(args: argparse.Namespace, environ: Mapping[str, str]) -> tuple[str, str]:
    """The node the daemon speaks for and the namespace of its Lease slots.

    Each is the flag, else the downward-API variable the chart sets (NODE_NAME, POD_NAMESPACE),
    else (namespace only) the default: an agent installed outside memfrag-system must look for
    its Leases where the chart's Role grants them, in its own namespace.
    """
    node = args.node_name or environ.get("NODE_NAME", "")
    if not node:
        raise MemfragError("no node name: set NODE_NAME (the downward API) or --node-name")
    namespace = args.namespace or environ.get("POD_NAMESPACE", "") or DEFAULT_NAMESPACE
    return node, namespace


def lease_holder(args: argparse.Namespace, environ: Mapping[str, str]) -> str | None:
    """Who holds this agent's Lease slots: the pod (name, and UID where the chart's downward API
    gives it), never the node: during a maxSurge rollout two pods run on one node and must not
    share a slot. None outside a pod: the daemon then uses the node name and its pid."""
    name = args.pod_name or environ.get("POD_NAME", "")
    uid = args.pod_uid or environ.get("POD_UID", "")
    return f"{name}_{uid}" if name and uid else (name or uid or None)


def cmd_run(args: argparse.Namespace) -> int:
    # Imported here: `check` and the other commands never load the daemon or the API client.
    from agent.daemon import logs

    logs.setup(args.log_format, args.log_level)
    agent = None
    try:
        agent = build_agent(args)
        agent.start()  # the metrics port, the watches, the kernel log
    except (MemfragError, OSError) as exc:
        # One line in the log's own format (JSON with --log-format json), on stderr like every
        # log line: a collector parses it as it parses the rest.
        logs.fatal(exc)
        if agent is not None:
            agent.stop()
        return EXIT_UNKNOWN
    return int(agent.run())


def build_agent(args: argparse.Namespace) -> Any:
    """Everything `run` checks before the first tick: the node's name, the config, /proc, the
    credentials. MemfragError (or OSError) says which failed."""
    from agent.config.reload import ConfigFile
    from agent.daemon.loop import Agent

    if args.standalone:
        node = args.node_name or os.environ.get("NODE_NAME", "") or socket.gethostname()
        namespace, holder = "", None
    else:
        node, namespace = run_identity(args, os.environ)
        holder = lease_holder(args, os.environ)
    config = ConfigFile(args.config)
    ProcReader(args.proc_root, args.sys_root).observe(with_pagetypeinfo=False)  # fail fast
    kube = None
    if not args.standalone:
        from agent.kube.client import Kube

        kube = Kube.from_environment(args.kubeconfig, args.context)
    reader = ProcReader(args.proc_root, args.sys_root)
    return Agent(
        node, kube, config, reader, namespace=namespace, holder=holder, cgroup_root=args.cgroup_root
    )


def add_parser(sub: Any) -> None:
    r = add_command(sub, "run", "the per-node daemon (DaemonSet)")
    r.add_argument("--config", help="config file (the mounted ConfigMap); reloaded on change")
    r.add_argument(
        "--standalone",
        action="store_true",
        help="no API server (a plain Linux host): observe, assess, remediate, metrics, logs",
    )
    r.add_argument("--node-name", help="default: $NODE_NAME (standalone: else the hostname)")
    add_cluster(r, f"for Lease slots; default: $POD_NAMESPACE, else {DEFAULT_NAMESPACE}", None)
    r.add_argument("--proc-root", default="/proc", help=PROC_ROOT_HELP)
    r.add_argument("--sys-root", default="/sys", help=SYS_ROOT_HELP)
    r.add_argument(
        "--cgroup-root",
        default="/sys/fs/cgroup",
        help="the host's cgroup hierarchy, for the pods' kernel memory (the chart mounts it)",
    )
    r.add_argument("--pod-name", help="holder of Lease slots; default: $POD_NAME")
    r.add_argument("--pod-uid", help="with --pod-name; default: $POD_UID")
    r.add_argument(
        "--log-format",
        choices=("json", "text"),
        default="json",
        help="json: one object per line (start-up failures too); text: for people (default json)",
    )
    r.add_argument(
        "--log-level",
        default="INFO",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="the least severe level logged (default INFO)",
    )
    r.set_defaults(func=cmd_run)
