"""memfrag-agent: high-order memory fragmentation on a node, assessed, reported and remediated.

The command line's entry point: one module per command (agent/cli/<command>.py, each with its
add_parser and cmd_ function), the exit codes in agent.cli.common (3: could not assess).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from agent import __version__
from agent.cli import check, cleanup, ready, remediate, run, scanlog, status, trace
from agent.cli.common import Parser, dispatch

COMMANDS = (check, scanlog, remediate, status, cleanup, ready, run, trace)


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="memfrag-agent", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"memfrag-agent {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)
    for command in COMMANDS:
        command.add_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    return dispatch(build_parser(), argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
