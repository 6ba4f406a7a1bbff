"""KmsgFollower.handle: what each kernel-log record is handed to (no threads, no files)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from agent.kernel.kmsg import Finding
from agent.kernel.kmsgfollow import KmsgFollower


def _follower(accept_user: bool = False) -> tuple[KmsgFollower, list[object]]:
    seen: list[object] = []
    f = KmsgFollower(
        "/nonexistent",
        seen.append,
        accept_user_facility=accept_user,
        on_ignored=lambda: seen.append("ignored"),
        on_suppressed=lambda n: seen.append(("suppressed", n)),
    )
    return f, seen


def test_suppressed_count_reaches_its_callback_not_the_findings() -> None:
    f, seen = _follower()
    f.handle(b"4,100,2548650549225,-;warn_alloc: 11 callbacks suppressed")
    assert seen == [("suppressed", 11)]


def test_injected_suppressed_line_is_ignored_like_an_injected_finding() -> None:
    f, seen = _follower()
    f.handle(b"12,101,1,-;warn_alloc: 99 callbacks suppressed")
    assert seen == ["ignored"]
    f, seen = _follower(accept_user=True)
    f.handle(b"12,101,1,-;warn_alloc: 99 callbacks suppressed")
    assert seen == [("suppressed", 99)]


def test_findings_still_go_to_on_finding() -> None:
    f, seen = _follower()
    f.handle(b"4,102,3,-;dockerd: page allocation failure: order:5, mode:0x440dc0")
    assert len(seen) == 1 and isinstance(seen[0], Finding)
    assert (seen[0].order, seen[0].process) == (5, "dockerd")


def test_the_follower_reads_a_fifo_in_bursts_and_reports_every_finding(tmp_path: Path) -> None:
    """Non-blocking reads, a batch scanned per wake-up, a pause after records: a burst of
    unrelated lines with findings among them loses none of the findings, and a lone line after
    a quiet spell still arrives."""
    fifo = tmp_path / "kmsg"
    os.mkfifo(fifo)
    seen: list[Finding] = []
    f = KmsgFollower(str(fifo), seen.append, accept_user_facility=True)
    t = f.start()
    fd = os.open(fifo, os.O_WRONLY)
    try:
        unrelated = b"".join(b"6,%d,1,-;eth0: renamed from tmp%d\n" % (i, i) for i in range(2000))
        marker = b"4,9999,1,-;mysqld: page allocation failure: order:4, mode:0x10c0d0\n"
        os.write(fd, unrelated[:30000] + marker + unrelated[30000:] + marker)
        deadline = time.monotonic() + 10
        while len(seen) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert [x.order for x in seen] == [4, 4]
        time.sleep(0.2)
        os.write(fd, marker)
        while len(seen) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(seen) == 3 and f.records == 2003
    finally:
        f.stop()
        os.close(fd)  # EOF: the follower returns from this open and sees the stop
        t.join(5)
