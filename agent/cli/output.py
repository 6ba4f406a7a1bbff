"""`-o/--output` for every command that prints, one copy of the mechanism: json and yaml are
the same document (yaml through pyyaml's safe_dump), table and wide a command's own text (wide
adds the columns a command has beyond its table, else is the table)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

import yaml

FORMATS = ("table", "wide", "json", "yaml")


def add_output(parser: Any, wide: str = "the same as table", default: str = "table") -> None:
    """`wide`: what the wide table adds, said in the help."""
    parser.add_argument(
        "-o",
        "--output",
        choices=FORMATS,
        default=default,
        help=f"output format (default {default}); wide: {wide}",
    )


def plain(doc: Any) -> Any:
    """Only JSON's types (enums become their values): what yaml's safe_dump accepts."""
    return json.loads(json.dumps(doc, default=str))


def dump(fmt: str, doc: Any) -> str:
    """The document as json (indented) or yaml."""
    if fmt == "yaml":
        return str(yaml.safe_dump(plain(doc), sort_keys=False, allow_unicode=True))
    return json.dumps(doc, indent=2, default=str) + "\n"


def emit(fmt: str, doc: Any, text: Callable[[bool], str]) -> None:
    """Write `doc` for json/yaml, else `text(wide)`, to standard output."""
    sys.stdout.write(dump(fmt, doc) if fmt in ("json", "yaml") else text(fmt == "wide"))


def table(head: tuple[str, ...], rows: Sequence[tuple[object, ...]]) -> str:
    """Columns padded to their widest cell, kubectl's way."""
    cells = [head, *[tuple(str(c) for c in r) for r in rows]]
    widths = [max(len(str(row[i])) for row in cells) for i in range(len(head))]
    return "".join(
        "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() + "\n"
        for row in cells
    )
