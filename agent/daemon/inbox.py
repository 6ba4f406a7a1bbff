"""The kernel-log findings between the /dev/kmsg thread and the loop: a bounded queue, the orders
the findings ask for (kept FINDING_TTL), de-duplication of announcements, and the failure reports
the kernel suppressed (kept FINDING_TTL too).

Threads: `put` and `suppressed` run on the kmsg thread (Queue and deque.append are thread-safe);
`take` and `digest` run on the loop."""

from __future__ import annotations

import collections
import queue
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

    # --- the kmsg thread ---------------------------------------------------------------------
    def put(self, f: Finding) -> None:
        try:
            self._queue.put_nowait(f)
        except queue.Full:
            self.on_lost()

    def suppressed(self, n: int) -> None:
        """Failure reports the kernel did not print."""
        self._suppressed.append((self.monotonic(), n))

    # --- the loop ----------------------------------------------------------------------------
    def take(self, timeout: float, batch: list[Finding]) -> None:
        """Append what is queued to `batch`, waiting up to `timeout` for the first."""
        try:
            batch.append(
                self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait()
            )
            while len(batch) < BATCH_MAX:
                batch.append(self._queue.get_nowait())
        except queue.Empty:
            pass

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
