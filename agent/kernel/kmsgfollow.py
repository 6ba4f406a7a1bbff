"""Follows the kernel log (/dev/kmsg) in a thread and hands findings to the poll loop.

/dev/kmsg returns one record per read(), EPIPE when records were overwritten before we read
them (we count the loss and carry on), and never EOF; a FIFO or a plain file (tests, replays)
returns several lines per read and EOF when the writer goes away (we reopen and say so).
Non-kernel records are ignored by default: any root process can write into /dev/kmsg.
A ``warn_alloc: N callbacks suppressed`` record hands N (reports the kernel's rate limit dropped)
to ``on_suppressed``, so the count of failures does not stop at what the log printed.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
import threading
from collections.abc import Callable

from agent.kernel.boundedlines import split_chunk
from agent.kernel.kmsg import Finding, Suppressed, scan_events

log = logging.getLogger(__name__)
READ_SIZE = 16384  # larger than any kmsg record (the kernel caps a record well below this)
MAX_PENDING = 1 << 20  # a line longer than this without a newline is dropped, not buffered


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
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def start(self) -> threading.Thread:
        t = threading.Thread(target=self.run, name="kmsg", daemon=True)
        t.start()
        return t

    def _open(self) -> tuple[int, bool]:
        fd = os.open(self.path, os.O_RDONLY)
        regular = stat.S_ISREG(os.fstat(fd).st_mode)
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
        while not self._stop.is_set():
            try:
                chunk = os.read(fd, READ_SIZE)
            except OSError as exc:
                if exc.errno == errno.EPIPE:
                    log.warning("kernel log: records were overwritten before they were read")
                    self.on_lost(1)
                    continue
                if exc.errno == errno.EINTR:
                    continue
                log.error("kernel log %s: read failed (%s)", self.path, exc)
                return
            if not chunk:
                if regular:  # a plain file: wait for more, like tail -f
                    self._stop.wait(0.2)
                    continue
                log.warning("kernel log %s closed by the writer", self.path)
                return
            lines, pending = split_chunk(pending, chunk, MAX_PENDING)
            for line in lines:
                self.handle(line)

    def handle(self, line: bytes) -> None:
        self.records += 1
        for event in scan_events([line]):
            if event.record.facility != 0 and not self.accept_user_facility:
                self.on_ignored()
            elif isinstance(event, Suppressed):
                self.on_suppressed(event.count)
            else:
                self.on_finding(event)
