"""The chart's values schema for `config` and the README's config table, generated from the model.

`python -m agent.config.schema` (`make schema`) rewrites `properties.config` of
charts/memfrag-agent/values.schema.json (the rest of the file as it is, key order kept) and the
README's table of keys; tests compare both with what this module generates. Each key's type,
choices and range come from its dataclass field (agent.config.model): the schema refuses what the
agent refuses, and where a JSON schema cannot say a rule (CROSS_FIELD_RULES, `Allowed.rules`) its
description names it and the agent checks it.
"""

from __future__ import annotations

import argparse
import json
import sys
import typing
from pathlib import Path
from typing import Any, Literal

from agent.config.model import CROSS_FIELD_RULES, Allowed, allowed, keys, sections

CHART_SCHEMA = Path("charts/memfrag-agent/values.schema.json")
README = Path("README.md")
TABLE_HEAD = "| key | default | allowed | meaning |\n|---|---|---|---|\n"
_TYPES = {bool: "boolean", int: "integer", float: "number", str: "string"}


def _json_type(hint: Any) -> str:
    return "string" if typing.get_origin(hint) is Literal else _TYPES[hint]


def _notes(path: str, a: Allowed) -> list[str]:
    """What the schema cannot check, in words: rules between keys, rules on the value."""
    notes = [
        f"At least {r.other}, checked by the agent." for r in CROSS_FIELD_RULES if r.key == path
    ]
    if a.not_pattern is not None:
        notes.append(f"{a.reserved}.")
    notes += [f"The agent also requires {rule.doc}." for rule in a.rules]
    if a.chart_minimum is not None:
        notes.append(f"At least {a.chart_minimum} in the chart: {a.chart_why}.")
    return notes


def key_schema(path: str, hint: Any, doc: str, a: Allowed) -> dict[str, Any]:
    out: dict[str, Any] = {"type": _json_type(hint)}
    if typing.get_origin(hint) is Literal:
        out["enum"] = list(typing.get_args(hint))
    minimum = a.minimum if a.chart_minimum is None else a.chart_minimum
    words = {
        "minimum": minimum,
        "maximum": a.maximum,
        "exclusiveMinimum": a.exclusive_minimum,
        "minLength": a.min_length,
        "maxLength": a.max_length,
        "pattern": a.pattern,
    }
    out.update({k: v for k, v in words.items() if v is not None})
    if a.not_pattern is not None:
        out["not"] = {"pattern": a.not_pattern}
    out["description"] = " ".join([doc, *_notes(path, a)])
    return out


def config_schema() -> dict[str, Any]:
    """`properties.config` of the chart's values.schema.json."""
    props: dict[str, dict[str, Any]] = {
        name: {"type": "object", "properties": {}, "additionalProperties": False}
        for name, _ in sections()
    }
    for path, f, hint in keys():
        section, key = path.split(".")
        props[section]["properties"][key] = key_schema(path, hint, f.metadata["doc"], allowed(f))
    return {
        "type": "object",
        "description": "The agent's config file (ConfigMap key config.yaml); every key is the "
        "agent's own. Generated from agent/config/model.py by `make schema`: do not edit.",
        "properties": props,
        "additionalProperties": False,
    }


def chart_schema_text(current: str) -> str:
    """The chart's values.schema.json with `properties.config` generated; every other key, and
    the position of `config` among them, as in `current`."""
    schema = json.loads(current)
    schema["properties"]["config"] = config_schema()
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def _allowed_words(path: str, hint: Any, a: Allowed) -> str:
    if typing.get_origin(hint) is Literal:
        return ", ".join(f"`{c}`" for c in typing.get_args(hint))
    parts = []
    if a.minimum is not None and a.maximum is not None:
        parts.append(f"{a.minimum} to {a.maximum}")
    elif a.minimum is not None:
        parts.append(f"≥ {a.minimum}")
    elif a.maximum is not None:
        parts.append(f"≤ {a.maximum}")
    if a.exclusive_minimum is not None:
        parts.append(f"> {a.exclusive_minimum}")
    parts += [f"≥ `{r.other}`" for r in CROSS_FIELD_RULES if r.key == path]
    if a.chart_minimum is not None:
        parts.append(f"≥ {a.chart_minimum} in the chart")
    if a.says:
        parts.append(a.says)
    elif a.min_length == 1:
        parts.append("not empty")
    parts += [rule.doc for rule in a.rules if not a.says]
    return "; ".join(parts) or ("true, false" if hint is bool else "any")


def config_table() -> str:
    """The README's table of config keys (header included), one row per key."""
    rows = [
        f"| `{path}` | `{f.default!r}` | {_allowed_words(path, hint, allowed(f))} | "
        f"{f.metadata['doc']} |\n"
        for path, f, hint in keys()
    ]
    return TABLE_HEAD + "".join(rows)


def readme_text(current: str) -> str:
    """The README with its config table (from its header to the first line not a row) made
    from the model."""
    start = current.find(TABLE_HEAD)
    if start < 0:
        raise ValueError(f"no config table: no line {TABLE_HEAD.splitlines()[0]!r}")
    end = start
    while end < len(current) and current.startswith("|", end):
        end = current.index("\n", end) + 1
    return current[:start] + config_table() + current[end:]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m agent.config.schema", description=__doc__)
    p.add_argument("--chart-schema", type=Path, default=CHART_SCHEMA)
    p.add_argument("--readme", type=Path, default=README)
    args = p.parse_args(argv)
    for path, make in ((args.chart_schema, chart_schema_text), (args.readme, readme_text)):
        old = path.read_text()
        new = make(old)
        if new != old:
            path.write_text(new)
        print(f"{path}: {'written' if new != old else 'up to date'}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
