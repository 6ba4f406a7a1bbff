"""Known signatures: which well-known kernel-log line this is, what it means, and the fix.

Pure. The knowledge is data (signatures.json, package data, each entry citing its sources);
this module only loads and applies it. A signature tied to a kernel range matches only inside
it when the kernel is known; when it is not (a log file from somewhere), it matches with
`kernel_confirmed` None so the reader knows the explanation holds only for that range.

`decode_gfp` names the bits of a `mode:0x...` / `gfp=0x...` mask that the kernel printed as
hex only (every kernel before 4.6 does), from a table for the kernel's version range.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from agent.base.errors import MemfragError

Version = tuple[int, ...]
MAX_TEXT = 8192  # as much of a line as the kmsg matcher reads

_VERSION = re.compile(r"([0-9]{1,3})\.([0-9]{1,3})(?:\.([0-9]{1,4}))?")
# Where a log says its kernel: the boot banner, and the 'CPU: N PID: N Comm: X ... Tainted'
# header of every warning and call trace.
_LOG_VERSION = re.compile(
    r"Linux version ([0-9][\w.+~-]{0,96})"
    r"|Comm: .{1,32}? (?:Not tainted|Tainted: [A-Z ]{0,40}?(?: -+ [A-Z]{0,4})?) "
    r"+([0-9][\w.+~-]{0,96}) #"
)


def parse_version(text: str) -> Version | None:
    """`3.10.0-1062.18.1.el7.x86_64` -> (3, 10, 0); None when there is no version."""
    m = _VERSION.match(text.strip())
    if m is None:
        return None
    return tuple(int(g) for g in m.groups() if g is not None)


def version_in_line(text: str) -> Version | None:
    """The running kernel's version where a log line states it, else None."""
    m = _LOG_VERSION.search(text[:MAX_TEXT])
    if m is None:
        return None
    return parse_version(m.group(1) or m.group(2))


@dataclass(frozen=True)
class KernelRange:
    start: Version
    before: Version

    def holds(self, v: Version) -> bool:
        return self.start <= v < self.before

    def __str__(self) -> str:
        return f"{'.'.join(map(str, self.start))} to before {'.'.join(map(str, self.before))}"


@dataclass(frozen=True)
class Signature:
    id: str
    title: str
    standalone: bool  # a line of its own (runc, CMA), not the explanation of a kmsg finding
    needles: tuple[str, ...]
    patterns: tuple[re.Pattern[str], ...]
    kernels: KernelRange | None
    explanation: str
    fix: str
    sources: tuple[str, ...]
    example: tuple[str, int]  # (fixture file, line number)


@dataclass(frozen=True)
class SignatureMatch:
    signature: Signature
    kernel_confirmed: bool | None  # None: the kernel's version is unknown

    def to_json(self) -> dict[str, object]:
        s = self.signature
        return {
            "id": s.id,
            "title": s.title,
            "kernels": str(s.kernels) if s.kernels else None,
            "kernel_confirmed": self.kernel_confirmed,
            "explanation": s.explanation,
            "fix": s.fix,
            "sources": list(s.sources),
        }


@dataclass(frozen=True)
class GfpTable:
    id: str
    kernels: KernelRange
    composites: tuple[tuple[str, int], ...]
    exact: tuple[tuple[str, int], ...]
    bits: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class GfpDecoding:
    flags: tuple[str, ...]
    table: str
    assumed: bool  # the kernel was unknown: the table was chosen because the line is hex-only


def _range(obj: Any, where: str) -> KernelRange | None:
    if obj is None:
        return None
    start, before = parse_version(str(obj["from"])), parse_version(str(obj["before"]))
    if start is None or before is None or not start < before:
        raise MemfragError(f"signatures.json: {where}: bad kernel range {obj!r}")
    return KernelRange(start, before)


def _pairs(items: Any) -> tuple[tuple[str, int], ...]:
    return tuple((str(name), int(str(value), 16)) for name, value in items)


@cache
def load() -> tuple[tuple[Signature, ...], tuple[GfpTable, ...]]:
    """The package's signatures.json, parsed once; a broken file names the entry."""
    data = json.loads(resources.files("agent.assess").joinpath("signatures.json").read_text())
    sigs: list[Signature] = []
    for i, e in enumerate(data["signatures"]):
        where = f"signatures[{i}] ({e.get('id', '?')})"
        try:
            patterns = tuple(re.compile(p) for p in e["patterns"])
        except re.error as exc:
            raise MemfragError(f"signatures.json: {where}: bad pattern: {exc}") from exc
        sigs.append(
            Signature(
                id=e["id"],
                title=e["title"],
                standalone=bool(e["standalone"]),
                needles=tuple(e["needles"]),
                patterns=patterns,
                kernels=_range(e["kernels"], where),
                explanation=e["explanation"],
                fix=e["fix"],
                sources=tuple(e["sources"]),
                example=(e["example"]["fixture"], int(e["example"]["line"])),
            )
        )
    tables = []
    for t in data["gfp_tables"]:
        kernels = _range(t["kernels"], f"gfp_tables ({t['id']})")
        assert kernels is not None
        tables.append(
            GfpTable(
                t["id"], kernels, _pairs(t["composites"]), _pairs(t["exact"]), _pairs(t["bits"])
            )
        )
    return tuple(sigs), tuple(tables)


def signatures() -> tuple[Signature, ...]:
    return load()[0]


def match_line(text: str, kernel: Version | None = None) -> tuple[SignatureMatch, ...]:
    """Every known signature in one log line's text; with a kernel version, only those whose
    range holds it."""
    text = text[:MAX_TEXT]
    out: list[SignatureMatch] = []
    for s in signatures():
        if not any(n in text for n in s.needles) or not any(p.search(text) for p in s.patterns):
            continue
        if s.kernels is None:
            out.append(SignatureMatch(s, None if kernel is None else True))
        elif kernel is None:
            out.append(SignatureMatch(s, None))
        elif s.kernels.holds(kernel):
            out.append(SignatureMatch(s, True))
    return tuple(out)


def decode_gfp(mode: str, kernel: Version | None = None) -> GfpDecoding | None:
    """Names for a hex GFP mask, from the table of the kernel's range; without a kernel, the
    table for the kernels that print hex only (assumed, and said so). None when no table holds
    the kernel or the mask is not hex."""
    try:
        value = int(mode, 16)
    except ValueError:
        return None
    tables = load()[1]
    if kernel is None:
        table, assumed = (tables[0] if tables else None), True
    else:
        table = next((t for t in tables if t.kernels.holds(kernel)), None)
        assumed = False
    if table is None:
        return None
    for name, exact in table.exact:
        if value == exact:
            return GfpDecoding((name,), table.id, assumed)
    names: list[str] = []
    rest = value
    for name, mask in table.composites:
        if mask and rest & mask == mask:
            names.append(name)
            rest &= ~mask
    for name, bit in table.bits:
        if rest & bit:
            names.append(name)
            rest &= ~bit
    if rest:
        names.append(hex(rest))
    return GfpDecoding(tuple(names), table.id, assumed)
