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

`LogRecord.facility` is reported as the source carries it and nothing is filtered on it here (root
can write any line into /dev/kmsg; such records carry facility 1, user): kmsg ``prefix >> 3``;
``<N>`` priorities ``N >> 3``; ``kern.warn`` / dmesg ``-x`` names; 0 for a ``kernel:`` tag;
journal SYSLOG_FACILITY, else 0 when _TRANSPORT is ``kernel``; None when the line does not say. A
caller that must not act on injected lines keeps ``facility == 0`` and decides what ``None``
(unknown) means.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum

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

MAX_LINE = 65536
"""Only this many leading characters (bytes, for bytes input) of a line are looked at."""

MAX_TEXT = 8192
"""Record text is cut to this many characters, so a flood of huge lines costs bounded regex work."""

COMM_MAX = 15
"""TASK_COMM_LEN - 1: a longer name before ``: page allocation`` carries something else too."""

MAX_JOINS = 3
"""A message broken over lines (mail clients, wrapped pastes) is joined over at most this many."""


@dataclass(frozen=True)
class LogRecord:
    """One kernel log record, its format's prefixes stripped; None where the format is silent."""

    text: str
    facility: int | None
    level: int | None
    seq: int | None
    uptime_s: float | None
    time: str | None
    source_format: str
    host: str | None = None


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
            **_record_json(self.record),
        }


@dataclass(frozen=True)
class Suppressed:
    """``warn_alloc: N callbacks suppressed``: N failure reports the kernel's rate limit dropped."""

    count: int
    record: LogRecord

    def to_json(self) -> dict[str, object]:
        return {"kind": "suppressed", "count": self.count, **_record_json(self.record)}


def _record_json(rec: LogRecord) -> dict[str, object]:
    return {
        "time": rec.time,
        "uptime_s": rec.uptime_s,
        "facility": rec.facility,
        "level": rec.level,
        "seq": rec.seq,
        "host": rec.host,
        "source_format": rec.source_format,
        "text": rec.text,
    }


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


# --- prefixes ----------------------------------------------------------------------------------

# /dev/kmsg: "prefix,seq,usec,flags[,more...];text" (Documentation/ABI/testing/dev-kmsg).
_KMSG = re.compile(r"(\d{1,10}),(\d{1,20}),(\d{1,20}),[^,;]*(?:,[^;]*)?;", re.ASCII)
# kmsg dictionary lines (" SUBSYSTEM=pci") belong to the record before and say nothing themselves.
_KMSG_DICT = re.compile(r" [A-Z][A-Z0-9_]{0,63}=", re.ASCII)

_FACILITY_NAMES = {
    name: i
    for i, name in enumerate(
        (
            *("kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron"),
            *("authpriv", "ftp", "res0", "res1", "res2", "res3"),
            *(f"local{n}" for n in range(8)),
        )
    )
}
_LEVEL_NAMES = {
    **{
        name: i
        for i, name in enumerate(
            ("emerg", "alert", "crit", "err", "warn", "notice", "info", "debug")
        )
    },
    "panic": 0,
    "error": 3,
    "warning": 4,
}
_FAC = "|".join(sorted(_FACILITY_NAMES, key=len, reverse=True))
_LVL = "|".join(sorted(_LEVEL_NAMES, key=len, reverse=True))
_DOW = r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)"
_MON = r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
_ISO = (
    rf"(?:{_DOW} )?\d{{4}}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?P<frac>[.,]\d{{1,9}})?"
    r"(?:Z|[+-]\d\d:?\d\d|(?= )(?: (?:UTC|GMT|CES?T|EES?T|MSK|JST|KST|[A-Z][A-Z]?[SD]T)(?= |$)))?"
)
_ISO_ANON = _ISO.replace("(?P<frac>", "(?:")
_BSD = rf"(?:{_DOW} +)?{_MON} +\d{{1,2}} \d\d:\d\d:\d\d(?:\.\d{{1,9}})?(?: \d{{4}}(?![:\d]))?"
_KTAG = r"kernel(?:\[\d{1,10}\])?:|\[kernel\]"
_FACLVL = rf"(?:{_FAC})\.(?:{_LVL})"
_ULVL = r"(?:EMERG|ALERT|CRIT|ERR|ERROR|WARNING|WARN|NOTICE|INFO|DEBUG)"
# One prefix token at a time; what none of them accepts is where the prefix ends.
_TOKEN = re.compile(
    r"(?P<quote>(?:&gt;|[>|])+|[`\"“”«»]+)"  # mail quotes, markdown, quoted prose
    r"|<(?P<pri>\d{1,3})>(?P<rfc5424>1 )?"  # raw priority (dmesg -r, /proc/kmsg, RFC 5424)
    r"|\[ *(?P<up>\d{1,12}\.\d{1,9})\]"  # dmesg uptime
    r"|(?P<rel>\[ *\+\d{1,12}\.\d{1,9}\])"  # dmesg --reltime / -H delta
    rf"|\[(?P<wall>{_DOW} {_MON} [ \d]\d \d\d:\d\d:\d\d \d{{4}})\]"  # dmesg -T
    rf"|(?P<human>\[{_MON} ?\d{{1,2}} \d\d:\d\d\])"  # dmesg -H
    r"|(?P<caller>\[ *[TC]\d{1,10}\])"  # CONFIG_PRINTK_CALLER
    rf"|(?P<iso>{_ISO})"  # RFC 3339, journalctl -o short-iso/short-full, serial loggers
    rf"|(?P<bsd>{_BSD})"
    rf"|(?P<dfac>[a-z]{{2,8}}\d?) *:(?P<dlvl>[a-z]{{3,7}}) *:(?= )"  # dmesg -x
    rf"|(?P<faclvl>{_FACLVL})(?= )"  # BusyBox/OpenWrt logread, syslog templates
    rf"|(?P<ulvl>{_ULVL})(?= +(?:{_KTAG}))"  # rsyslog templates with the severity in capitals
    rf"|\[(?P<biso>{_ISO_ANON})\]"  # serial-console loggers: "[2025-04-04 08:09:21] [  5.2]"
    rf"|(?P<ktag>{_KTAG})"
    rf"|(?P<host>[\w.-]{{1,255}})(?= +(?:{_KTAG}|{_FACLVL} |{_ULVL} +kernel))"  # host before those
    r"|(?P<mail>(?:Subject|Re|RE|Fwd|FW|AW|Aw):)(?= )",
    re.ASCII,
)
_SPACE = re.compile(r"[ \t]+")
# "host tag[pid]: " after a timestamp, for programs other than the kernel.
_HOST_TAG = re.compile(r"(?P<host>[^\s\[\]:]{1,255}) +(?P<tag>[\w./-]{1,64})(?:\[\d{1,10}\])?: ?")
# RFC 5424 after "<PRI>1 ": TIMESTAMP HOSTNAME APP-NAME PROCID MSGID STRUCTURED-DATA.
_RFC5424 = re.compile(
    r"(?P<time>\S{1,64}) (?P<host>\S{1,255}) (?P<app>\S{1,48}) \S{1,128} \S{1,32} "
    r"(?:-|(?:\[[^\]]{0,1024}\]){1,16}) ?\ufeff?"
)


