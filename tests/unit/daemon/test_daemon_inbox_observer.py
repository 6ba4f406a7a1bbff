"""The findings inbox (queue, de-duplication, orders kept FINDING_TTL, suppressed counts) and the
observer (one observation, the pagetypeinfo cache) with a fake clock."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from agent.base.errors import MemfragError
from agent.config.model import Config
from agent.daemon.inbox import DEDUPE_SECONDS, FINDING_TTL, Inbox
from agent.daemon.observer import NOT_HEALTHY_PTI_INTERVAL, Observer
from agent.kernel.kmsg import Finding, scan
from agent.kernel.procfs import ProcReader
from tests.unit.daemon.parts import FRAGMENTED, HEALTHY, UNMOVABLE, CountingReader, Host
from tests.unit.kube.fakekube import Clock


def finding(process: str = "mysqld", order: int = 5) -> Finding:
    line = f"4,1,1,-;{process}: page allocation failure: order:{order}, mode:0x10c0d0"
    (f,) = scan([line.encode()])
    return f


def test_a_finding_is_announced_once_a_minute_and_counted_every_time() -> None:
    clock = Clock()
    inbox = Inbox(clock)
    for _ in range(3):
        inbox.put(finding())
    batch: list[Finding] = []
    inbox.take(0, batch)
    d = inbox.digest(clock(), batch)
    assert len(d.findings) == 3 and len(d.announce) == 1
    assert d.orders == (5,)
    clock.t += DEDUPE_SECONDS
    again = inbox.digest(clock(), [finding()])
    assert len(again.announce) == 1  # a minute on: announced again
    other = inbox.digest(clock(), [finding("java")])
    assert [f.process for f in other.announce] == ["java"]


def test_a_findings_order_counts_for_finding_ttl_then_goes() -> None:
    clock = Clock()
    inbox = Inbox(clock)
    assert inbox.digest(clock(), [finding(order=7)]).orders == (7,)
    clock.t += FINDING_TTL - 1
    assert inbox.digest(clock(), []).orders == (7,)
    clock.t += 1
    assert inbox.digest(clock(), []).orders == ()


def test_suppressed_reports_are_summed_over_finding_ttl() -> None:
    clock = Clock()
    inbox = Inbox(clock)
    inbox.suppressed(3)
    clock.t += 10
    inbox.suppressed(4)
    assert inbox.digest(clock(), []).suppressed == 7
    clock.t += FINDING_TTL - 5
    assert inbox.digest(clock(), []).suppressed == 4


def test_a_full_queue_counts_the_finding_lost_instead_of_blocking() -> None:
    lost: list[int] = []
    inbox = Inbox(Clock(), on_lost=lambda: lost.append(1), maxsize=2)
    for _ in range(5):
        inbox.put(finding())
    batch: list[Finding] = []
    inbox.take(0.01, batch)
    assert len(batch) == 2 and len(lost) == 3
    inbox.take(0.01, batch)  # nothing queued: returns after the timeout
    assert len(batch) == 2


def test_take_sleeps_the_whole_timeout_and_a_finding_or_wake_ends_it_at_once() -> None:
    """The loop sleeps until the next poll, not in 1 s steps: only a finding or wake() (a
    stop, from a signal handler or a thread) wakes it early."""
    inbox = Inbox(Clock())
    batch: list[Finding] = []
    t0 = time.monotonic()
    inbox.take(0.3, batch)
    assert batch == [] and time.monotonic() - t0 >= 0.29
    for wake in (lambda: inbox.put(finding()), inbox.wake):
        timer = threading.Timer(0.05, wake)
        timer.start()
        t0 = time.monotonic()
        inbox.take(30, batch)
        assert time.monotonic() - t0 < 5
        timer.join()
    assert len(batch) == 1  # the finding; wake() brings none
    inbox.wake()  # pending wake-ups are drained: a later take waits again
    inbox.take(0.01, batch)
    t0 = time.monotonic()
    inbox.take(0.2, batch)
    assert time.monotonic() - t0 >= 0.19
    inbox.close()
    inbox.wake()  # after close: nothing, no error


def test_pagetypeinfo_is_read_by_its_interval_and_cached_between(tmp_path: Path) -> None:
    host = Host(tmp_path, HEALTHY)
    reader = CountingReader(host)
    obs = Observer(reader)
    cfg = Config()
    first, _ = obs.observe(0.0, cfg, 4, urgent=False)
    assert first.pagetype is not None
    (host.root / "pagetypeinfo").unlink()  # a read now would not find it
    cached, a = obs.observe(1.0, cfg, 4, urgent=False)
    assert cached.pagetype == first.pagetype and a.verdict == "healthy"
    assert reader.observed == 2 and obs.last is a
    later, _ = obs.observe(cfg.sources.pagetypeinfo_interval_seconds, cfg, 4, urgent=False)
    assert later.pagetype is None  # read again, and gone


def test_pagetypeinfo_is_read_sooner_while_not_healthy(tmp_path: Path) -> None:
    host = Host(tmp_path, FRAGMENTED)
    obs = Observer(CountingReader(host))
    cfg = Config()
    obs.observe(0.0, cfg, 4, urgent=False)
    host.be(HEALTHY)
    o, _ = obs.observe(NOT_HEALTHY_PTI_INTERVAL, cfg, 4, urgent=False)
    assert o.pagetype is not None  # the healthy fixture's, read within 30 s, not 300


def test_the_first_fragmented_tick_reads_pagetypeinfo_of_the_fragmented_node(
    tmp_path: Path,
) -> None:
    """The cause picks the ladder: not from a reading taken while the node was healthy (the
    lab's reclaimable node got the unmovable ladder, and lost its page cache, from one)."""
    host = Host(tmp_path, HEALTHY)
    reader = CountingReader(host)
    obs = Observer(reader)
    cfg = Config()
    obs.observe(0.0, cfg, 4, urgent=False)
    host.be(UNMOVABLE)
    o, a = obs.observe(15.0, cfg, 4, urgent=False)
    fresh = ProcReader(host.root, host.sys).observe().pagetype
    assert a.verdict == "fragmented" and o.pagetype == fresh and a.cause.kind == "unmovable"
    n = reader.observed
    obs.observe(30.0, cfg, 4, urgent=False)  # still fragmented: the cached reading, no re-read
    assert reader.observed == n + 1


def test_an_unreadable_proc_raises_and_keeps_the_last_assessment(tmp_path: Path) -> None:
    host = Host(tmp_path, HEALTHY)
    obs = Observer(CountingReader(host))
    _, a = obs.observe(0.0, Config(), 4, urgent=True)
    host.garbage()
    with pytest.raises(MemfragError):
        obs.observe(1.0, Config(), 4, urgent=True)
    assert obs.last is a
