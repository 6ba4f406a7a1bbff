"""The kernel-log findings between the /dev/kmsg thread and the loop: a bounded queue, the orders
the findings ask for (kept FINDING_TTL), de-duplication of announcements, and the failure reports
the kernel suppressed (kept FINDING_TTL too).

Threads: `put` and `suppressed` run on the kmsg thread (Queue and deque.append are thread-safe);
`take` and `digest` run on the loop; `wake` runs anywhere, a signal handler included.

The loop sleeps in `take` until the next poll is due, not in 1 s steps (an idle agent woke 60
times a minute for nothing): a finding or `wake` ends the wait at once through a pipe, which is
safe from a signal handler where a lock is not (the handler may interrupt its own thread holding
it) and leaves no gap between "nothing queued" and "sleep" for a wake-up to fall into."""

from __future__ import annotations

import collections
import contextlib
import os
import queue
import select
from collections.abc import Callable
from dataclasses import dataclass

from agent.kernel.kmsg import Finding

FINDING_TTL = 600.0  # a finding keeps its order in the assessment this long
DEDUPE_SECONDS = 60.0  # the same finding again within this is counted, not re-announced
QUEUE_MAX = 10000
BATCH_MAX = 10000
Key = tuple[str, int | None, str | None]


def _key(f: Finding) -> Key:
    return (f.kind, f.order, f.process)


@dataclass(frozen=True)
class Digest:
    """What one tick takes from the kernel log."""

    findings: tuple[Finding, ...]  # every one, to count
    announce: tuple[Finding, ...]  # not seen within DEDUPE_SECONDS: log and Event
    orders: tuple[int, ...]  # orders of the findings of the last FINDING_TTL
    suppressed: int  # reports the kernel suppressed in the last FINDING_TTL


class Inbox:
    def __init__(
        self,
        monotonic: Callable[[], float],
        on_lost: Callable[[], None] = lambda: None,
        maxsize: int = QUEUE_MAX,
    ) -> None:
        """`on_lost`: a finding did not fit the queue (counted by the caller)."""
        self.monotonic, self.on_lost = monotonic, on_lost
        self._queue: queue.Queue[Finding] = queue.Queue(maxsize=maxsize)
        self._suppressed: collections.deque[tuple[float, int]] = collections.deque(maxlen=1024)
        self._recent: dict[Key, float] = {}
        self._announced: dict[Key, float] = {}
        self._pipe: tuple[int, int] | None = None  # made by the first waiting take()

    # --- the kmsg thread ---------------------------------------------------------------------
    def put(self, f: Finding) -> None:
        try:
            self._queue.put_nowait(f)
        except queue.Full:
            self.on_lost()
            return
        self.wake()

    def wake(self) -> None:
        """End the loop's wait now (a finding, a stop); from any thread or a signal handler."""
        if self._pipe is not None:
            with contextlib.suppress(OSError):  # full (a wake-up is pending anyway) or closed
                os.write(self._pipe[1], b"x")

    def suppressed(self, n: int) -> None:
        """Failure reports the kernel did not print."""
        self._suppressed.append((self.monotonic(), n))

    # --- the loop ----------------------------------------------------------------------------
    def take(self, timeout: float, batch: list[Finding]) -> None:
        """Append what is queued to `batch`, waiting up to `timeout` for the first finding or a
        `wake`."""
        if timeout > 0 and self._queue.empty():
            if self._pipe is None:
                r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
                self._pipe = (r, w)
                if not self._queue.empty():  # put() before the pipe existed did not wake us
                    timeout = 0
            select.select([self._pipe[0]], [], [], timeout)
        if self._pipe is not None:
            with contextlib.suppress(OSError):  # BlockingIOError: nothing to drain
                while os.read(self._pipe[0], 4096):
                    pass
        try:
            while len(batch) < BATCH_MAX:
                batch.append(self._queue.get_nowait())
        except queue.Empty:
            pass

    def close(self) -> None:
        if self._pipe is not None:
            for fd in self._pipe:
                os.close(fd)
            self._pipe = None

    def digest(self, now: float, batch: list[Finding]) -> Digest:
        announce = []
        for f in batch:
            key = _key(f)
            self._recent[key] = now
            if now - self._announced.get(key, -DEDUPE_SECONDS) < DEDUPE_SECONDS:
                continue  # counted; already logged and announced
            self._announced = {k: t for k, t in self._announced.items() if now - t < DEDUPE_SECONDS}
            self._announced[key] = now
            announce.append(f)
        self._recent = {k: t for k, t in self._recent.items() if now - t < FINDING_TTL}
        orders = tuple(k[1] for k in self._recent if k[1] is not None)
        while self._suppressed and now - self._suppressed[0][0] >= FINDING_TTL:
            self._suppressed.popleft()
        dropped = sum(n for _, n in list(self._suppressed))  # list(): one step, no mutation error
        return Digest(tuple(batch), tuple(announce), orders, dropped)
