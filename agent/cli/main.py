"""The command line: `check`, `scan-log` and the daemon's `run`.

Exit codes of `check` follow the monitoring-plugin convention so existing monitoring can run it:
0 healthy, 1 at-risk, 2 fragmented, 3 could not assess (bad input or usage).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence

from agent import __version__
from agent.assess.tunables import recommend
from agent.assess.verdict import Verdict, assess
from agent.base.errors import MemfragError
from agent.cli import ready
from agent.cli.render import (
    annotate_findings,
    assessment_json,
    assessment_table,
    hugepages_json,
    hugepages_lines,
    signature_lines,
)
from agent.config.model import HIGHEST_ORDER, LOWEST_ORDER, Config, ReportingConfig
from agent.decide.ladder import Step, ladder
from agent.kernel.actions import parse_action, target
from agent.kernel.procfs import ProcReader
from agent.kernel.writes import run_step

EXIT = {Verdict.HEALTHY: 0, Verdict.AT_RISK: 1, Verdict.FRAGMENTED: 2}
EXIT_UNKNOWN = 3


class _Parser(argparse.ArgumentParser):
    """argparse exits 2 on bad usage, which would read as 'fragmented': use 3."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(EXIT_UNKNOWN)


def cmd_check(args: argparse.Namespace) -> int:
    from agent.config.load import load

    cfg = load(args.config)
    reader = ProcReader(args.proc_root, args.sys_root)
    obs = reader.observe(with_pagetypeinfo=True)
    a = assess(obs, cfg.assessment, args.order)
    plan = ladder(a, reader.numa_nodes_with_compact(), cfg.remediation.allow_drop_caches)
    tunables = recommend(obs.sysctl, (obs.meminfo or {}).get("MemTotal"))
    huge, sigs = ready.check_extras(args, reader, obs)
    if args.output == "json":
        doc = assessment_json(a, plan, args.proc_root, tunables)
        doc["hugepages"] = hugepages_json(huge)
        doc["signatures"] = [m.to_json() for m in sigs]
        print(json.dumps(doc, indent=2))
    else:
        sys.stdout.write(assessment_table(a, plan, args.proc_root, cfg.remediation.mode, tunables))
        more = hugepages_lines(huge) + (signature_lines(sigs) if args.log else [])
        sys.stdout.write("\n".join(more) + "\n")
    return EXIT[a.verdict]


def _parse_action(text: str) -> Step:
    kind, arg = parse_action(text)
    return Step(kind, arg, "requested on the command line")


def _snapshot(reader: ProcReader, order: int) -> dict[str, int]:
    obs = reader.observe(with_pagetypeinfo=False)
    a = assess(obs, Config().assessment, order)
    vm = obs.vmstat or {}
    return {
        "blocks": sum(n.blocks_at_target for n in a.numa),
        "cached_mib": (obs.meminfo or {}).get("Cached", 0) // 1024,
        "free_mib": (obs.meminfo or {}).get("MemFree", 0) // 1024,
        **{k: v for k, v in vm.items() if k.startswith(("compact_", "drop_"))},
    }


def cmd_remediate(args: argparse.Namespace) -> int:
    """One action, measured before and after: what the daemon does, by hand."""
    step = _parse_action(args.action)
    reader = ProcReader(args.proc_root, args.sys_root)
    path, value = target(step, reader.proc, reader.sys)
    before = _snapshot(reader, args.order)
    if args.dry_run:
        print(
            f"dry-run: would write {value!r} to {path}"
            + (" after sync" if step.action == "drop-caches" else "")
        )
        print(
            f"now: {before['blocks']} free blocks of order>={args.order}, "
            f"page cache {before['cached_mib']} MiB"
        )
        return 0
    res = run_step(step, reader.proc, reader.sys, args.timeout)
    after = _snapshot(reader, args.order)
    rows = [(k, before.get(k, 0), after.get(k, 0)) for k in sorted(set(before) | set(after))]
    print(
        f"{step.name}: wrote {value!r} to {path} in {res.seconds:.2f}s"
        + ("" if res.ok else f": {res.error}")
    )
    width = max(len(k) for k, _, _ in rows)
    print(f"{'':{width}}  {'before':>12}  {'after':>12}  {'change':>10}")
    for k, b, a in rows:
        label = f"blocks order>={args.order}" if k == "blocks" else k
        print(f"{label:{width}}  {b:>12}  {a:>12}  {a - b:>+10}")
    return 0 if res.ok else EXIT_UNKNOWN


def cmd_scan_log(args: argparse.Namespace) -> int:
    from agent.assess.signatures import parse_version
    from agent.kernel.boundedlines import bounded_lines

    stream = ready.open_log(args.file)
    source = "<stdin>" if args.file == "-" else args.file

    def skipped(message: str) -> None:
        print(f"memfrag-agent scan-log: {message}", file=sys.stderr)

    kernel = parse_version(args.kernel) if args.kernel else None
    if args.kernel and kernel is None:
        raise MemfragError(f"--kernel {args.kernel!r}: expected a version such as 3.10.0")
    with stream:
        out = sys.stdout
        for doc in annotate_findings(bounded_lines(stream, source, skipped), kernel):
            out.write(json.dumps(doc, ensure_ascii=False) + "\n")
    return 0


DEFAULT_NAMESPACE = "memfrag-system"


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
    """The daemon. --standalone: the same loop without an API server (a plain Linux host under
    systemd): observe, assess, remediate, metrics, /healthz and structured logs."""
    import os
    import socket

    from agent.config.reload import ConfigFile
    from agent.daemon import logs
    from agent.daemon.loop import Agent

    logs.setup(args.log_format, args.log_level)
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

        kube = Kube.from_environment(args.kubeconfig)
    reader = ProcReader(args.proc_root, args.sys_root)
    return Agent(node, kube, config, reader, namespace=namespace, holder=holder).run()


