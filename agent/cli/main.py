"""memfrag-agent: high-order memory fragmentation on a node, assessed, reported and remediated.

The command line's entry point: one module per command (agent/cli/<command>.py, each with its
add_parser and cmd_ function), the exit codes in agent.cli.common (3: could not assess).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from agent import __version__
from agent.base.errors import MemfragError
from agent.cli import check, cleanup, ready, remediate, run, scanlog, status, trace
from agent.cli.common import EXIT_UNKNOWN
from agent.config.model import HIGHEST_ORDER, LOWEST_ORDER

COMMANDS = (check, scanlog, remediate, status, cleanup, ready, run, trace)


class _Parser(argparse.ArgumentParser):
    """argparse exits 2 on bad usage, which would read as 'fragmented': use 3."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(EXIT_UNKNOWN)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="memfrag-agent", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"memfrag-agent {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for command in COMMANDS:
        command.add_parser(sub)
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
