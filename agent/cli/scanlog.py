"""`memfrag-agent scan-log`: the high-order allocation failures in a kernel log, one JSON object
per finding (with the known signatures it matches); exit 0 whether or not it found any.

Every output streams, one finding at a time, so a log of any size costs bounded memory: json is
one object per line (JSON Lines), yaml one document per finding, table fixed-width columns."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from agent.assess.signatures import parse_version
from agent.base.errors import MemfragError
from agent.cli.common import add_command
from agent.cli.inputs import open_log
from agent.cli.output import add_output, dump
from agent.cli.render import annotate_findings
from agent.kernel.boundedlines import bounded_lines

HEAD = f"{'KIND':<24} {'ORDER':>5}  {'PROCESS':<16}  "


def finding_row(doc: dict[str, Any], wide: bool) -> str:
    """One finding in the table: kind, order, process, then (wide) when, the mode and the
    signatures, and the line's text."""
    order = "-" if doc.get("order") is None else str(doc["order"])
    process = str(doc.get("process") or "-")[:16]
    row = f"{doc.get('kind', '-')!s:<24} {order:>5}  {process:<16}  "
    if wide:
        sigs = ",".join(str(s.get("id")) for s in doc.get("signatures") or []) or "-"
        row += (
            f"{doc.get('time') or doc.get('uptime_s') or '-'}  {doc.get('mode') or '-'}  {sigs}  "
        )
    return row + str(doc.get("text", "")) + "\n"


def cmd_scan_log(args: argparse.Namespace) -> int:
    stream = open_log(args.file)
    source = "<stdin>" if args.file == "-" else args.file

    def skipped(message: str) -> None:
        print(f"memfrag-agent scan-log: {message}", file=sys.stderr)

    kernel = parse_version(args.kernel) if args.kernel else None
    if args.kernel and kernel is None:
        raise MemfragError(f"--kernel {args.kernel!r}: expected a version such as 3.10.0")
    fmt = args.output
    with stream:
        out = sys.stdout
        if fmt in ("table", "wide"):
            out.write(HEAD + ("WHEN  MODE  SIGNATURES  " if fmt == "wide" else "") + "TEXT\n")
        for doc in annotate_findings(bounded_lines(stream, source, skipped), kernel):
            if fmt == "json":
                out.write(json.dumps(doc, ensure_ascii=False) + "\n")
            elif fmt == "yaml":
                out.write("---\n" + dump("yaml", doc))
            else:
                out.write(finding_row(doc, fmt == "wide"))
    return 0


def add_parser(sub: Any) -> None:
    s = add_command(sub, "scan-log", "find high-order allocation failures in a kernel log")
    s.add_argument("file", nargs="?", default="-", help="a log file, or - for standard input")
    s.add_argument("--kernel", help="the log's kernel version (default: where the log states it)")
    add_output(s, "adds when, the GFP mode and the signatures' ids", default="json")
    s.set_defaults(func=cmd_scan_log)