def cmd_status(args: argparse.Namespace) -> int:
    from agent.kube.admin import status_rows, status_table
    from agent.kube.client import Kube

    rows = status_rows(Kube.from_environment(args.kubeconfig), args.taint_key)
    if args.output == "json":
        print(json.dumps({"nodes": rows}, indent=2))
    else:
        sys.stdout.write(status_table(rows))
    return 0


def cmd_cleanup(args: argparse.Namespace) -> int:
    from agent.kube.admin import cleanup
    from agent.kube.client import Kube

    kube = Kube.from_environment(args.kubeconfig)
    for line in cleanup(kube, args.namespace, args.taint_key, args.taint_effect):
        print(line)
    print("cleanup: done")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="memfrag-agent", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"memfrag-agent {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    c = sub.add_parser("check", help="assess this host (or a /proc snapshot) once")
    c.add_argument("--proc-root", default="/proc", help="a /proc or a snapshot laid out like it")
    c.add_argument("--sys-root", default="/sys")
    c.add_argument("--config", help="YAML config file (the daemon's ConfigMap format)")
    c.add_argument("--order", type=int, help="target order (default: from the config, 4)")
    c.add_argument("--output", choices=("table", "json"), default="table")
    c.add_argument(
        "--hugepages",
        action="append",
        default=[],
        metavar="SIZE=COUNT",
        help="a hugepage pool's target, e.g. 2M=1024 or 1G=4 (repeatable)",
    )
    c.add_argument(
        "--thp-interval",
        type=float,
        default=0.0,
        help="seconds between two vmstat looks for the THP fallback rate (0: since boot)",
    )
    c.add_argument("--log", help="a kernel log (or - for stdin) to match known signatures in")
    c.set_defaults(func=cmd_check)

    s = sub.add_parser("scan-log", help="find high-order allocation failures in a kernel log")
    s.add_argument("file", nargs="?", default="-", help="a log file, or - for standard input")
    s.add_argument("--kernel", help="the log's kernel version (default: where the log states it)")
    s.set_defaults(func=cmd_scan_log)
    m = sub.add_parser("remediate", help="run one remediation action, measured before/after")
    m.add_argument("--action", required=True, help="compact | compact-node=N | drop-caches=N")
    m.add_argument(
        "--dry-run", action="store_true", help="say what would be written, write nothing"
    )
    m.add_argument("--order", type=int, default=4, help="order to count free blocks at")
    m.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the kernel")
    m.add_argument("--proc-root", default="/proc")
    m.add_argument("--sys-root", default="/sys")
    m.set_defaults(func=cmd_remediate)

    default_key = ReportingConfig().taint_key
    st = sub.add_parser("status", help="the agent's condition and taint on every node")
    st.add_argument("--kubeconfig")
    st.add_argument("--taint-key", default=default_key)
    st.add_argument("--output", choices=("table", "json"), default="table")
    st.set_defaults(func=cmd_status)

    cl = sub.add_parser("cleanup", help="remove the agent's taints, conditions and leases")
    cl.add_argument("--kubeconfig")
    cl.add_argument(
        "--namespace",
        default=DEFAULT_NAMESPACE,
        help="where the Lease slots live (the release namespace)",
    )
    cl.add_argument("--taint-key", default=default_key)
    cl.add_argument(
        "--taint-effect",
        action="append",
        default=[],
        choices=("NoSchedule", "PreferNoSchedule"),
        help="the configured effect (repeatable); besides those each node's record names, "
        "the same key with another effect is another tool's taint and stays",
    )
    cl.set_defaults(func=cmd_cleanup)

    ready.add_parser(sub)

    r = sub.add_parser("run", help="the per-node daemon (DaemonSet)")
    r.add_argument("--config", help="config file (the mounted ConfigMap); reloaded on change")
    r.add_argument(
        "--standalone",
        action="store_true",
        help="no API server (a plain Linux host): observe, assess, remediate, metrics, logs",
    )
    r.add_argument("--node-name", help="default: $NODE_NAME (standalone: else the hostname)")
    r.add_argument("--kubeconfig", help="default: in-cluster, else $KUBECONFIG")
    r.add_argument("--proc-root", default="/proc")
    r.add_argument("--sys-root", default="/sys")
    r.add_argument(
        "--namespace", help=f"for Lease slots; default: $POD_NAMESPACE, else {DEFAULT_NAMESPACE}"
    )
    r.add_argument("--pod-name", help="holder of Lease slots; default: $POD_NAME")
    r.add_argument("--pod-uid", help="with --pod-name; default: $POD_UID")
    r.add_argument("--log-format", choices=("json", "text"), default="json")
    r.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    r.set_defaults(func=cmd_run)

    from agent.cli.trace import add_parser as add_trace

    add_trace(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    order = getattr(args, "order", None)
    if order is not None and not LOWEST_ORDER <= order <= HIGHEST_ORDER:
        print(
            f"memfrag-agent: --order must be between {LOWEST_ORDER} and {HIGHEST_ORDER}",
            file=sys.stderr,
        )
        return EXIT_UNKNOWN
    try:
        return int(args.func(args))
    except MemfragError as exc:
        print(f"memfrag-agent {args.command}: {exc}", file=sys.stderr)
        return EXIT_UNKNOWN
    except BrokenPipeError:
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
