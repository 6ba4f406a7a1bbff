"""The command line: `check`, `scan-log` and the daemon's `run`.

Exit codes of `check` follow the monitoring-plugin convention so existing monitoring can run it:
0 healthy, 1 at-risk, 2 fragmented, 3 could not assess (bad input or usage).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from agent import __version__
from agent.assess import assess
from agent.config import Config, parse_config
from agent.errors import MemfragError
from agent.ladder import ladder
from agent.procfs import ProcReader, read_text
from agent.render import assessment_json, assessment_table

EXIT = {"healthy": 0, "at-risk": 1, "fragmented": 2}
EXIT_UNKNOWN = 3


class _Parser(argparse.ArgumentParser):
    """argparse exits 2 on bad usage, which would read as 'fragmented': use 3."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(EXIT_UNKNOWN)


def load_config(path: str | None) -> Config:
    if path is None:
        return Config()
    try:
        text = read_text(Path(path))
    except OSError as exc:
        raise MemfragError(f"{path}: cannot read config: {exc.strerror or exc}") from exc
    return parse_config(text, path)


def cmd_check(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    reader = ProcReader(args.proc_root, args.sys_root)
    obs = reader.observe(with_pagetypeinfo=True)
    a = assess(obs, cfg.assessment, args.order)
    plan = ladder(a, reader.numa_nodes_with_compact(), cfg.remediation.allow_drop_caches)
    if args.output == "json":
        print(json.dumps(assessment_json(a, plan, args.proc_root), indent=2))
    else:
        sys.stdout.write(assessment_table(a, plan, args.proc_root, cfg.remediation.mode))
    return EXIT[a.verdict]


def cmd_scan_log(args: argparse.Namespace) -> int:
    from agent.kmsg import scan

    try:
        stream = sys.stdin.buffer if args.file == "-" else open(args.file, "rb")  # noqa: SIM115
    except OSError as exc:
        raise MemfragError(f"{args.file}: cannot read: {exc.strerror or exc}") from exc
    with stream:
        out = sys.stdout
        for finding in scan(stream):
            out.write(json.dumps(finding.to_json(), ensure_ascii=False) + "\n")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    import os

    from agent import logs
    from agent.configfile import ConfigFile
    from agent.daemon import Agent
    from agent.kube import Kube

    logs.setup(args.log_format, args.log_level)
    node = args.node_name or os.environ.get("NODE_NAME")
    if not node:
        raise MemfragError("no node name: set NODE_NAME (the downward API) or --node-name")
    config = ConfigFile(args.config)
    ProcReader(args.proc_root, args.sys_root).observe(with_pagetypeinfo=False)  # fail fast
    agent = Agent(
        node,
        Kube.from_environment(args.kubeconfig),
        config,
        ProcReader(args.proc_root, args.sys_root),
    )
    return agent.run()


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
    c.set_defaults(func=cmd_check)

    s = sub.add_parser("scan-log", help="find high-order allocation failures in a kernel log")
    s.add_argument("file", nargs="?", default="-", help="a log file, or - for standard input")
    s.set_defaults(func=cmd_scan_log)
    r = sub.add_parser("run", help="the per-node daemon (DaemonSet)")
    r.add_argument("--config", help="config file (the mounted ConfigMap); reloaded on change")
    r.add_argument("--node-name", help="default: $NODE_NAME")
    r.add_argument("--kubeconfig", help="default: in-cluster, else $KUBECONFIG")
    r.add_argument("--proc-root", default="/proc")
    r.add_argument("--sys-root", default="/sys")
    r.add_argument("--log-format", choices=("json", "text"), default="json")
    r.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    r.set_defaults(func=cmd_run)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "order", None) is not None and not 0 <= args.order <= 12:
        print("memfrag-agent: --order must be between 0 and 12", file=sys.stderr)
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
