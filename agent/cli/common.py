"""What every command shares: the exit codes (and their `--help` epilog), the chart's default
namespace and the cluster options.

Exit codes follow the monitoring-plugin convention so existing monitoring can run `check`:
0 healthy, 1 at-risk, 2 fragmented, 3 could not assess (bad input or usage). Every command's
codes are named here, once; each command's `--help` lists its own from this table.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from agent.assess.verdict import Verdict
from agent.base.errors import MemfragError
from agent.config.model import HIGHEST_ORDER, LOWEST_ORDER

EXIT = {Verdict.HEALTHY: 0, Verdict.AT_RISK: 1, Verdict.FRAGMENTED: 2}
EXIT_OK = 0
EXIT_NOT_READY = 1
EXIT_UNKNOWN = 3
DEFAULT_NAMESPACE = "memfrag-system"  # the chart's release namespace in the README
PROC_ROOT_HELP = "the /proc to read (default /proc; a snapshot laid out like it works too)"
TAINT_KEY_HELP = "the agent's taint key (reporting.taint_key)"
SYS_ROOT_HELP = "the /sys to read: NUMA nodes' compact files, hugepage pools (default /sys)"

# What each code means, per command: (code, meaning). Code 3 closes every list.
_FAILED = (EXIT_UNKNOWN, "could not run: bad usage, bad input, or an API error (on stderr)")
EXIT_CODES: dict[str, tuple[tuple[int, str], ...]] = {
    "check": (
        (EXIT[Verdict.HEALTHY], "healthy"),
        (EXIT[Verdict.AT_RISK], "at-risk (or exhausted: short of memory, not of contiguity)"),
        (EXIT[Verdict.FRAGMENTED], "fragmented"),
        (EXIT_UNKNOWN, "could not assess: bad usage or bad input (on stderr)"),
    ),
    "scan-log": ((EXIT_OK, "scanned, whether or not it found anything"), _FAILED),
    "remediate": ((EXIT_OK, "the action ran (or --dry-run said what it would write)"), _FAILED),
    "status": ((EXIT_OK, "listed"), _FAILED),
    "cleanup": ((EXIT_OK, "every trace of the agent removed"), _FAILED),
    "ready": (
        (EXIT_OK, "ready: the node can serve the blocks now"),
        (EXIT_NOT_READY, "not ready (the reasons on standard output)"),
        (EXIT_UNKNOWN, "could not assess: bad usage or bad input (on stderr)"),
    ),
    "run": (
        (EXIT_OK, "stopped by a signal"),
        (EXIT_UNKNOWN, "could not start: bad usage, config, /proc or credentials (on stderr)"),
    ),
    "trace": ((EXIT_OK, "traced"), _FAILED),
    "nodes": ((EXIT_OK, "listed"), _FAILED),
    "describe": ((EXIT_OK, "described"), _FAILED),
    "events": ((EXIT_OK, "listed"), _FAILED),
}


def epilog(command: str) -> str:
    return "exit codes:\n" + "".join(f"  {c}  {m}\n" for c, m in EXIT_CODES[command])


def add_command(sub: Any, name: str, help: str, description: str | None = None) -> Any:
    """A subcommand whose --help ends with its exit codes (kept as written)."""
    return sub.add_parser(
        name,
        help=help,
        description=description or help,
        epilog=epilog(name),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def add_cluster(parser: Any, namespace_help: str | None, namespace_default: str | None) -> None:
    """--kubeconfig, --context and (where a namespace matters) -n/--namespace, kubectl's way."""
    parser.add_argument(
        "--kubeconfig", help="a kubeconfig file (default: in-cluster, else $KUBECONFIG)"
    )
    parser.add_argument("--context", help="the kubeconfig context to use (default: its current)")
    if namespace_help is not None:
        parser.add_argument("-n", "--namespace", default=namespace_default, help=namespace_help)


def kube_of(args: argparse.Namespace) -> Any:
    """The API client the cluster options name (loaded only by the commands that need one)."""
    from agent.kube.client import Kube

    return Kube.from_environment(args.kubeconfig, args.context)


def say_notes(notes: list[str], command: str) -> None:
    """What could not be read, on stderr: the table stands, the gaps are told."""
    for n in notes:
        print(f"{command}: {n}", file=sys.stderr)


class Parser(argparse.ArgumentParser):
    """argparse exits 2 on bad usage, which would read as 'fragmented': use 3."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(EXIT_UNKNOWN)


def dispatch(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> int:
    """Parse, run the command's function; every error the project raises on purpose is one
    line on stderr and exit 3."""
    args = parser.parse_args(argv)
    order = getattr(args, "order", None)
    if order is not None and not LOWEST_ORDER <= order <= HIGHEST_ORDER:
        print(
            f"{parser.prog}: --order must be between {LOWEST_ORDER} and {HIGHEST_ORDER}",
            file=sys.stderr,
        )
        return EXIT_UNKNOWN
    try:
        return int(args.func(args))
    except MemfragError as exc:
        print(f"{parser.prog} {args.command}: {exc}", file=sys.stderr)
        return EXIT_UNKNOWN
    except BrokenPipeError:
        return EXIT_OK
