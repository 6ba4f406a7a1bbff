"""Follows the kernel log (/dev/kmsg) in a thread and hands findings to the poll loop.

/dev/kmsg returns one record per read(), EPIPE when records were overwritten before we read
them (we count the loss and carry on), and never EOF; a FIFO or a plain file (tests, replays)
returns several lines per read and EOF when the writer goes away (we reopen and say so).
Non-kernel records are ignored by default: any root process can write into /dev/kmsg.
A ``warn_alloc: N callbacks suppressed`` record hands N (reports the kernel's rate limit dropped)
to ``on_suppressed``, so the count of failures does not stop at what the log printed.

A flood costs per record only what it must: the fd is non-blocking, each wake-up reads every
record there is (one read() each: /dev/kmsg hands out no more) into one reused buffer (a new
16 KiB bytes object per read, shrunk to the record, and the EAGAIN exception that ends each
drain cost more than the read itself); a /dev/kmsg record that fails the matcher's byte-level
pre-filter (`might_match_record`'s rule, inline on the buffer) is counted and dropped as read, the
others (and the lines of a FIFO or file, which may continue each other) are scanned in one
`scan_events` call per wake-up. After a wake-up that found records the thread lets the next
ones gather for COALESCE_SECONDS before it polls again, so 10,000 lines/s cost about
1/COALESCE wake-ups a second, not up to 10,000 (a reader on its own core otherwise wakes for
every record). The first record after a quiet spell is read the moment it arrives.
"""

from __future__ import annotations

import contextlib
import errno
import io
import logging
import os
import select
import stat
import threading
from collections.abc import Callable

from agent.kernel.boundedlines import split_chunk
from agent.kernel.kmsg import RECORD_KEYS, Finding, Suppressed, scan_events

log = logging.getLogger(__name__)
READ_SIZE = 16384  # larger than any kmsg record (the kernel caps a record well below this)
MAX_PENDING = 1 << 20  # a line longer than this without a newline is dropped, not buffered
DRAIN_MAX = 4096  # records read per wake-up at most, before the lines go to the matcher
COALESCE_SECONDS = 0.02  # after records came, gather (a finding among many waits this at most)


class KmsgFollower:
    def __init__(
        self,
        path: str,
        on_finding: Callable[[Finding], None],
        accept_user_facility: bool = False,
        on_lost: Callable[[int], None] = lambda n: None,
        on_reopen: Callable[[], None] = lambda: None,
        on_ignored: Callable[[], None] = lambda: None,
        on_suppressed: Callable[[int], None] = lambda n: None,
    ) -> None:
        self.path = path
        self.on_finding = on_finding
        self.accept_user_facility = accept_user_facility
        self.on_lost, self.on_reopen, self.on_ignored = on_lost, on_reopen, on_ignored
        self.on_suppressed = on_suppressed
        self.records = 0
        self._records_whole = False
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def start(self) -> threading.Thread:
        t = threading.Thread(target=self.run, name="kmsg", daemon=True)
        t.start()
        return t

    def _open(self) -> tuple[int, bool]:
        fd = os.open(self.path, os.O_RDONLY)
        mode = os.fstat(fd).st_mode
        regular = stat.S_ISREG(mode)
        self._records_whole = stat.S_ISCHR(mode)  # /dev/kmsg: one whole record per read()
        with contextlib.suppress(OSError):  # FIFOs cannot seek
            os.lseek(fd, 0, os.SEEK_END)  # only new records: the past was assessed at start
        return fd, regular

    def run(self) -> None:
        first = True
        while not self._stop.is_set():
            try:
                fd, regular = self._open()
            except OSError as exc:
                log.error("kernel log %s: cannot open (%s); retrying in 5s", self.path, exc)
                self._stop.wait(5)
                continue
            if not first:
                log.warning("kernel log %s reopened", self.path)
                self.on_reopen()
            first = False
            try:
                self._follow(fd, regular)
            finally:
                os.close(fd)
            self._stop.wait(0.5)

    def _follow(self, fd: int, regular: bool) -> None:
        pending = b""
        os.set_blocking(fd, False)
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        buf = bytearray(READ_SIZE)  # every record is read into this one buffer: no allocation
        view = memoryview(buf)
        stream = io.FileIO(fd, closefd=False)  # readinto: None, not an exception, when drained
        try:
            while not self._stop.is_set():
                lines: list[bytes] = []
                reads, skipped, closed, idle = 0, 0, False, False
                readinto, whole, find = stream.readinto, self._records_whole, buf.find
                k1, k2, k3 = RECORD_KEYS
                while reads < DRAIN_MAX:  # the hot loop of a flood: locals, C calls only
                    try:
                        n = readinto(buf)
                    except OSError as exc:
                        if exc.errno == errno.EPIPE:
                            log.warning(
                                "kernel log: records were overwritten before they were read"
                            )
                            self.on_lost(1)
                            continue
                        if exc.errno == errno.EINTR:
                            continue
                        log.error("kernel log %s: read failed (%s)", self.path, exc)
                        closed = True
                        break
                    if n is None:  # EAGAIN: nothing more for now
                        idle = True
                        break
                    if not n:
                        if not regular:
                            log.warning("kernel log %s closed by the writer", self.path)
                            closed = True
                        idle = True
                        break
                    reads += 1
                    if (  # might_match_record, inline: its call cost 0.35 us a record
                        whole
                        and buf[0] != 0x7B
                        and find(k1, 0, n) < 0
                        and find(k2, 0, n) < 0
                        and find(k3, 0, n) < 0
                    ):
                        skipped += 1  # an unrelated record: no copy, no split, no scan
                        continue
                    done, pending = split_chunk(pending, bytes(view[:n]), MAX_PENDING)
                    lines += done
                self.records += skipped
                if lines:
                    self.handle_many(lines)
                if closed:
                    return
                if regular and idle:  # a plain file: wait for more, like tail -f
                    self._stop.wait(0.2)
                elif 0 < reads < DRAIN_MAX:
                    self._stop.wait(COALESCE_SECONDS)  # what came is handled; let the next gather
                elif reads == 0:
                    poller.poll()  # until a record arrives: an idle log costs no wake-up
        finally:
            view.release()
            stream.close()  # closefd=False: the fd stays open for run() to close

    def handle(self, line: bytes) -> None:
        self.handle_many([line])

    def handle_many(self, lines: list[bytes]) -> None:
        """Records in the order read, scanned in one call (`scan_events` drops unrelated lines
        on a few byte tests)."""
        self.records += len(lines)
        for event in scan_events(lines):
            if event.record.facility != 0 and not self.accept_user_facility:
                self.on_ignored()
            elif isinstance(event, Suppressed):
                self.on_suppressed(event.count)
            else:
                self.on_finding(event)
