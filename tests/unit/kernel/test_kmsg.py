"""Tests for agent.kernel.kmsg: every kind in every log format, look-alikes, hostile input,
properties."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from agent.kernel.kmsg import (
    _INCOMPLETE,
    KINDS,
    MAX_TEXT,
    Finding,
    FindingKind,
    LogRecord,
    Suppressed,
    match,
    might_match,
    parse_record,
    scan,
    scan_events,
)

LOGS = Path(__file__).resolve().parents[2] / "fixtures" / "logs"


# --- the messages ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """A kernel message text and the finding it must give."""

    text: str
    kind: str
    order: int | None
    process: str | None
    mode: str | None
    flags: tuple[str, ...] = ()


CASES = {
    "failure-2.6-full-stop": Case(
        "mysqld: page allocation failure. order:4, mode:0x10c0d0",
        "page_allocation_failure",
        4,
        "mysqld",
        "0x10c0d0",
    ),
    "failure-3.x": Case(
        "docker: page allocation failure: order:4, mode:0x1040d0",
        "page_allocation_failure",
        4,
        "docker",
        "0x1040d0",
    ),
    "failure-4.x-flags": Case(
        "dockerd: page allocation failure: order:5, "
        "mode:0x440dc0(GFP_KERNEL_ACCOUNT|__GFP_COMP|__GFP_ZERO), "
        "nodemask=(null),cpuset=docker.service,mems_allowed=0",
        "page_allocation_failure",
        5,
        "dockerd",
        "0x440dc0",
        ("GFP_KERNEL_ACCOUNT", "__GFP_COMP", "__GFP_ZERO"),
    ),
    "failure-runc-child": Case(
        "runc:[1:CHILD]: page allocation failure: order:6, "
        "mode:0x14040c0(GFP_KERNEL|__GFP_COMP), nodemask=(null)",
        "page_allocation_failure",
        6,
        "runc:[1:CHILD]",
        "0x14040c0",
        ("GFP_KERNEL", "__GFP_COMP"),
    ),
    "failure-kworker": Case(
        "kworker/u8:2: page allocation failure: order:3, mode:0x6080c0(GFP_KERNEL|__GFP_ZERO), "
        "nodemask=(null),cpuset=/,mems_allowed=0",
        "page_allocation_failure",
        3,
        "kworker/u8:2",
        "0x6080c0",
        ("GFP_KERNEL", "__GFP_ZERO"),
    ),
    "failure-order0-atomic": Case(
        "swapper/3: page allocation failure: order:0, "
        "mode:0x2200020(GFP_NOWAIT|__GFP_HIGH|__GFP_NOTRACK)",
        "page_allocation_failure",
        0,
        "swapper/3",
        "0x2200020",
        ("GFP_NOWAIT", "__GFP_HIGH", "__GFP_NOTRACK"),
    ),
    "stall-no-process": Case(
        "page allocation stalls for 10116ms, order:4, mode:0x24200ca(GFP_HIGHUSER_MOVABLE)",
        "allocation_stall",
        4,
        None,
        "0x24200ca",
        ("GFP_HIGHUSER_MOVABLE",),
    ),
    "stall-kswapd": Case(
        "kswapd0: page allocation stalls for 62480ms, order:2, "
        "mode:0x14200ca(GFP_HIGHUSER_MOVABLE), nodemask=(null)",
        "allocation_stall",
        2,
        "kswapd0",
        "0x14200ca",
        ("GFP_HIGHUSER_MOVABLE",),
    ),
    "oom-2.6": Case(
        "cat invoked oom-killer: gfp_mask=0xd4, order=3, oom_adj=0",
        "high_order_oom",
        3,
        "cat",
        "0xd4",
    ),
    "oom-3.x": Case(
        "java invoked oom-killer: gfp_mask=0x201da, order=3, oom_score_adj=0",
        "high_order_oom",
        3,
        "java",
        "0x201da",
    ),
    "oom-4.x-nodemask": Case(
        "kworker/u8:2 invoked oom-killer: gfp_mask=0x15080c0(GFP_KERNEL_ACCOUNT|__GFP_ZERO), "
        "nodemask=(null),  order=1, oom_score_adj=0",
        "high_order_oom",
        1,
        "kworker/u8:2",
        "0x15080c0",
        ("GFP_KERNEL_ACCOUNT", "__GFP_ZERO"),
    ),
    "oom-nodemask-list": Case(
        "runc:[2:INIT] invoked oom-killer: gfp_mask=0x24201ca(GFP_HIGHUSER_MOVABLE|__GFP_COLD), "
        "nodemask=0,2-3, order=2, oom_score_adj=-999",
        "high_order_oom",
        2,
        "runc:[2:INIT]",
        "0x24201ca",
        ("GFP_HIGHUSER_MOVABLE", "__GFP_COLD"),
    ),
    "oom-5.x": Case(
        "ip invoked oom-killer: "
        "gfp_mask=0xc2cc0(GFP_KERNEL|__GFP_NOWARN|__GFP_COMP|__GFP_NOMEMALLOC), order=3, "
        "oom_score_adj=0",
        "high_order_oom",
        3,
        "ip",
        "0xc2cc0",
        ("GFP_KERNEL", "__GFP_NOWARN", "__GFP_COMP", "__GFP_NOMEMALLOC"),
    ),
    "failure-no-mode-interleaved": Case(
        "dockerd: page allocation failure: order:4", "page_allocation_failure", 4, "dockerd", None
    ),
    "failure-no-comm-no-mode": Case(
        "page allocation failure: order:7", "page_allocation_failure", 7, None, None
    ),
    "failure-2.4": Case(
        "__alloc_pages: 0-order allocation failed (gfp=0x1d2/0)",
        "page_allocation_failure",
        0,
        None,
        "0x1d2",
    ),
    "slab-kmem_cache_create": Case(
        "kmem_cache_create(nf_conntrack_ffff8803eef66180) failed with error -12",
        "slab_failure",
        None,
        None,
        None,
    ),
    "slab-nf_conn": Case("Unable to create nf_conn slab cache", "slab_failure", None, None, None),
    "slab-nf_conn-typo": Case(
        "Unable to to create nf_conn slab cache", "slab_failure", None, None, None
    ),
    "slub-old": Case(
        "SLUB: Unable to allocate memory on node -1 (gfp=0x2000000)",
        "slab_failure",
        None,
        None,
        "0x2000000",
    ),
    "slub-new": Case(
        "SLUB: Unable to allocate memory on node -1, gfp=0xa20(GFP_ATOMIC)",
        "slab_failure",
        None,
        None,
        "0xa20",
        ("GFP_ATOMIC",),
    ),
    "nf_conntrack-vmalloc": Case(
        "nf_conntrack: falling back to vmalloc.", "slab_failure", None, None, None
    ),
}

LOOKALIKES = {
    "oom-kill-plain": "Out of memory: Killed process 4321 (java) total-vm:8123456kB, "
    "anon-rss:4123456kB, file-rss:0kB, shmem-rss:0kB",
    "oom-kill-old": "Out of memory: Kill process 9682 (mysqld) score 9 or sacrifice child",
    "memcg-oom": "Memory cgroup out of memory: Killed process 2712 (stress) total-vm:1MB",
    "oom-order-0": "java invoked oom-killer: "
    "gfp_mask=0x14200ca(GFP_HIGHUSER_MOVABLE), nodemask=(null), order=0, oom_score_adj=0",
    "oom-order-0-old": "httpd invoked oom-killer: gfp_mask=0x201da, order=0, oom_adj=0, "
    "oom_score_adj=0",
    "oom-sysrq": "kworker/0:1 invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=-1, "
    "oom_score_adj=0",
    "oom-kill-summary": "oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),cpuset=/,"
    "mems_allowed=0,global_oom,task_memcg=/,task=java,pid=4321,uid=0",
    "oom-reaper": "oom_reaper: reaped process 4321 (java), now anon-rss:0kB, file-rss:0kB",
    "drop-caches": "bash (123): drop_caches: 3",
    "prose": "we saw page allocation failure messages yesterday",
    "prose-oom-killer": "the oom-killer ran twice yesterday",
    "prose-slab-cache": "kmem_cache_create: duplicate slab cache nf_conntrack",
    "call-trace": " [<ffffffff8118e9f5>] warn_alloc_failed+0xf5/0x150",
    "warn-alloc-frame": "warn_alloc+0xee/0x180",
    "slub-cache-detail": "cache: kmalloc-2048, object size: 2048, buffer size: 2048, "
    "default order: 3, min order: 0",
    "order-not-a-number": "dockerd: page allocation failure: order:x, mode:0x10",
    "unable-other": "Unable to allocate memory for the ring buffer",
    "vmalloc-other": "isr_dma: dma_alloc_coherent failed, falling back to vmalloc",
    "link-up": "e1000e: eth0 NIC Link is Up 1000 Mbps Full Duplex, Flow Control: None",
}


# --- the formats -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fmt:
    """How one log format wraps a message, and the record fields it must give back."""

    wrap: Callable[[str], str | bytes]
    source_format: str
    facility: int | None = None
    level: int | None = None
    seq: int | None = None
    uptime_s: float | None = None
    time: str | None = None
    host: str | None = None

    def record(self, text: str) -> LogRecord:
        return LogRecord(
            text=text,
            facility=self.facility,
            level=self.level,
            seq=self.seq,
            uptime_s=self.uptime_s,
            time=self.time,
            source_format=self.source_format,
            host=self.host,
        )


def _journal(text: str) -> str:
    return json.dumps(
        {
            "__CURSOR": "s=6c1f0b;i=2a1;b=7d3a;m=206b8e740;t=57a0ed3bd6a3e;x=9c1",
            "__REALTIME_TIMESTAMP": "1548224131288446",
            "__MONOTONIC_TIMESTAMP": "8642301999",
            "_SOURCE_MONOTONIC_TIMESTAMP": "8642301122",
            "_TRANSPORT": "kernel",
            "PRIORITY": "4",
            "SYSLOG_FACILITY": "0",
            "SYSLOG_IDENTIFIER": "kernel",
            "MESSAGE": text,
        }
    )


def _journal_bytes(text: str) -> bytes:
    line = {"_TRANSPORT": "kernel", "PRIORITY": "3", "MESSAGE": list(text.encode())}
    return json.dumps(line).encode() + b"\n"


FORMATS = {
    "kmsg": Fmt(lambda t: f"4,2048,8642301122,-;{t}", "kmsg", 0, 4, 2048, 8642.301122),
    "kmsg-bytes-newline": Fmt(lambda t: f"3,7,1500000,-;{t}\n".encode(), "kmsg", 0, 3, 7, 1.5),
    "kmsg-caller": Fmt(lambda t: f"6,99,42,c,caller=T1234;{t}", "kmsg", 0, 6, 99, 0.000042),
    "kmsg-user-facility": Fmt(lambda t: f"12,5,1000000,-;{t}", "kmsg", 1, 4, 5, 1.0),
    "dmesg": Fmt(lambda t: f"[ 8642.301122] {t}", "dmesg", uptime_s=8642.301122),
    "dmesg-padded": Fmt(lambda t: f"[    0.000001] {t}", "dmesg", uptime_s=0.000001),
    "dmesg-raw-level": Fmt(lambda t: f"<4>[ 8642.3] {t}", "dmesg", 0, 4, uptime_s=8642.3),
    "dmesg-caller": Fmt(lambda t: f"[ 8642.301122] [  T1234] {t}", "dmesg", uptime_s=8642.301122),
    "proc-kmsg-no-time": Fmt(lambda t: f"<3>{t}", "dmesg", 0, 3),
    "dmesg-T": Fmt(
        lambda t: f"[Wed Jan 23 14:15:31 2019] {t}", "dmesg", time="Wed Jan 23 14:15:31 2019"
    ),
    "dmesg-T-space-day": Fmt(
        lambda t: f"[Thu Jan  3 04:05:06 2019] {t}", "dmesg", time="Thu Jan  3 04:05:06 2019"
    ),
    "dmesg-x": Fmt(
        lambda t: f"kern  :warn  : [ 8642.301122] {t}", "dmesg", 0, 4, uptime_s=8642.301122
    ),
    "dmesg-iso": Fmt(
        lambda t: f"2019-01-23T14:15:31,288446+08:00 {t}",
        "dmesg",
        time="2019-01-23T14:15:31,288446+08:00",
    ),
    "syslog": Fmt(
        lambda t: f"Jan 23 14:15:31 dc05 kernel: {t}",
        "syslog",
        0,
        time="Jan 23 14:15:31",
        host="dc05",
    ),
    "syslog-uptime": Fmt(
        lambda t: f"Jan  3 14:15:31 dc05 kernel: [ 8642.301122] {t}",
        "syslog",
        0,
        uptime_s=8642.301122,
        time="Jan  3 14:15:31",
        host="dc05",
    ),
    "syslog-rfc3339": Fmt(
        lambda t: f"2019-01-23T14:15:31.288446+08:00 dc05 kernel: {t}",
        "syslog",
        0,
        time="2019-01-23T14:15:31.288446+08:00",
        host="dc05",
    ),
    "journalctl-short-iso": Fmt(
        lambda t: f"2019-01-23T14:15:31+0800 dc05.example.com kernel: {t}",
        "syslog",
        0,
        time="2019-01-23T14:15:31+0800",
        host="dc05.example.com",
    ),
    # --- issue 14: what operators paste ---
    "indented": Fmt(lambda t: f"    {t}", "plain"),
    "tab-indented": Fmt(lambda t: f"\t{t}", "plain"),
    "mail-quote": Fmt(lambda t: f"> > {t}", "plain"),
    "mail-quote-dmesg": Fmt(lambda t: f"> >>>   [    0.247713] {t}", "dmesg", uptime_s=0.247713),
    "kernel-tag-only": Fmt(lambda t: f"kernel: {t}", "syslog", 0),
    "syslog-no-host": Fmt(
        lambda t: f"Aug 27 17:20:03 kernel: {t}", "syslog", 0, time="Aug 27 17:20:03"
    ),
    "host-kernel-uptime": Fmt(
        lambda t: f"server1 kernel: [3640039.236414] {t}",
        "syslog",
        0,
        uptime_s=3640039.236414,
        host="server1",
    ),
    "kernel-tag-uptime": Fmt(
        lambda t: f"kernel: [85531.010995] {t}", "syslog", 0, uptime_s=85531.010995
    ),
    "serial-date-uptime": Fmt(
        lambda t: f"2021-01-22 05:26:05.707446 [  859.563156] {t}",
        "dmesg",
        uptime_s=859.563156,
        time="2021-01-22 05:26:05.707446",
    ),
    "openwrt-logread": Fmt(
        lambda t: f"Sun Jun  6 16:14:22 2021 kern.warn kernel: [  129.271849] {t}",
        "syslog",
        0,
        4,
        uptime_s=129.271849,
        time="Sun Jun  6 16:14:22 2021",
    ),
    "busybox-syslogd": Fmt(
        lambda t: f"Jun  4 09:24:12 alpine kern.warn kernel: [  152.014434] {t}",
        "syslog",
        0,
        4,
        uptime_s=152.014434,
        time="Jun  4 09:24:12",
        host="alpine",
    ),
    "rfc5424": Fmt(
        lambda t: f"<4>1 2019-01-23T14:15:31.288446+08:00 dc05 kernel - - - {t}",
        "syslog",
        0,
        4,
        time="2019-01-23T14:15:31.288446+08:00",
        host="dc05",
    ),
    "journalctl-short-monotonic": Fmt(
        lambda t: f"[ 8642.301122] dc05 kernel: {t}",
        "syslog",
        0,
        uptime_s=8642.301122,
        host="dc05",
    ),
    "journalctl-short-precise": Fmt(
        lambda t: f"Jan 23 14:15:31.288446 dc05 kernel: {t}",
        "syslog",
        0,
        time="Jan 23 14:15:31.288446",
        host="dc05",
    ),
    "journalctl-short-full": Fmt(
        lambda t: f"Wed 2019-01-23 14:15:31 CST dc05 kernel: {t}",
        "syslog",
        0,
        time="Wed 2019-01-23 14:15:31 CST",
        host="dc05",
    ),
    "gentoo-metalog": Fmt(
        lambda t: f"Jan 22 20:27:54 [kernel] [48477.515111] {t}",
        "syslog",
        0,
        uptime_s=48477.515111,
        time="Jan 22 20:27:54",
    ),
    "dmesg-caller-no-space": Fmt(
        lambda t: f"[ 1183.390169][T22234] {t}", "dmesg", uptime_s=1183.390169
    ),
    "dmesg-reltime": Fmt(lambda t: f"[  +0.001839] {t}", "dmesg"),
    "serial-bracket-date": Fmt(
        lambda t: f"[2025-04-04 08:09:21] [    5.280264] {t}",
        "dmesg",
        uptime_s=5.280264,
        time="2025-04-04 08:09:21",
    ),
    "rsyslog-upper-level": Fmt(
        lambda t: f"Apr 30 07:12:11.435319 mtbc-sonic-01-2410 WARNING kernel: [  429.852782] {t}",
        "syslog",
        0,
        4,
        uptime_s=429.852782,
        time="Apr 30 07:12:11.435319",
        host="mtbc-sonic-01-2410",
    ),
    "kernel-pid-tag": Fmt(
        lambda t: f"Jul 10 16:36:36 jetson kernel[851]: [   13.879784] {t}",
        "syslog",
        0,
        uptime_s=13.879784,
        time="Jul 10 16:36:36",
        host="jetson",
    ),
    "journal-json": Fmt(
        _journal, "journal-json", 0, 4, None, 8642.301122, "2019-01-23T06:15:31.288446Z"
    ),
    "journal-json-byte-list": Fmt(_journal_bytes, "journal-json", 0, 3),
    "plain": Fmt(lambda t: t, "plain"),
    "plain-bytes-crlf": Fmt(lambda t: t.encode() + b"\r\n", "plain"),
}


@pytest.mark.parametrize("fmt_id", FORMATS)
@pytest.mark.parametrize("case_id", CASES)
def test_every_kind_in_every_format(case_id: str, fmt_id: str) -> None:
    case, fmt = CASES[case_id], FORMATS[fmt_id]
    line = fmt.wrap(case.text)
    record = parse_record(line)
    assert record == fmt.record(case.text)
    expected = Finding(
        FindingKind(case.kind), case.order, case.process, case.mode, case.flags, record
    )
    assert match(record) == expected
    assert list(scan([line])) == [expected]


@pytest.mark.parametrize("fmt_id", FORMATS)
@pytest.mark.parametrize("lookalike_id", LOOKALIKES)
def test_lookalikes_yield_nothing(lookalike_id: str, fmt_id: str) -> None:
    text, fmt = LOOKALIKES[lookalike_id], FORMATS[fmt_id]
    line = fmt.wrap(text)
    record = parse_record(line)
    # indentation is a prefix too; kmsg and journal records keep their text as given
    container = fmt.source_format in ("kmsg", "journal-json")
    assert record == fmt.record(text if container else text.lstrip())
    assert match(record) is None
    assert list(scan([line])) == []


# --- details of the formats ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "line", ["", "\n", "\r\n", "   ", b"", b"\n", " SUBSYSTEM=pci", " DEVICE=+pci:0000:00:1f.2"]
)
def test_blank_and_continuation_lines_give_no_record(line: str | bytes) -> None:
    assert parse_record(line) is None


def test_process_name_with_spaces() -> None:
    found = match(
        parse_record("Web Content: page allocation failure: order:3, mode:0x10c0d0")
        or pytest.fail("no record")
    )
    assert found is not None
    assert found.process == "Web Content"


def test_syslog_line_of_another_program_has_unknown_facility() -> None:
    line = (
        "Jan 23 14:15:31 dc05 memfrag-agent[812]: finding: "
        "dockerd: page allocation failure: order:5, mode:0x440dc0"
    )
    assert parse_record(line) == LogRecord(
        text="finding: dockerd: page allocation failure: order:5, mode:0x440dc0",
        facility=None,
        level=None,
        seq=None,
        uptime_s=None,
        time="Jan 23 14:15:31",
        source_format="syslog",
        host="dc05",
    )


def test_kmsg_text_keeps_semicolons_and_commas() -> None:
    record = parse_record("6,1,2,-;a;b,c")
    assert record is not None
    assert (record.text, record.facility, record.level, record.seq) == ("a;b,c", 0, 6, 1)


@pytest.mark.parametrize(
    ("fields", "facility", "level", "uptime_s", "time"),
    [
        ({"_TRANSPORT": "kernel"}, 0, None, None, None),
        ({"_TRANSPORT": "stdout", "PRIORITY": "6"}, None, 6, None, None),
        ({"_TRANSPORT": "syslog", "SYSLOG_FACILITY": "3"}, 3, None, None, None),
        ({"SYSLOG_FACILITY": "-1", "PRIORITY": "warn"}, None, None, None, None),
        ({"SYSLOG_FACILITY": 0, "PRIORITY": True}, 0, None, None, None),
        ({"__MONOTONIC_TIMESTAMP": "2500000"}, None, None, 2.5, None),
        ({"__REALTIME_TIMESTAMP": "0"}, None, None, None, "1970-01-01T00:00:00.000000Z"),
        ({"__REALTIME_TIMESTAMP": "9" * 20}, None, None, None, None),
        ({"__REALTIME_TIMESTAMP": "1" * 5000}, None, None, None, None),
    ],
)
def test_journal_fields(
    fields: dict[str, object],
    facility: int | None,
    level: int | None,
    uptime_s: float | None,
    time: str | None,
) -> None:
    line = json.dumps({**fields, "MESSAGE": "x"})
    assert parse_record(line) == LogRecord(
        "x", facility, level, None, uptime_s, time, "journal-json"
    )


@pytest.mark.parametrize(
    ("message", "text"),
    [
        (None, ""),
        (17, ""),
        ({"a": 1}, ""),
        ([], ""),
        ([104, 105], "hi"),
        ([104, 256], ""),
        ([True, 105], ""),
        (["first", "second"], "first"),
        ([[104, 105], [106]], "hi"),
        ([0xE8, 0xBF], "\ufffd"),
    ],
)
def test_journal_message_shapes(message: object, text: str) -> None:
    record = parse_record(json.dumps({"MESSAGE": message}))
    assert record is not None
    assert (record.text, record.source_format) == (text, "journal-json")


@pytest.mark.parametrize(
    "line",
    [
        '{"MESSAGE": "mysqld: page allocation failure. order:4',
        '{"PRIORITY": "4"}',
        "{",
        "{}",
        "{" * 100_000,
        '{"MESSAGE": NaN',
        "[" * 100_000,
    ],
)
def test_garbage_json_is_plain_text(line: str) -> None:
    assert parse_record(line) == LogRecord(line[:MAX_TEXT], None, None, None, None, None, "plain")
    assert list(scan([line])) == []


def test_garbage_json_still_matches_when_its_text_does() -> None:
    line = "{not json} mysqld: page allocation failure. order:4, mode:0x10c0d0"
    [found] = scan([line])
    assert (found.kind, found.order, found.process, found.record.source_format) == (
        "page_allocation_failure",
        4,
        "mysqld",
        "plain",
    )


def test_non_utf8_bytes_are_replaced() -> None:
    line = b"4,9,10,-;\xff\xfenginx: page allocation failure: order:3, mode:0x10c0d0\n"
    [found] = scan([line])
    assert found.process == "\ufffd\ufffdnginx"
    assert found.record.seq == 9
    assert parse_record(b"\x80\x81\x82") == LogRecord(
        "\ufffd\ufffd\ufffd", None, None, None, None, None, "plain"
    )
    assert parse_record(b"6,1,2,-;x\xc3") == LogRecord("x\ufffd", 0, 6, 1, 2e-6, None, "kmsg")


def test_overlong_lines_are_truncated() -> None:
    head = "mysqld: page allocation failure. order:4, mode:0x10c0d0"
    [found] = scan([head + "x" * 100_000])
    assert found.record.text == (head + "x" * MAX_TEXT)[:MAX_TEXT]
    assert found.order == 4
    # a needle past the matched window does not count
    assert list(scan(["x" * MAX_TEXT + head])) == []
    assert list(scan([("x" * MAX_TEXT + head).encode()])) == []


def test_to_json() -> None:
    line = FORMATS["journal-json"].wrap(CASES["failure-4.x-flags"].text)
    [found] = scan([line])
    assert found.to_json() == {
        "kind": "page_allocation_failure",
        "order": 5,
        "process": "dockerd",
        "mode": "0x440dc0",
        "gfp_flags": ["GFP_KERNEL_ACCOUNT", "__GFP_COMP", "__GFP_ZERO"],
        "time": "2019-01-23T06:15:31.288446Z",
        "uptime_s": 8642.301122,
        "facility": 0,
        "level": 4,
        "seq": None,
        "host": None,
        "source_format": "journal-json",
        "text": CASES["failure-4.x-flags"].text,
    }
    assert json.loads(json.dumps(found.to_json())) == found.to_json()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("page allocation failure", True),
        ("page allocation stalls", True),
        ("x invoked oom-killer: y", True),
        ("Unable to create nf_conn slab cache", True),
        ("SLUB: Unable to allocate memory on node -1", True),
        ("nf_conntrack: falling back to vmalloc.", True),
        ("e1000e: eth0 NIC Link is Up", False),
        ("warn_alloc+0xee/0x180", False),
        ("Out of memory: Killed process 1 (x)", False),
        ("", False),
    ],
)
def test_might_match(text: str, expected: bool) -> None:
    assert might_match(text) is expected


def test_every_case_passes_the_prefilter() -> None:
    assert all(might_match(case.text) for case in CASES.values())
    assert {case.kind for case in CASES.values()} == set(KINDS)


# --- the mixed fixture ---------------------------------------------------------------------------


def test_mixed_log_findings_in_input_order() -> None:
    with (LOGS / "mixed.log").open("rb") as f:
        found = [
            (x.kind, x.order, x.process, x.mode, x.record.source_format, x.record.facility)
            for x in scan(f)
        ]
    assert found == [
        ("page_allocation_failure", 5, "dockerd", "0x440dc0", "syslog", 0),
        ("slab_failure", None, None, None, "kmsg", 0),
        ("slab_failure", None, None, None, "kmsg", 0),
        ("page_allocation_failure", 6, "runc:[1:CHILD]", "0x14040c0", "dmesg", 0),
        ("allocation_stall", 4, "kswapd0", "0x24200ca", "dmesg", None),
        ("high_order_oom", 3, "java", "0x24201ca", "journal-json", 0),
        ("page_allocation_failure", 9, "fake", "0x0", "kmsg", 1),
        ("page_allocation_failure", 3, "nginx\ufffd", "0x10c0d0", "journal-json", 0),
        ("slab_failure", None, None, "0x2000000", "plain", None),
        ("page_allocation_failure", 4, "mysqld", "0x10c0d0", "plain", None),
        ("page_allocation_failure", 4, "docker", "0x1040d0", "dmesg", 0),
        ("slab_failure", None, None, "0x14000c0", "dmesg", None),
    ]


def test_mixed_log_same_as_text() -> None:
    data = (LOGS / "mixed.log").read_bytes()
    from_bytes = list(scan(data.splitlines()))
    from_text = list(scan(data.decode().splitlines()))
    assert from_bytes == from_text
    assert len(from_bytes) == 12


# --- properties ----------------------------------------------------------------------------------

_FRAGMENTS = st.sampled_from(
    [
        "6,1,2,-;",
        "12,",
        "<4>",
        "[ 1.5] ",
        "[Mon Jan  3 14:15:31 2019] ",
        "Jan 23 14:15:31 h kernel: ",
        "2019-01-23T14:15:31,1+08:00 ",
        "kern  :warn  : ",
        '{"MESSAGE": ',
        "page allocation failure: order:",
        "page allocation stalls for 1ms, order:",
        " invoked oom-killer: gfp_mask=0x",
        ", mode:0x",
        "(GFP_KERNEL|",
        ")",
        ", order=",
        "SLUB: Unable to allocate memory on node -1 (gfp=",
        "Unable to to create nf_conn slab cache",
        "falling back to vmalloc",
        "9" * 30,
        "\ufffd",
        ":",
        " ",
        "\n",
    ]
)
_NEAR_MISS = st.lists(_FRAGMENTS | st.text(max_size=8), max_size=12).map("".join)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
_JOURNAL = st.fixed_dictionaries(
    {"MESSAGE": _JSON | _NEAR_MISS},
    optional={
        "SYSLOG_FACILITY": _JSON,
        "PRIORITY": _JSON,
        "__REALTIME_TIMESTAMP": _JSON | st.integers().map(str),
        "_SOURCE_MONOTONIC_TIMESTAMP": _JSON | st.integers().map(str),
        "_TRANSPORT": _JSON,
    },
).map(json.dumps)
_ANY_LINE = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=200),
    _NEAR_MISS,
    _NEAR_MISS.map(lambda s: s.encode("utf-8", errors="surrogatepass")),
    _JOURNAL,
)


@given(st.lists(_ANY_LINE, max_size=20))
def test_scan_never_raises(lines: list[str | bytes]) -> None:
    for found in scan(lines):
        assert found.kind in KINDS
        assert len(found.record.text) <= MAX_TEXT
        json.dumps(found.to_json())


@given(st.lists(_ANY_LINE, max_size=20))
def test_scan_is_parse_then_match(lines: list[str | bytes]) -> None:
    records = [r for r in map(parse_record, lines) if r is not None]
    assume(not any(_INCOMPLETE.search(r.text) for r in records))  # those may join the next line
    assert list(scan(lines)) == [f for f in map(match, records) if f is not None]


_KMSG_TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\r\n"), max_size=300)


@given(
    facility=st.integers(0, 255),
    level=st.integers(0, 7),
    seq=st.integers(0, 2**64 - 1),
    usec=st.integers(0, 2**63 - 1),
    flag=st.sampled_from(["-", "c", "+"]),
    caller=st.sampled_from(["", ",caller=T1", ",caller=C3"]),
    text=_KMSG_TEXT,
    as_bytes=st.booleans(),
)
def test_kmsg_round_trip(
    facility: int,
    level: int,
    seq: int,
    usec: int,
    flag: str,
    caller: str,
    text: str,
    as_bytes: bool,
) -> None:
    line = f"{facility * 8 + level},{seq},{usec},{flag}{caller};{text}\n"
    record = parse_record(line.encode() if as_bytes else line)
    assert record == LogRecord(text, facility, level, seq, usec / 1e6, None, "kmsg")


# --- lines broken by a mail client ---------------------------------------------------------------


def test_broken_report_without_its_continuation_is_still_a_finding() -> None:
    head = "kworker/u8:7: page allocation failure: order:3,"
    other = "mysqld: page allocation failure. order:4, mode:0x10c0d0"
    found = list(scan([head, other]))
    assert [(f.order, f.process, f.mode) for f in found] == [
        (3, "kworker/u8:7", None),
        (4, "mysqld", "0x10c0d0"),
    ]


def test_continuation_is_joined_at_most_max_joins_times() -> None:
    lines = ["dd invoked oom-killer:", "gfp_mask=0x101c4a(GFP_NOFS|", "__GFP_HIGHMEM|", "order=3"]
    # the third join lands inside the unclosed flags: no finding, and no fourth join is tried
    assert list(scan(lines)) == []
    [found] = scan([*lines[:2], "__GFP_HIGHMEM), order=3, oom_score_adj=0"])
    assert (found.kind, found.order, found.process, found.gfp_flags) == (
        "high_order_oom",
        3,
        "dd",
        ("GFP_NOFS", "__GFP_HIGHMEM"),
    )


def test_kmsg_records_are_never_joined() -> None:
    lines = [
        "4,1,2,-;kworker/u8:7: page allocation failure: order:3,",
        "4,2,3,-;mode:0x60820(GFP_ATOMIC|__GFP_COMP|__GFP_MEMALLOC)",
    ]
    [found] = scan(lines)
    assert (found.order, found.mode, found.record.seq) == (3, None, 1)


def test_suppressed_is_an_event_not_a_finding() -> None:
    line = "[  859.563153] warn_alloc: 1 callbacks suppressed"
    [event] = scan_events([line])
    assert isinstance(event, Suppressed) and event.count == 1
    assert event.to_json()["kind"] == "suppressed"
    assert list(scan([line])) == []
    assert list(scan_events(["[  970.66] net_ratelimit: 650 callbacks suppressed"])) == []
