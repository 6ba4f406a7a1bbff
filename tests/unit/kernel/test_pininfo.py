"""VmPin and the FOLL_PIN count: parsed from a real machine's files (an io_uring holding 64
registered one-page buffers: tests/fixtures/proc/io-uring-pin-6.18-x86_64), read a bounded
number of processes at a time."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from agent.base.errors import ParseError
from agent.kernel.pininfo import SkipReason, foll_pinned_pages, parse_status_pin
from agent.kernel.pinscan import PinScanner
from agent.kernel.vmstat import parse_vmstat

PIN = Path(__file__).parents[2] / "fixtures" / "proc" / "io-uring-pin-6.18-x86_64"


def test_vmpin_of_a_process_holding_io_uring_buffers() -> None:
    assert parse_status_pin((PIN / "4242" / "status").read_text()) == ("python3", 64 * 4096)


def test_a_kernel_thread_has_no_vmpin() -> None:
    assert parse_status_pin((PIN / "2" / "status").read_text()) is None


@pytest.mark.parametrize("line", ["VmPin:\t  12 MB", "VmPin:\t  x kB", "VmPin:", "VmPin:\t 1 2 kB"])
def test_a_malformed_vmpin_line_is_a_parse_error(line: str) -> None:
    text = (PIN / "4242" / "status").read_text().replace("VmPin:\t     256 kB", line)
    with pytest.raises(ParseError):
        parse_status_pin(text)


def test_no_name_line_is_a_parse_error() -> None:
    with pytest.raises(ParseError):
        parse_status_pin("VmPin:\t 4 kB\n")


def test_foll_pin_count_from_vmstat() -> None:
    assert foll_pinned_pages(parse_vmstat((PIN / "vmstat").read_text())) == 37
    assert foll_pinned_pages({"nr_free_pages": 5}) is None  # before 5.8
    assert foll_pinned_pages(None) is None
    assert foll_pinned_pages({"nr_foll_pin_acquired": 3, "nr_foll_pin_released": 5}) == 0


def test_the_scanner_names_the_holder_and_counts_the_kernel_thread() -> None:
    s = PinScanner(PIN)
    holders = s.scan(100)
    assert [(h.pid, h.comm, h.pinned_bytes) for h in holders] == [(4242, "python3", 262144)]
    assert s.skipped == {SkipReason.NO_MM: 1}


def test_the_scanner_reads_at_most_n_a_call_and_resumes(tmp_path: Path) -> None:
    seen: list[SkipReason] = []
    for pid in (10, 11, 12):
        shutil.copytree(PIN / "4242", tmp_path / str(pid))
    (tmp_path / "11" / "status").write_text("Name:\tbad\nVmPin:\t?? kB\n")
    (tmp_path / "13").mkdir()  # vanished: no status file any more
    (tmp_path / "self").mkdir()  # not a pid
    s = PinScanner(tmp_path, on_skip=seen.append)
    assert [h.pid for h in s.scan(2)] == [10]  # 10 and 11 read
    assert seen == [SkipReason.MALFORMED]
    assert [h.pid for h in s.scan(2)] == [10, 12]  # 12 and 13, then the end of the pass
    assert seen == [SkipReason.MALFORMED, SkipReason.VANISHED]
    shutil.rmtree(tmp_path / "10")  # exited: forgotten at the next call
    assert [h.pid for h in s.scan(2)] == [12]