@dataclass
class _Prefix:
    """What the tokens of a prefix said; the first of each field wins."""

    facility: int | None = None
    level: int | None = None
    uptime_s: float | None = None
    time: str | None = None
    host: str | None = None
    seen: set[str] = field(default_factory=set)

    def source_format(self) -> str:
        if "syslog" in self.seen:
            return "syslog"
        return "dmesg" if "dmesg" in self.seen else "plain"

    def set(self, name: str, value: object) -> None:
        if getattr(self, name) is None:
            setattr(self, name, value)


def _strip_prefix(text: str, into: _Prefix) -> str:
    """Consume the prefix tokens at the start of `text` into `into`; the rest is the message."""
    pos, end, after_time = 0, len(text), False
    while pos < end:
        s = _SPACE.match(text, pos)
        if s is not None:
            pos = s.end()
            continue
        m = _TOKEN.match(text, pos)
        if m is None:
            h = _HOST_TAG.match(text, pos) if after_time else None
            if h is None:
                break
            into.set("host", h.group("host"))
            into.seen.add("syslog")
            if h.group("tag") == "kernel":
                into.set("facility", 0)
            return text[h.end() :]  # another program's message, not a prefix of ours
        pos = m.end()
        g = m.groupdict()
        after_time = g["iso"] is not None or g["bsd"] is not None
        if g["pri"] is not None:
            pri = int(g["pri"])
            into.set("facility", pri >> 3)
            into.set("level", pri & 7)
            r = _RFC5424.match(text, pos) if g["rfc5424"] is not None else None
            if r is None:
                into.seen.add("dmesg")
                continue
            into.seen.add("syslog")
            into.set("time", None if r.group("time") == "-" else r.group("time"))
            into.set("host", None if r.group("host") == "-" else r.group("host"))
            pos = r.end()
        elif g["up"] is not None:
            into.set("uptime_s", float(g["up"]))
            into.seen.add("dmesg")
        elif g["wall"] is not None:
            into.set("time", g["wall"])
            into.seen.add("dmesg")
        elif g["rel"] is not None or g["human"] is not None or g["caller"] is not None:
            into.seen.add("dmesg")
        elif g["biso"] is not None:
            into.set("time", g["biso"])
        elif g["ulvl"] is not None:
            into.set("level", _LEVEL_NAMES[g["ulvl"].lower()])
        elif g["iso"] is not None:
            into.set("time", g["iso"])
            if (g["frac"] or "").startswith(","):  # dmesg --time-format=iso: no host, no tag
                into.seen.add("dmesg")
                after_time = False
        elif g["bsd"] is not None:
            into.set("time", g["bsd"])
        elif g["dfac"] is not None:
            fac, lvl = _FACILITY_NAMES.get(g["dfac"]), _LEVEL_NAMES.get(g["dlvl"] or "")
            if fac is None or lvl is None:
                return text[m.start() :]
            into.set("facility", fac)
            into.set("level", lvl)
            into.seen.add("dmesg")
        elif g["faclvl"] is not None:
            fac_name, _, lvl_name = g["faclvl"].partition(".")
            into.set("facility", _FACILITY_NAMES[fac_name])
            into.set("level", _LEVEL_NAMES[lvl_name])
        elif g["ktag"] is not None:
            into.set("facility", 0)
            into.seen.add("syslog")
        elif g["host"] is not None:
            into.set("host", g["host"])
    return text[pos:]


