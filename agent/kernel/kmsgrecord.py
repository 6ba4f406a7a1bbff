"""Kernel-log records: one line of any common format (/dev/kmsg, journal JSON, dmesg, syslog,
a pasted mail) into a `LogRecord`, its prefixes stripped and read for what they give (time,
uptime, level, facility, host). Pure and total: any input, no exception (the matcher,
`agent.kernel.kmsg`, feeds it whatever a log source hands over).

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
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

__all__ = ["MAX_LINE", "MAX_TEXT", "LogRecord", "parse_record", "record_json", "strip_prefix"]

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
    host: str | None = None


def record_json(rec: LogRecord) -> dict[str, object]:
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


def strip_prefix(text: str) -> str:
    """`text` without the log prefixes it starts with (times, hosts, tags, levels): what the
    matcher reads as the words before a message."""
    return _strip_prefix(text, _Prefix())


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
