"""agent.kernel.kmsg on real lines quoted in public reports (tests/fixtures/kmsg, sources in the
.tsv).

Every corpus line must give its stated kind, order and process; every look-alike nothing; and
both must hold whatever known prefix stands in front (properties below).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.kernel.kmsg import Finding, Suppressed, match_event, parse_record, scan, scan_events

CORPUS = Path(__file__).resolve().parents[2] / "fixtures" / "kmsg"


@dataclass(frozen=True)
class Expected:
    """One corpus line and what the sidecar says it is."""

    number: int
    line: str
    kind: str
    order: int | None
    count: int | None
    process: str | None
    source: str


def _int(field: str) -> int | None:
    return None if field == "-" else int(field)


def _rows(name: str) -> list[list[str]]:
    text = (CORPUS / name).read_text(encoding="utf-8")
    header, *rows = text.splitlines()
    width = len(header.split("\t"))
    out = [row.split("\t") for row in rows]
    assert all(len(r) == width for r in out), name
    return out


def _findings() -> list[Expected]:
    lines = (CORPUS / "findings.txt").read_text(encoding="utf-8").split("\n")
    out = []
    for number, kind, order, count, process, source in _rows("findings.tsv"):
        n = int(number)
        out.append(
            Expected(n, lines[n - 1], kind, _int(order), _int(count), json.loads(process), source)
        )
    return out


FINDINGS = _findings()
LOOKALIKES = (CORPUS / "lookalikes.txt").read_text(encoding="utf-8").splitlines()


def _wrapped() -> list[tuple[list[str], Expected]]:
    lines = (CORPUS / "wrapped.txt").read_text(encoding="utf-8").split("\n")
    out = []
    for number, length, kind, order, process, source in _rows("wrapped.tsv"):
        n, k = int(number), int(length)
        group = lines[n - 1 : n - 1 + k]
        out.append(
            (
                group,
                Expected(n, "\n".join(group), kind, _int(order), None, json.loads(process), source),
            )
        )
    return out


WRAPPED = _wrapped()


def _event(line: str) -> Finding | Suppressed | None:
    events = list(scan_events([line]))
    assert len(events) <= 1
    return events[0] if events else None


def _same(event: Finding | Suppressed | None, want: Expected) -> bool:
    if want.kind == "suppressed":
        return isinstance(event, Suppressed) and event.count == want.count
    return isinstance(event, Finding) and (event.kind, event.order, event.process) == (
        want.kind,
        want.order,
        want.process,
    )


# --- the corpus ----------------------------------------------------------------------------------


def test_corpus_size_and_sources() -> None:
    real = [f for f in FINDINGS if f.kind != "suppressed"]
    assert len(real) + len(WRAPPED) >= 120
    assert len(LOOKALIKES) >= 60
    assert len(_rows("lookalikes.tsv")) == len(LOOKALIKES)
    sources = [f.source for f in FINDINGS] + [r[1] for r in _rows("lookalikes.tsv")]
    assert all(s.startswith(("https://", "http://")) for s in sources)


@pytest.mark.parametrize("want", FINDINGS, ids=lambda f: f"line{f.number}")
def test_every_corpus_line(want: Expected) -> None:
    event = _event(want.line)
    assert _same(event, want), (want.line, event)


@pytest.mark.parametrize("line", LOOKALIKES)
def test_no_lookalike_is_a_finding(line: str) -> None:
    assert _event(line) is None


@pytest.mark.parametrize(("group", "want"), WRAPPED, ids=lambda x: getattr(x, "number", ""))
def test_wrapped_messages_are_joined(group: list[str], want: Expected) -> None:
    events = list(scan(group))
    assert len(events) == 1
    assert _same(events[0], want)
    assert events[0].mode is not None  # the mode came from a continuation line


def test_corpus_as_one_log_in_order() -> None:
    """The whole corpus read as one file, look-alikes between: the same findings, in order."""
    mixed: list[str] = []
    for i, want in enumerate(FINDINGS):
        mixed.append(want.line)
        mixed.append(LOOKALIKES[i % len(LOOKALIKES)])
    got = list(scan_events(mixed))
    assert len(got) == len(FINDINGS)
    assert all(_same(e, w) for e, w in zip(got, FINDINGS, strict=True))


# --- properties ----------------------------------------------------------------------------------

# Known prefixes, whole (a timestamp alone is no format: syslog always has a tag).
PREFIXES = [
    "4,2048,8642301122,-;",
    "6,99,42,c,caller=T1234;",
    "[ 8642.301122] ",
    "[    0.000001] [  T1234] ",
    "[ 1183.390169][T22234] ",
    "<4>[ 8642.3] ",
    "<3>",
    "[Wed Jan 23 14:15:31 2019] ",
    "[  +0.001839] ",
    "kern  :warn  : [ 8642.301122] ",
    "2019-01-23T14:15:31,288446+08:00 ",
    "Jan 23 14:15:31 dc05 kernel: ",
    "Jan  3 14:15:31 dc05 kernel: [ 8642.301122] ",
    "Aug 27 17:20:03 kernel: ",
    "2019-01-23T14:15:31.288446+08:00 dc05 kernel: ",
    "2019-01-23T14:15:31+0800 dc05.example.com kernel: ",
    "Wed 2019-01-23 14:15:31 CST dc05 kernel: ",
    "Jan 23 14:15:31.288446 dc05 kernel: ",
    "[ 8642.301122] dc05 kernel: ",
    "<4>1 2019-01-23T14:15:31.288446+08:00 dc05 kernel - - - ",
    "Sun Jun  6 16:14:22 2021 kern.warn kernel: [  129.271849] ",
    "Jun  4 09:24:12 alpine kern.warn kernel: [  152.014434] ",
    "Jan 22 20:27:54 [kernel] [48477.515111] ",
    "Jul 10 16:36:36 jetson kernel[851]: ",
    "server1 kernel: [3640039.236414] ",
    "kernel: ",
    "2021-01-22 05:26:05.707446 [  859.563156] ",
    "> ",
    "> > ",
    ">> ",
    "    ",
    "\t",
]


@given(prefix=st.sampled_from(PREFIXES), want=st.sampled_from(FINDINGS))
def test_any_known_prefix_keeps_kind_order_process(prefix: str, want: Expected) -> None:
    assert _same(_event(prefix + want.line), want), prefix + want.line


@given(
    prefix=st.sampled_from(PREFIXES),
    inner=st.sampled_from(PREFIXES),
    want=st.sampled_from(FINDINGS),
)
def test_stacked_known_prefixes_keep_kind_order_process(
    prefix: str, inner: str, want: Expected
) -> None:
    if inner[:1].isdigit() and "," in inner.split(";", maxsplit=1)[0] and ";" in inner:
        return  # a kmsg header is only a header at the start of a line
    assert _same(_event(prefix + inner + want.line), want), prefix + inner + want.line


_TEXT = st.text(st.characters(exclude_characters="\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"))


@given(before=_TEXT, after=_TEXT, line=st.sampled_from(LOOKALIKES))
def test_text_around_a_lookalike_makes_no_finding(before: str, after: str, line: str) -> None:
    assert not any(isinstance(e, Finding) for e in scan_events([before + line + after]))


@given(prefix=st.sampled_from(PREFIXES), line=st.sampled_from(LOOKALIKES))
def test_known_prefix_before_a_lookalike_makes_nothing(prefix: str, line: str) -> None:
    assert _event(prefix + line) is None


def test_parse_then_match_agrees_with_scan_on_the_corpus() -> None:
    for want in FINDINGS:
        record = parse_record(want.line)
        assert record is not None
        assert _same(match_event(record), want)


def test_the_readers_record_prefilter_passes_every_finding_of_the_corpus() -> None:
    """The kmsg reader drops a record `might_match_record` rejects without scanning it: every
    corpus finding (kmsg-framed, as /dev/kmsg hands it out, dictionary lines included) must
    pass, and a rejected look-alike must indeed give nothing."""
    from agent.kernel.kmsg import might_match_record

    for want in FINDINGS:
        raw = f"4,1,2,-;{want.line}\n SUBSYSTEM=mm\n".encode()
        assert might_match_record(raw), want.line
        assert might_match_record(want.line.encode()) or want.line.startswith("{")
    for line in LOOKALIKES + [x.line for x in FINDINGS]:
        raw = line.encode()
        if not might_match_record(raw):
            assert list(scan_events([raw])) == [], line


@given(st.binary(max_size=300))
def test_a_record_the_prefilter_rejects_gives_no_event(raw: bytes) -> None:
    from agent.kernel.kmsg import might_match_record

    if not might_match_record(raw):
        assert list(scan_events([raw])) == []


@given(raw=st.binary(max_size=300), stale=st.binary(max_size=300))
def test_the_prefilter_on_a_reused_buffer_judges_only_the_record(raw: bytes, stale: bytes) -> None:
    """The reader reads every record into one buffer and passes the record's length: bytes
    left past it by a longer earlier record must not change the verdict."""
    from agent.kernel.kmsg import might_match_record

    buf = bytearray(raw + stale)
    assert might_match_record(buf, len(raw)) == might_match_record(raw)


def test_the_prefilter_ignores_a_finding_left_in_the_buffer_past_the_record() -> None:
    from agent.kernel.kmsg import might_match_record

    buf = bytearray(b"6,1,2,-;eth0: renamed from tmp1" + FINDINGS[0].line.encode())
    assert not might_match_record(buf, len(b"6,1,2,-;eth0: renamed from tmp1"))
    assert might_match_record(buf)


@given(st.binary(min_size=1, max_size=200), st.integers(min_value=1, max_value=200))
def test_the_prefilter_is_the_rule_the_reader_applies_inline(raw: bytes, end: int) -> None:
    """agent.kernel.kmsgfollow drops a record read into its buffer (n > 0 bytes), without a
    call, when it starts with no "{" and holds none of RECORD_KEYS: exactly what
    might_match_record rejects."""
    from agent.kernel.kmsg import RECORD_KEYS, might_match_record

    buf = bytearray(raw) + bytearray(b"alloc")  # beyond n: must not count
    n = min(end, len(raw))
    inline_drops = buf[0] != 0x7B and all(buf.find(k, 0, n) < 0 for k in RECORD_KEYS)
    assert might_match_record(buf, n) is not inline_drops
