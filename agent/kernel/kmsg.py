"""Kernel-log matcher: turn log lines of any common format into high-order allocation findings.

Pure (no I/O, no clock) and total: every function accepts any input without raising, because the
daemon feeds it whatever /dev/kmsg, journald or a rotated syslog file hands over, and one odd line
must not stop the reader.

The message is found where it stands in the line, not where the line starts: whatever precedes it
(timestamps of every usual shape, hosts, ``kernel:``, levels, ``[ T2438]`` caller ids, mail quotes,
indentation) is read as a prefix for the fields it gives (time, uptime, level, facility, host), and
the process is the comm just before ``: page allocation`` (at most 15 characters; it may hold
spaces, colons and brackets: ``runc:[1:CHILD]``, ``DOM Worker``, ``WebContainer : ``). A message
that names no process must stand alone after its prefix: prose quoting it is not a finding.

What counts as a finding (`KINDS`):

- ``page_allocation_failure``: ``warn_alloc`` / ``warn_alloc_failed``, every kernel generation,
  from 2.4's ``__alloc_pages: N-order allocation failed (gfp=0x../0)`` and 2.6's
  ``comm: page allocation failure. order:N, mode:0x..`` to ``...: order:N, mode:0x..(FLAGS)``; a
  line that ends right after ``order:N`` (SMP-interleaved output, a mail client's line break) is
  one too, with no mode. Every order is reported, order 0 included: ``Finding.order`` lets the
  caller apply its threshold.
- ``allocation_stall``: ``[comm: ]page allocation stalls for Nms, order:N, mode:...`` (4.9-4.14).
- ``high_order_oom``: ``comm invoked oom-killer: gfp_mask=..., order=N`` with N > 0 only; order 0
  is a plain OOM and order -1 a sysrq/manual one, neither is fragmentation.
- ``slab_failure``: ``Unable to [to ]create nf_conn slab cache`` (the typo is kept by write-ups),
  ``kmem_cache_create(NAME) failed with error -12`` (ENOMEM; the line before it on the same nodes),
  ``SLUB/SLAB: Unable to allocate memory on node N (gfp=0x..)`` or ``..., gfp=0x..(FLAGS)``, and
  ``nf_conntrack: falling back to vmalloc.``: the conntrack hash table failed its high-order page
  allocation; it is the companion line of the nf_conn failure on the same fragmented nodes.

``warn_alloc: N callbacks suppressed`` is not a finding but a `Suppressed` event: the kernel's rate
limit (one report per 5-10 s) dropped N failure reports that the log therefore does not show.
`scan_events` yields both kinds; `scan` only findings.

Records (`parse_record`, `LogRecord`: every format's prefixes, time, level and facility) are
`agent.kernel.kmsgrecord`'s.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from enum import StrEnum

from agent.kernel.kmsgrecord import (
    MAX_LINE,
    MAX_TEXT,
    LogRecord,
    parse_record,
    record_json,
    strip_prefix,
)

__all__ = [
    "COMM_MAX",
    "KINDS",
    "MAX_LINE",
    "MAX_TEXT",
    "RECORD_KEYS",
    "Finding",
    "FindingKind",
    "LogRecord",
    "Suppressed",
    "match",
    "match_event",
    "might_match",
    "might_match_record",
    "parse_record",
    "scan",
    "scan_events",
]


class FindingKind(StrEnum):
    """What a finding is (the metric label and the Event's words come from its value)."""

    PAGE_ALLOCATION_FAILURE = "page_allocation_failure"
    ALLOCATION_STALL = "allocation_stall"
    HIGH_ORDER_OOM = "high_order_oom"
    SLAB_FAILURE = "slab_failure"


KINDS = tuple(FindingKind)

COMM_MAX = 15
"""TASK_COMM_LEN - 1: a longer name before ``: page allocation`` carries something else too."""

MAX_JOINS = 3
"""A message broken over lines (mail clients, wrapped pastes) is joined over at most this many."""


@dataclass(frozen=True)
class Finding:
    """A record saying a (high-order) allocation failed, with the fields the kernel printed."""

    kind: FindingKind
    order: int | None
    process: str | None
    mode: str | None
    gfp_flags: tuple[str, ...]
    record: LogRecord

    def to_json(self) -> dict[str, object]:
        """Flat, JSON-serialisable form for events, the CLI and structured logs."""
        return {
            "kind": self.kind,
            "order": self.order,
            "process": self.process,
            "mode": self.mode,
            "gfp_flags": list(self.gfp_flags),
            **record_json(self.record),
        }


@dataclass(frozen=True)
class Suppressed:
    """``warn_alloc: N callbacks suppressed``: N failure reports the kernel's rate limit dropped."""

    count: int
    record: LogRecord

    def to_json(self) -> dict[str, object]:
        return {"kind": "suppressed", "count": self.count, **record_json(self.record)}


# --- pre-filter --------------------------------------------------------------------------------

# Every pattern below needs one of these substrings; "alloc" is shared by the first six so an
# unrelated line costs three `in` checks at most, as many as before the newer kinds came.
_ALLOC_NEEDLES = (
    "allocation failure",
    "allocation stalls",
    "Unable to allocate memory",
    "falling back to vmalloc",
    "order allocation failed",
    "callbacks suppressed",
)
_ALLOC_NEEDLES_B = tuple(n.encode() for n in _ALLOC_NEEDLES)


def might_match(text: str) -> bool:
    """Cheap substring test run before any regex: False means `match_event` finds nothing."""
    if "alloc" in text and any(n in text for n in _ALLOC_NEEDLES):
        return True
    if "oom-killer" in text:
        return True
    return "cache" in text and ("slab cache" in text or "kmem_cache_create(" in text)


def _might_match_bytes(raw: bytes) -> bool:
    """`might_match` on undecoded bytes: the needles are ASCII, which UTF-8 decoding preserves."""
    if b"alloc" in raw and any(n in raw for n in _ALLOC_NEEDLES_B):
        return True
    if b"oom-killer" in raw:
        return True
    return b"cache" in raw and (b"slab cache" in raw or b"kmem_cache_create(" in raw)


# A whole /dev/kmsg record none of these are in (and not a journal "{" record) cannot match:
# every needle above, "oom-killer" and the slab-cache lines hold one of them.
RECORD_KEYS = (b"alloc", b"cache", b"oom-killer")


def might_match_record(raw: bytes | bytearray, end: int | None = None) -> bool:
    """`scan_events`' pre-filter for one whole /dev/kmsg record as read() returns it (its
    dictionary lines included), `raw[:end]`: False means `scan_events` would yield nothing for
    it. A kmsg record is never joined with another, so the reader may drop it unscanned. Three
    byte searches, no decoding, no copy; the kmsg reader's hot loop applies this same rule
    inline (`agent.kernel.kmsgfollow`: a call per record was a tenth of its CPU in a flood)."""
    n = len(raw) if end is None else end
    find = raw.find
    return (n > 0 and raw[0] == 0x7B) or any(find(k, 0, n) >= 0 for k in RECORD_KEYS)


# --- matching ----------------------------------------------------------------------------------

_MODE = r"(?P<mode>0x[0-9a-fA-F]{1,16}|0)(?:\((?P<flags>[^()]{0,512})(?:\)|$))?"
# What may follow "order:N" when the mode is missing: nothing, or the start of a broken line.
_BARE_TAIL = re.compile(r"[ \t]*(?:,[ \t]*(?:mode:?)?[ \t]*)?$")
_FAILURE = re.compile(
    rf"page allocation failure[.:] order:(?P<order>\d{{1,9}})(?:,\s*mode:{_MODE})?(?!\d)"
)
_STALL = re.compile(
    rf"page allocation stalls for \d{{1,12}}ms, order:(?P<order>\d{{1,9}})(?:,\s*mode:{_MODE})?"
    r"(?!\d)"
)
_OOM = re.compile(
    rf" invoked oom-killer: gfp_mask={_MODE}"
    r"(?:,\s*nodemask=\S{0,256}?)?,\s*order=(?P<order>-?\d{1,9})"
)
_ALLOC_24 = re.compile(
    r"__alloc_pages: (?P<order>\d{1,9})-order allocation failed "
    r"\(gfp=(?P<mode>0x[0-9a-fA-F]{1,16})/"
)
_SLAB_CACHE = re.compile(r"(?:[\w-]{1,32}: )?Unable to (?:to )?create [\w.:-]{1,64} slab cache")
_KMEM_CACHE = re.compile(r"kmem_cache_create\([^()\s]{1,64}\) failed with error -12(?!\d)")
_SL_B = re.compile(rf"SL[AU]B: Unable to allocate memory on node -?\d{{1,6}}(?: \(|, )gfp={_MODE}")
_VMALLOC = re.compile(r"nf_conntrack: falling back to vmalloc\b")
_SUPPRESSED = re.compile(r"warn_alloc(?:_failed)?: (?P<count>\d{1,9}) callbacks suppressed")

# (needle, kind, pattern, how the text before the message is read): "comm" takes the process from
# "<prefix><comm>: " and also accepts a bare prefix; "oom" needs "<prefix><comm>"; "alone" needs
# nothing but a prefix.
# kind None: the rate limit's count (Suppressed), not a finding.
_RULES: tuple[tuple[str, FindingKind | None, re.Pattern[str], str], ...] = (
    ("allocation failure", FindingKind.PAGE_ALLOCATION_FAILURE, _FAILURE, "comm"),
    ("allocation stalls", FindingKind.ALLOCATION_STALL, _STALL, "comm"),
    ("oom-killer", FindingKind.HIGH_ORDER_OOM, _OOM, "oom"),
    ("order allocation failed", FindingKind.PAGE_ALLOCATION_FAILURE, _ALLOC_24, "alone"),
    ("slab cache", FindingKind.SLAB_FAILURE, _SLAB_CACHE, "alone"),
    ("kmem_cache_create(", FindingKind.SLAB_FAILURE, _KMEM_CACHE, "alone"),
    ("Unable to allocate memory", FindingKind.SLAB_FAILURE, _SL_B, "alone"),
    ("falling back to vmalloc", FindingKind.SLAB_FAILURE, _VMALLOC, "alone"),
    ("callbacks suppressed", None, _SUPPRESSED, "alone"),
)


def match(record: LogRecord) -> Finding | None:
    """The finding in one record, if its text is one of the kernel lines in `KINDS`."""
    found = match_event(record)
    return found if isinstance(found, Finding) else None


def match_event(record: LogRecord) -> Finding | Suppressed | None:
    """The finding or the `Suppressed` count in one record; None for anything else."""
    text = record.text[:MAX_TEXT]
    if not might_match(text):
        return None
    for needle, kind, pattern, head_rule in _RULES:
        if needle not in text:
            continue
        m = pattern.search(text)
        if m is None:
            continue
        groups = m.groupdict()
        # no mode: only the kernel's own line, cut right after the order, counts
        bare = head_rule == "comm" and groups.get("mode") is None
        if bare and not _BARE_TAIL.match(text, m.end()):
            continue
        ok, process = _process(text[: m.start()], head_rule, strict=bare)
        if not ok:
            continue
        if kind is None:
            return Suppressed(int(groups["count"] or 0), record)
        found = _finding(kind, groups, process, record)
        if kind == FindingKind.HIGH_ORDER_OOM and (found.order is None or found.order <= 0):
            continue  # order 0: plain OOM; order -1: sysrq/manual OOM
        return found
    return None


def _process(head: str, rule: str, *, strict: bool = False) -> tuple[bool, str | None]:
    """(whether the text before a message is a prefix, or a prefix and a comm, as `rule` wants;
    the comm). Prose, code and other messages before it are neither; `strict` takes no unknown
    text before the comm either."""
    rest = strip_prefix(head)
    if rule == "alone":
        return not rest.strip(), None
    if rule == "comm":
        if not rest:
            return True, None
        if not rest.endswith(": "):
            return False, None
        rest = rest[:-2]
    if not rest or rest.isspace():
        return False, None
    if len(rest) <= COMM_MAX:
        return True, rest
    if strict:
        return False, None
    # something the prefix reader does not know stands before the comm: take the last word
    return True, rest.rsplit(None, 1)[-1]


def _finding(
    kind: FindingKind, groups: dict[str, str | None], process: str | None, record: LogRecord
) -> Finding:
    """Build a Finding from whichever of order/mode/flags the pattern captured."""
    order = groups.get("order")
    flags = groups.get("flags") or ""
    return Finding(
        kind=kind,
        order=int(order) if order is not None else None,
        process=process,
        mode=groups.get("mode"),
        gfp_flags=tuple(f for f in (s.strip() for s in flags.split("|")) if f),
        record=record,
    )


# --- many lines --------------------------------------------------------------------------------

# A message that stops where a line break would cut it, and what a continuation line starts with.
_INCOMPLETE = re.compile(
    r"(?:page allocation (?:failure[.:]|stalls for \d{1,12}ms,) order:\d{1,9},?[ \t]*(?:mode:)?"
    r"|mode:0x[0-9a-fA-F]{1,16}\([^()]{0,512}"
    r"|invoked oom-killer:(?:[ \t]*gfp_mask=[^\s()]{0,32}(?:\([^()]{0,512}\)?)?,?)?)[ \t]*\\?$"
)
_CONTINUES = re.compile(r"(?:mode:|gfp_mask=|order=|nodemask=|cpuset=|mems_allowed=|_{0,3}GFP_|\))")


def scan(lines: Iterable[str | bytes]) -> Iterator[Finding]:
    """The findings of `scan_events`."""
    for event in scan_events(lines):
        if isinstance(event, Finding):
            yield event


def scan_events(lines: Iterable[str | bytes]) -> Iterator[Finding | Suppressed]:
    """`parse_record` + `match_event` over many lines, in input order.

    Lines without a needle skip parsing entirely (journal JSON is parsed first: its MESSAGE may be
    a byte list), which keeps a log flood cheap. A message that ends where a line break would cut
    it is joined with the lines that continue it (at most `MAX_JOINS`), so a pasted mail's wrapped
    report is read whole; the last line of the input is never waited for.
    """
    pending: LogRecord | None = None
    joins = 0
    for line in lines:
        if pending is not None:
            more = _continuation(line)
            if more is not None:
                pending = replace(pending, text=_join(pending.text, more))
                joins += 1
                if joins < MAX_JOINS and _INCOMPLETE.search(pending.text):
                    continue
                line_done = True
            else:
                line_done = False
            event = match_event(pending)
            pending = None
            if event is not None:
                yield event
            if line_done:
                continue
        # the pre-filter's first words inline: most lines of a flood stop here, no call made
        if isinstance(line, str):
            head = line[:MAX_LINE]
            if "alloc" not in head and "oom-killer" not in head and "cache" not in head:
                if not head.startswith("{"):
                    continue
            elif not might_match(head) and not head.startswith("{"):
                continue
        elif isinstance(line, (bytes, bytearray, memoryview)):
            raw = bytes(line[:MAX_LINE])
            if b"alloc" not in raw and b"oom-killer" not in raw and b"cache" not in raw:
                if not raw.startswith(b"{"):
                    continue
            elif not _might_match_bytes(raw) and not raw.startswith(b"{"):
                continue
        record = parse_record(line)
        if record is None:
            continue
        if _INCOMPLETE.search(record.text):
            pending, joins = record, 0
            continue
        event = match_event(record)
        if event is not None:
            yield event
    if pending is not None:
        event = match_event(pending)
        if event is not None:
            yield event


def _continuation(line: str | bytes) -> str | None:
    """The text of `line` if it continues a broken message, else None."""
    record = parse_record(line)
    if record is None or record.source_format in ("kmsg", "journal-json"):
        return None
    text = record.text.strip()
    return text if _CONTINUES.match(text) and not might_match(text) else None


def _join(head: str, more: str) -> str:
    head = head.rstrip()
    if head.endswith("\\"):
        head = head[:-1].rstrip()
    glue = "" if head.endswith(("(", "|")) or more.startswith((")", "|")) else " "
    return (head + glue + more)[:MAX_TEXT]
