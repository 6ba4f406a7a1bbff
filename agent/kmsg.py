"""Kernel-log matcher: turn log lines of any common format into high-order allocation findings.

Pure (no I/O, no clock) and total: every function accepts any input without raising, because the
daemon feeds it whatever /dev/kmsg, journald or a rotated syslog file hands over, and one odd line
must not stop the reader.

What counts as a finding (`KINDS`):

- ``page_allocation_failure``: ``warn_alloc`` / ``warn_alloc_failed``, every kernel generation,
  from ``comm: page allocation failure. order:N, mode:0x..`` to ``...: order:N, mode:0x..(FLAGS)``.
  Every order is reported, order 0 included: ``Finding.order`` lets the caller apply its threshold.
- ``allocation_stall``: ``[comm: ]page allocation stalls for Nms, order:N, mode:...`` (4.9-4.14).
- ``high_order_oom``: ``comm invoked oom-killer: gfp_mask=..., order=N`` with N > 0 only; order 0
  is a plain OOM and order -1 a sysrq/manual one, neither is fragmentation.
- ``slab_failure``: ``Unable to [to ]create nf_conn slab cache`` (the typo is kept by write-ups),
  ``SLUB/SLAB: Unable to allocate memory on node N (gfp=0x..)`` or ``..., gfp=0x..(FLAGS)``, and
  ``nf_conntrack: falling back to vmalloc.``: the conntrack hash table failed its high-order page
  allocation; it is the companion line of the nf_conn failure on the same fragmented nodes.

`LogRecord.facility` is reported as the source carries it and nothing is filtered on it here (root
can write any line into /dev/kmsg; such records carry facility 1, user): kmsg ``prefix >> 3``;
dmesg ``<N> >> 3`` or the ``-x`` name, else None; syslog 0 when the tag is ``kernel``, else None;
journal SYSLOG_FACILITY, else 0 when _TRANSPORT is ``kernel``, else None; plain None. A caller that
must not act on injected lines keeps ``facility == 0`` and decides what ``None`` (unknown) means.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

__all__ = [
    "KINDS",
    "MAX_LINE",
    "MAX_TEXT",
    "Finding",
    "LogRecord",
    "match",
    "might_match",
    "parse_record",
    "scan",
]

KINDS = ("page_allocation_failure", "allocation_stall", "high_order_oom", "slab_failure")

MAX_LINE = 65536
"""Only this many leading characters (bytes, for bytes input) of a line are looked at."""

MAX_TEXT = 8192
"""Record text is cut to this many characters, so a flood of huge lines costs bounded regex work."""


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


@dataclass(frozen=True)
class Finding:
    """A record saying a (high-order) allocation failed, with the fields the kernel printed."""

    kind: str
    order: int | None
    process: str | None
    mode: str | None
    gfp_flags: tuple[str, ...]
    record: LogRecord

    def to_json(self) -> dict[str, object]:
        """Flat, JSON-serialisable form for events, the CLI and structured logs."""
        rec = self.record
        return {
            "kind": self.kind,
            "order": self.order,
            "process": self.process,
            "mode": self.mode,
            "gfp_flags": list(self.gfp_flags),
            "time": rec.time,
            "uptime_s": rec.uptime_s,
            "facility": rec.facility,
            "level": rec.level,
            "seq": rec.seq,
            "source_format": rec.source_format,
            "text": rec.text,
        }


# --- pre-filter --------------------------------------------------------------------------------

# Every regex below needs one of these substrings; "alloc" is shared by the first four so an
# unrelated line costs three `in` checks at most.
_ALLOC_NEEDLES = (
    "allocation failure",
    "allocation stalls",
    "Unable to allocate memory",
    "falling back to vmalloc",
)
_ALLOC_NEEDLES_B = tuple(n.encode() for n in _ALLOC_NEEDLES)


def might_match(text: str) -> bool:
    """Cheap substring test run before any regex: False means `match` cannot find anything."""
    if "alloc" in text and any(n in text for n in _ALLOC_NEEDLES):
        return True
    return "oom-killer" in text or "slab cache" in text


def _might_match_bytes(raw: bytes) -> bool:
    """`might_match` on undecoded bytes: the needles are ASCII, which UTF-8 decoding preserves."""
    if b"alloc" in raw and any(n in raw for n in _ALLOC_NEEDLES_B):
        return True
    return b"oom-killer" in raw or b"slab cache" in raw


# --- format detection --------------------------------------------------------------------------

# /dev/kmsg: "prefix,seq,usec,flags[,more...];text" (Documentation/ABI/testing/dev-kmsg).
_KMSG = re.compile(r"(\d{1,10}),(\d{1,20}),(\d{1,20}),[^,;]*(?:,[^;]*)?;", re.ASCII)
# dmesg timestamps: "[  123.456789]" or, with -T, "[Mon Jan  3 14:15:31 2019]".
_DMESG_TS = re.compile(
    r"\[\s*(?P<up>\d{1,12}\.\d{1,9})\]"
    r"|\[(?P<wall>[A-Z][a-z]{2} [A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \d{4})\]",
    re.ASCII,
)
# CONFIG_PRINTK_CALLER adds "[  T123]" / "[    C1]" after the timestamp; dropped with the space.
_CALLER = re.compile(r"\s?\[\s*[TC]\d{1,10}\]", re.ASCII)
_RAW_PRI = re.compile(r"<(\d{1,10})>", re.ASCII)
# dmesg -x / --decode: "kern  :warn  : [  123.456] text".
_DECODED = re.compile(r"([a-z]{2,8}\d?)\s*:([a-z]{3,6})\s*: ", re.ASCII)
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
    name: i
    for i, name in enumerate(("emerg", "alert", "crit", "err", "warn", "notice", "info", "debug"))
}
# "host tag[pid]: message", after a syslog timestamp.
_HOST_TAG = re.compile(r" +(\S+) ([^\s\[:]+)(?:\[\d{1,10}\])?: ?", re.ASCII)
_BSD_TIME = re.compile(r"[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d(?:\.\d{1,9})?", re.ASCII)
_ISO_TIME = re.compile(
    r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?P<frac>[.,]\d{1,9})?(?:Z|[+-]\d\d:?\d\d)?", re.ASCII
)
_DIGITS = re.compile(r"\d{1,20}", re.ASCII)


def parse_record(line: str | bytes) -> LogRecord | None:
    """Detect the format of one line and strip its prefixes; None for blank and continuation lines.

    kmsg continuation lines (" SUBSYSTEM=...") start with a space and carry no message of their own.
    """
    text = _decode(line)
    if text is None:
        return None
    text = text.rstrip("\r\n")
    if not text or text[0] == " " or text.isspace():
        return None
    first = text[0]
    record: LogRecord | None = None
    if first == "{":
        record = _parse_journal(text)
    elif first.isdigit():
        record = _parse_kmsg(text) or _parse_iso(text)
    elif first in "<[":
        record = _parse_dmesg(text)
    elif "A" <= first <= "Z":
        record = _parse_bsd_syslog(text)
    elif "a" <= first <= "z":
        record = _parse_decoded_dmesg(text)
    return record or _record(text, source_format="plain")


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
) -> LogRecord:
    return LogRecord(
        text=text[:MAX_TEXT],
        facility=facility,
        level=level,
        seq=seq,
        uptime_s=uptime_s,
        time=time,
        source_format=source_format,
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


def _strip_dmesg_ts(text: str) -> tuple[str, float | None, str | None, bool]:
    """Remove a leading dmesg timestamp (and caller id); the flag says whether there was one."""
    m = _DMESG_TS.match(text)
    if m is None:
        return text, None, None, False
    up = m.group("up")
    rest = text[m.end() :]
    c = _CALLER.match(rest)
    if c is not None:
        rest = rest[c.end() :]
    rest = rest.removeprefix(" ")
    return rest, (float(up) if up is not None else None), m.group("wall"), True


def _parse_dmesg(text: str) -> LogRecord | None:
    rest = text
    facility: int | None = None
    level: int | None = None
    had_pri = False
    p = _RAW_PRI.match(rest)
    if p is not None:  # dmesg -r / /proc/kmsg: "<N>" is the full syslog priority.
        pri = int(p.group(1))
        facility, level, had_pri = pri >> 3, pri & 7, True
        rest = rest[p.end() :]
    rest, uptime, wall, had_ts = _strip_dmesg_ts(rest)
    if not (had_pri or had_ts):
        return None
    return _record(
        rest, source_format="dmesg", facility=facility, level=level, uptime_s=uptime, time=wall
    )


def _parse_decoded_dmesg(text: str) -> LogRecord | None:
    m = _DECODED.match(text)
    if m is None:
        return None
    facility = _FACILITY_NAMES.get(m.group(1))
    level = _LEVEL_NAMES.get(m.group(2))
    if facility is None or level is None:
        return None
    rest, uptime, wall, _ = _strip_dmesg_ts(text[m.end() :])
    return _record(
        rest, source_format="dmesg", facility=facility, level=level, uptime_s=uptime, time=wall
    )


def _syslog_body(text: str, time: str) -> LogRecord | None:
    """`text` follows a syslog timestamp: " host tag[pid]: message"."""
    m = _HOST_TAG.match(text)
    if m is None:
        return None
    body = text[m.end() :]
    facility: int | None = None
    uptime: float | None = None
    if m.group(2) == "kernel":  # rsyslog/syslog-ng/journalctl write kern.* as "kernel:"
        facility = 0
        body, uptime, _, _ = _strip_dmesg_ts(body)
    return _record(body, source_format="syslog", facility=facility, uptime_s=uptime, time=time)


def _parse_bsd_syslog(text: str) -> LogRecord | None:
    m = _BSD_TIME.match(text)
    if m is None:
        return None
    return _syslog_body(text[m.end() :], m.group(0))


def _parse_iso(text: str) -> LogRecord | None:
    m = _ISO_TIME.match(text)
    if m is None:
        return None
    time, rest = m.group(0), text[m.end() :]
    frac = m.group("frac")
    if frac is not None and frac.startswith(","):
        # dmesg --time-format=iso writes a comma: "2019-01-23T14:15:31,288446+08:00 text".
        if rest[:1] != " ":
            return None
        rest, uptime, _, _ = _strip_dmesg_ts(rest[1:])
        return _record(rest, source_format="dmesg", uptime_s=uptime, time=time)
    return _syslog_body(rest, time)


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
    return _record(
        _journal_message(obj["MESSAGE"]),
        source_format="journal-json",
        facility=facility,
        level=_int_field(obj.get("PRIORITY")),
        uptime_s=mono / 1e6 if mono is not None else None,
        time=_iso_utc(_int_field(obj.get("__REALTIME_TIMESTAMP"))),
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

# comm is at most 15 characters (TASK_COMM_LEN) and may hold colons, brackets and spaces; 64 leaves
# room while keeping the lazy scan bounded.
_PROC = r"(?P<proc>.{1,64}?)"
_MODE = r"(?P<mode>0x[0-9a-fA-F]{1,16}|0)(?:\((?P<flags>[^()]{0,512})\))?"
_FAILURE = re.compile(
    rf"(?:{_PROC}: )?page allocation failure[.:] order:(?P<order>\d{{1,9}}), mode:{_MODE}"
)
_STALL = re.compile(
    rf"(?:{_PROC}: )?page allocation stalls for \d{{1,12}}ms, order:(?P<order>\d{{1,9}}), "
    rf"mode:{_MODE}"
)
_OOM = re.compile(
    rf"{_PROC} invoked oom-killer: gfp_mask={_MODE}"
    r"(?:,\s*nodemask=\S{0,256}?)?,\s*order=(?P<order>-?\d{1,9})"
)
_SLAB_CACHE = re.compile(r"(?:[\w-]{1,32}: )?Unable to (?:to )?create [\w.:-]{1,64} slab cache")
_SL_B = re.compile(rf"SL[AU]B: Unable to allocate memory on node -?\d{{1,6}}(?: \(|, )gfp={_MODE}")
_VMALLOC = re.compile(r"nf_conntrack: falling back to vmalloc\b")


_RULES: tuple[tuple[str, str, re.Pattern[str]], ...] = (
    ("allocation failure", "page_allocation_failure", _FAILURE),
    ("allocation stalls", "allocation_stall", _STALL),
    ("oom-killer", "high_order_oom", _OOM),
    ("slab cache", "slab_failure", _SLAB_CACHE),
    ("Unable to allocate memory", "slab_failure", _SL_B),
    ("falling back to vmalloc", "slab_failure", _VMALLOC),
)


def match(record: LogRecord) -> Finding | None:
    """The finding in one record, if its text is one of the kernel lines in `KINDS`."""
    text = record.text[:MAX_TEXT]
    if not might_match(text):
        return None
    for needle, kind, pattern in _RULES:
        if needle not in text:
            continue
        m = pattern.match(text)
        if m is None:
            continue
        found = _finding(kind, m, record)
        if kind == "high_order_oom" and (found.order is None or found.order <= 0):
            continue  # order 0: plain OOM; order -1: sysrq/manual OOM
        return found
    return None


def _finding(kind: str, m: re.Match[str], record: LogRecord) -> Finding:
    """Build a Finding from whichever of proc/order/mode/flags the pattern captured."""
    groups = m.groupdict()
    order = groups.get("order")
    flags = groups.get("flags") or ""
    return Finding(
        kind=kind,
        order=int(order) if order is not None else None,
        process=groups.get("proc"),
        mode=groups.get("mode"),
        gfp_flags=tuple(f for f in (s.strip() for s in flags.split("|")) if f),
        record=record,
    )


def scan(lines: Iterable[str | bytes]) -> Iterator[Finding]:
    """`parse_record` + `match` over many lines, in input order.

    Lines without a needle skip parsing entirely (journal JSON is parsed first: its MESSAGE may be
    a byte list), which keeps a log flood cheap.
    """
    for line in lines:
        if isinstance(line, str):
            head = line[:MAX_LINE]
            if not head.startswith("{") and not might_match(head):
                continue
        elif isinstance(line, (bytes, bytearray, memoryview)):
            raw = bytes(line[:MAX_LINE])
            if not raw.startswith(b"{") and not _might_match_bytes(raw):
                continue
        record = parse_record(line)
        if record is None:
            continue
        found = match(record)
        if found is not None:
            yield found
