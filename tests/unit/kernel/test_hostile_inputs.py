"""Hostile snapshots and logs (issue 13, item 11): `check --proc-root` and `scan-log` run on files
from other machines. Each case ends in a clear error naming the file (and line), and returns:
no hang, no unbounded read, no other file's text in the message. Time and memory figures for
these cases are measured by `python -m bench.hostile`, never asserted here."""

from __future__ import annotations

import io
import json
import os
import shutil
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.assess.verdict import assess
from agent.base.errors import ParseError
from agent.base.files import MAX_FILE_BYTES, read_text
from agent.cli.main import main
from agent.cli.render import assessment_json, assessment_table
from agent.config.model import AssessmentConfig
from agent.kernel.boundedlines import MAX_LINE_BYTES
from agent.kernel.buddyinfo import parse_buddyinfo
from agent.kernel.limits import MAX_NUMA_NODES, MAX_ORDERS, MAX_ZONE_ROWS, lines
from agent.kernel.observation import Observation
from agent.kernel.pagetypeinfo import parse_pagetypeinfo
from agent.kernel.procfs import ProcReader
from agent.kernel.psi import parse_pressure
from agent.kernel.vmstat import parse_vmstat
from agent.kernel.zoneinfo import parse_zoneinfo

PROC = Path(__file__).resolve().parents[2] / "fixtures" / "proc"
TREE = PROC / "vm-6.18-x86_64"
SECRET = "SECRET-first-line-of-another-file"
MYSQLD = "mysqld: page allocation failure. order:4, mode:0x10c0d0"


def snapshot(tmp_path: Path) -> Path:
    proc = tmp_path / "proc"
    shutil.copytree(TREE, proc)
    return proc


def check(capsys: pytest.CaptureFixture[str], proc: Path) -> tuple[int, str, str]:
    code = main(["check", "--proc-root", str(proc), "--sys-root", str(proc / "nosys")])
    out, err = capsys.readouterr()
    return code, out, err


# --- file types ---------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_a_fifo_buddyinfo_is_refused_not_waited_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Opening a FIFO for reading blocks until a writer comes: nobody ever does."""
    proc = snapshot(tmp_path)
    (proc / "buddyinfo").unlink()
    os.mkfifo(proc / "buddyinfo")
    code, out, err = check(capsys, proc)
    assert (code, out) == (3, "")
    assert err == (
        f"memfrag-agent check: {proc}/buddyinfo: cannot read: a FIFO, not a regular file\n"
    )


@pytest.mark.timeout(60)
def test_a_fifo_as_an_optional_file_is_a_gap(tmp_path: Path) -> None:
    proc = snapshot(tmp_path)
    (proc / "zoneinfo").unlink()
    os.mkfifo(proc / "zoneinfo")
    obs = ProcReader(proc, proc / "nosys").observe()
    assert obs.zoneinfo is None
    assert f"{proc}/zoneinfo: unreadable (a FIFO, not a regular file)" in obs.gaps


@pytest.mark.timeout(60)
def test_dev_zero_is_refused_before_any_read() -> None:
    """/dev/zero never ends: a character device is not a /proc file."""
    with pytest.raises(OSError) as info:
        read_text(Path("/dev/zero"))
    assert info.value.strerror == "a character device, not a regular file"


@pytest.mark.timeout(60)
def test_a_device_node_in_a_snapshot_is_a_gap(tmp_path: Path) -> None:
    proc = snapshot(tmp_path)
    (proc / "pagetypeinfo").unlink()
    if os.geteuid() == 0:
        os.mknod(proc / "pagetypeinfo", stat.S_IFCHR | 0o600, os.makedev(1, 5))  # /dev/zero
        expected = "a character device, not a regular file"
    else:
        os.mkfifo(proc / "pagetypeinfo")
        expected = "a FIFO, not a regular file"
    obs = ProcReader(proc, proc / "nosys").observe()
    assert obs.pagetype is None
    assert f"{proc}/pagetypeinfo: unreadable ({expected})" in obs.gaps


