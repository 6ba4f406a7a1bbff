"""`memfrag-agent scan-log`: the high-order allocation failures in a kernel log, one JSON object
per finding (with the known signatures it matches); exit 0 whether or not it found any."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from agent.assess.signatures import parse_version
from agent.base.errors import MemfragError
from agent.cli.inputs import open_log
from agent.cli.render import annotate_findings
from agent.kernel.boundedlines import bounded_lines


def cmd_scan_log(args: argparse.Namespace) -> int:
    stream = open_log(args.file)
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


def add_parser(sub: Any) -> None:
    s = sub.add_parser("scan-log", help="find high-order allocation failures in a kernel log")
    s.add_argument("file", nargs="?", default="-", help="a log file, or - for standard input")
    s.add_argument("--kernel", help="the log's kernel version (default: where the log states it)")
    s.set_defaults(func=cmd_scan_log)