# --- records -----------------------------------------------------------------------------------

_DIGITS = re.compile(r"\d{1,20}", re.ASCII)


def parse_record(line: str | bytes) -> LogRecord | None:
    """Detect the format of one line and strip its prefixes; None for blank and kmsg dictionary
    lines. /dev/kmsg and journal records keep their text as the source gave it."""
    text = _decode(line)
    if text is None:
        return None
    text = text.rstrip("\r\n")
    if not text or text.isspace() or _KMSG_DICT.match(text):
        return None
    first = text[0]
    if first == "{":
        record = _parse_journal(text)
        if record is not None:
            return record
    elif first.isdigit():
        record = _parse_kmsg(text)
        if record is not None:
            return record
    prefix = _Prefix()
    rest = _strip_prefix(text, prefix)
    return _record(
        rest,
        source_format=prefix.source_format(),
        facility=prefix.facility,
        level=prefix.level,
        uptime_s=prefix.uptime_s,
        time=prefix.time,
        host=prefix.host,
    )


def _decode(line: str | bytes) -> str | None:
    """Bounded, lossless-enough text: invalid UTF-8 becomes U+FFFD instead of an exception."""
    if isinstance(line, str):
        return line[:MAX_LINE]
    if isinstance(line, (bytes, bytearray, memoryview)):
        return bytes(line[:MAX_LINE]).decode("utf-8", errors="replace")
    return None


def _record(
    text: str,
    *,
    source_format: str,
    facility: int | None = None,
    level: int | None = None,
    seq: int | None = None,
    uptime_s: float | None = None,
    time: str | None = None,
    host: str | None = None,
) -> LogRecord:
    return LogRecord(
        text=text[:MAX_TEXT],
        facility=facility,
        level=level,
        seq=seq,
        uptime_s=uptime_s,
        time=time,
        source_format=source_format,
        host=host,
    )


def _parse_kmsg(text: str) -> LogRecord | None:
    m = _KMSG.match(text)
    if m is None:
        return None
    prefix = int(m.group(1))
    return _record(
        text[m.end() :],
        source_format="kmsg",
        facility=prefix >> 3,
        level=prefix & 7,
        seq=int(m.group(2)),
        uptime_s=int(m.group(3)) / 1e6,
    )


def _parse_journal(text: str) -> LogRecord | None:
    """`journalctl -o json` entry; None (so: plain text) unless it is an object with MESSAGE."""
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if not isinstance(obj, dict) or "MESSAGE" not in obj:
        return None
    facility = _int_field(obj.get("SYSLOG_FACILITY"))
    if facility is None and obj.get("_TRANSPORT") == "kernel":
        facility = 0
    mono = _int_field(obj.get("_SOURCE_MONOTONIC_TIMESTAMP"))
    if mono is None:
        mono = _int_field(obj.get("__MONOTONIC_TIMESTAMP"))
    host = obj.get("_HOSTNAME")
    return _record(
        _journal_message(obj["MESSAGE"]),
        source_format="journal-json",
        facility=facility,
        level=_int_field(obj.get("PRIORITY")),
        uptime_s=mono / 1e6 if mono is not None else None,
        time=_iso_utc(_int_field(obj.get("__REALTIME_TIMESTAMP"))),
        host=host[:255] if isinstance(host, str) else None,
    )


def _journal_message(value: object) -> str:
    """MESSAGE is a string, a list of byte values (non-UTF-8 data), or, when the field repeats,
    a list of those; null when journalctl left out a large field."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value:
        if all(isinstance(b, int) and not isinstance(b, bool) and 0 <= b < 256 for b in value):
            return bytes(value).decode("utf-8", errors="replace")
        if isinstance(value[0], str | list):
            return _journal_message(value[0])
    return ""


def _int_field(value: object) -> int | None:
    """Journal numbers are decimal strings; anything else (negative, huge, garbage) is unknown."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 0 <= value < 10**20 else None
    if isinstance(value, str) and _DIGITS.fullmatch(value):
        return int(value)
    return None


def _iso_utc(usec: int | None) -> str | None:
    if usec is None:
        return None
    try:
        dt = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=usec)
    except OverflowError:
        return None
    return dt.isoformat(timespec="microseconds").replace("+00:00", "Z")


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
    rest = _strip_prefix(head, _Prefix())
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