def test_a_symlink_is_not_followed_and_the_other_file_never_shown(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    proc = snapshot(tmp_path)
    other = tmp_path / "private.txt"
    other.write_text(f"{SECRET}\nsecond line\n")
    (proc / "buddyinfo").unlink()
    (proc / "buddyinfo").symlink_to(other)
    code, out, err = check(capsys, proc)
    assert code == 3
    assert SECRET not in out + err
    assert err == (
        f"memfrag-agent check: {proc}/buddyinfo: cannot read: a symbolic link, not followed\n"
    )


def test_a_file_larger_than_the_bound_is_refused(tmp_path: Path) -> None:
    proc = snapshot(tmp_path)
    with open(proc / "vmstat", "wb") as fh:
        fh.truncate(MAX_FILE_BYTES + 1)  # sparse: no disk, no time
    with pytest.raises(ParseError) as info:
        ProcReader(proc, proc / "nosys").observe()
    assert str(info.value) == f"{proc}/vmstat: larger than {MAX_FILE_BYTES} bytes: refused"


def test_a_file_at_the_bound_is_read(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * 100)
    assert read_text(path, limit=100) == "x" * 100
    with pytest.raises(ParseError):
        read_text(path, limit=99)


def test_real_proc_files_report_size_0_and_are_read_whole() -> None:
    text = read_text(Path("/proc/self/status"))
    assert os.stat("/proc/self/status").st_size == 0
    assert text.startswith("Name:") and "VmRSS" in text


# --- rows, orders, NUMA nodes -------------------------------------------------------------------


def test_1040_orders_are_refused_naming_the_line(capsys: pytest.CaptureFixture[str]) -> None:
    text = "Node 0, zone DMA 1 1\nNode 0, zone Normal " + " ".join(["1"] * 1040) + "\n"
    with pytest.raises(ParseError) as info:
        parse_buddyinfo(text, "buddyinfo")
    assert str(info.value) == f"buddyinfo:2: 1040 orders: more than {MAX_ORDERS}"


def test_the_largest_allowed_orders_render(tmp_path: Path) -> None:
    """MAX_ORDERS orders of 20-digit counts: the table's MiB and the JSON stay finite numbers."""
    big = str(2**64 - 1)
    zones = parse_buddyinfo(f"Node 0, zone Normal {' '.join([big] * MAX_ORDERS)}\n")
    a = assess(Observation(buddy=zones), AssessmentConfig())
    table = assessment_table(a, (), "snapshot", "dry-run")
    assert "Verdict: HEALTHY" in table
    json.dumps(assessment_json(a, (), "snapshot"))


def test_47000_numa_nodes_are_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    proc = snapshot(tmp_path)
    rows = "".join(f"Node {n}, zone Normal 1 2 3 4 5 6 7 8 9 10 11\n" for n in range(47000))
    (proc / "buddyinfo").write_text(rows)
    code, _, err = check(capsys, proc)
    assert code == 3
    assert err == (
        f"memfrag-agent check: {proc}/buddyinfo:{MAX_NUMA_NODES + 1}: NUMA node "
        f"{MAX_NUMA_NODES}: the kernel numbers them below {MAX_NUMA_NODES}\n"
    )


def test_zone_rows_are_bounded() -> None:
    rows = "".join(f"Node {n}, zone Z{z} 1 2 3\n" for n in range(MAX_NUMA_NODES) for z in range(9))
    with pytest.raises(ParseError) as info:
        parse_buddyinfo(rows, "buddyinfo")
    assert str(info.value) == f"buddyinfo:{MAX_ZONE_ROWS + 1}: more than {MAX_ZONE_ROWS} rows"


def test_the_most_numa_rows_allowed_are_assessed() -> None:
    """1,024 NUMA nodes x 8 zones: assessed (in linear time since the per-node grouping; `make
    bench`-style figures in bench/hostile.py), every node reported."""
    rows = "".join(
        f"Node {n}, zone Z{z} 1 2 3 4 5 6 7 8 9 10 11\n"
        for n in range(MAX_NUMA_NODES)
        for z in range(8)
    )
    a = assess(Observation(buddy=parse_buddyinfo(rows)), AssessmentConfig())
    assert len(a.numa) == MAX_NUMA_NODES and len(a.zones) == MAX_ZONE_ROWS
    assert all(len(n.zones) == 8 for n in a.numa)


@pytest.mark.parametrize(
    ("parse", "text", "message"),
    [
        (
            parse_zoneinfo,
            "Node 4096, zone Normal\n  pages free 1\n",
            f"zoneinfo:1: NUMA node 4096: the kernel numbers them below {MAX_NUMA_NODES}",
        ),
        (
            parse_zoneinfo,
            f"Node 0, zone {'N' * 40}\n",
            "zoneinfo:1: zone name longer than 32 characters",
        ),
        (
            parse_pagetypeinfo,
            "Page block order: 9\nPages per block: 512\n\nFree pages count per migrate type at "
            "order 0 1\nNode 0, zone Normal, type Movable " + " ".join(["1"] * 40) + "\n",
            f"pagetypeinfo:5: 40 orders: more than {MAX_ORDERS}",
        ),
        (
            parse_pagetypeinfo,
            "Page block order: 9\nPages per block: 512\n\nNumber of blocks type "
            + " ".join(f"T{i}" for i in range(20))
            + "\n",
            "pagetypeinfo:4: more than 16 migrate types",
        ),
        (
            parse_vmstat,
            "".join(f"c{i} 1\n" for i in range(10001)),
            "vmstat:10001: more than 10000 lines",
        ),
        (
            parse_pressure,
            "some avg10=nan avg60=0.00 avg300=0.00 total=1\n",
            "pressure:1: pressure out of range: 'some avg10=nan avg60=0.00 avg300=0.00 total=1'",
        ),
    ],
)
def test_other_files_are_bounded(parse: object, text: str, message: str) -> None:
    with pytest.raises(ParseError) as info:
        parse(text, message.split(":", maxsplit=1)[0])  # type: ignore[operator]
    assert str(info.value) == message


@settings(max_examples=400, deadline=None, database=None, derandomize=True)
@given(st.text(alphabet="ab \n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029", max_size=40))
def test_lazy_lines_split_like_splitlines(text: str) -> None:
    from agent.kernel.limits import _lazy_lines

    assert list(lines(text)) == list(_lazy_lines(text)) == text.splitlines()


def test_a_long_text_is_split_lazily() -> None:
    """Past SPLIT_AT_ONCE_CHARS no list of every line is built: the first line comes before
    the rest are split."""
    from agent.kernel.limits import SPLIT_AT_ONCE_CHARS

    it = lines("a\n" * SPLIT_AT_ONCE_CHARS)
    assert not isinstance(it, list) and next(it) == "a"
    assert type(it).__name__ == "generator"


# --- scan-log: line length ----------------------------------------------------------------------


class _NoWholeLines(io.BytesIO):
    """A stream that fails any unbounded line read: what `for line in stream` does."""

    def readline(self, size: int | None = -1) -> bytes:
        assert size is not None and 0 < size <= MAX_LINE_BYTES + 1, f"unbounded readline({size})"
        return super().readline(size)

    def __iter__(self) -> _NoWholeLines:
        raise AssertionError("iterated whole lines")


def test_scan_log_skips_an_overlong_line_and_says_where(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "kern.log"
    log.write_bytes(b"x" * (3 * MAX_LINE_BYTES) + b"\n" + MYSQLD.encode() + b"\n")
    code = main(["scan-log", str(log)])
    out, err = capsys.readouterr()
    assert code == 0
    assert [json.loads(line)["order"] for line in out.splitlines()] == [4]
    assert err == (
        f"memfrag-agent scan-log: {log}:1: line longer than {MAX_LINE_BYTES} bytes: skipped\n"
    )


def test_scan_log_reads_lines_in_bounded_pieces(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data = b"y" * (MAX_LINE_BYTES + 5) + b"\nok\n" + MYSQLD.encode() + b"\n" + b"z" * 70000
    stdin = io.TextIOWrapper(_NoWholeLines(data), encoding="utf-8")
    monkeypatch.setattr("sys.stdin", stdin)
    code = main(["scan-log", "-"])
    out, err = capsys.readouterr()
    assert code == 0
    assert len(out.splitlines()) == 1
    assert err.splitlines() == [
        f"memfrag-agent scan-log: <stdin>:1: line longer than {MAX_LINE_BYTES} bytes: skipped",
        f"memfrag-agent scan-log: <stdin>:4: line longer than {MAX_LINE_BYTES} bytes: skipped",
    ]
