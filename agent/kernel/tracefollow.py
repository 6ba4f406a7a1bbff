"""Reads our ftrace instance's trace_pipe in a thread and hands parsed events to callbacks; and
a bounded window of recent events for the poll loop.

trace_pipe is a consuming read that blocks until the ring buffer has data, so `stop` wakes the
reader by writing a line into the instance's own trace_marker. Why trace_pipe and not the
per-CPU trace_pipe_raw buffers: with the in-kernel filters only failures, steals and
compactions leave the kernel (a few per second on a bad node, hundreds in a storm); at such
rates the kernel's text formatting and our line parsing cost microseconds per event (measured
in the README's tracing section), while the raw buffers need one reader per CPU and a
binary page parser driven by every event's field offsets.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import threading
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from pathlib import Path

from agent.base.files import read_text
from agent.kernel.boundedlines import split_chunk
from agent.kernel.cgroupinfo import CgroupPaths
from agent.kernel.cgroups import CgroupReader
from agent.kernel.trace import (
    DEFAULT_NOWARN_NAMES,
    Extfrag,
    Lost,
    PageAlloc,
    TraceEvent,
    gfp_names,
    nowarn_names,
    parse_line,
)
from agent.kernel.tracefs import (
    PAGE_ALLOC,
    TraceInstance,
    TracingError,
    events_for,
    find_tracefs,
)

log = logging.getLogger(__name__)
READ_SIZE = 1 << 16
MAX_PENDING = 1 << 16  # a trace_pipe line is ~250 bytes: a longer one is garbage, dropped
STOP_MARK = b"memfrag-agent: stop\n"


class TraceFollower:
    """One thread reading `instance`'s trace_pipe until `stop`."""

    def __init__(
        self,
        instance: TraceInstance,
        on_event: Callable[[TraceEvent], None],
        on_unparsed: Callable[[bytes], None] = lambda line: None,
        on_error: Callable[[str], None] = lambda message: None,
        nowarn_names: frozenset[str] = DEFAULT_NOWARN_NAMES,
    ) -> None:
        self.instance = instance
        self.on_event, self.on_unparsed, self.on_error = on_event, on_unparsed, on_error
        self.nowarn_names = nowarn_names
        self.lines = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._opened = threading.Event()

    def start(self) -> threading.Thread:
        self._thread = threading.Thread(target=self.run, name="trace", daemon=True)
        self._thread.start()
        self._opened.wait(5)
        return self._thread

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the reader: wake its blocking read with a line of our own trace_marker."""
        self._stop.set()
        with contextlib.suppress(OSError):
            fd = os.open(self.instance.path / "trace_marker", os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.write(fd, STOP_MARK)
            finally:
                os.close(fd)
        if self._thread is not None:
            self._thread.join(timeout)

    def run(self) -> None:
        try:
            fd = os.open(self.instance.trace_pipe, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            self._opened.set()
            self.on_error(f"{self.instance.trace_pipe}: cannot open: {exc.strerror or exc}")
            return
        self._opened.set()
        pending = b""
        try:
            while not self._stop.is_set():
                try:
                    chunk = os.read(fd, READ_SIZE)
                except OSError as exc:
                    if exc.errno == errno.EINTR:
                        continue
                    self.on_error(f"{self.instance.trace_pipe}: read failed: {exc.strerror}")
                    return
                if not chunk:  # the instance was removed under us
                    self.on_error(f"{self.instance.trace_pipe}: end of file (instance removed?)")
                    return
                lines, pending = split_chunk(pending, chunk, MAX_PENDING)
                for line in lines:
                    self.handle(line)
        finally:
            os.close(fd)

    def handle(self, line: bytes) -> None:
        if not line.strip():
            return
        self.lines += 1
        event = parse_line(line, self.nowarn_names)
        if event is None:
            if STOP_MARK.strip() not in line:
                self.on_unparsed(line)
            return
        self.on_event(event)


MAX_EVENTS = 100_000  # ~30 MB at most; beyond it the oldest go and `dropped` says how many
MAX_PIDS = 4096


class TraceWindow:
    """The last `seconds` of events, at most `max_events`, with each attributable event's
    cgroups read when it arrived (a process may be gone by the time the window is read), and
    running totals since start for counters. Thread-safe: the reader adds, the loop reads."""

    def __init__(
        self,
        seconds: float,
        resolve: Callable[[int], CgroupPaths | None],
        max_events: int = MAX_EVENTS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.seconds = seconds
        self.resolve = resolve
        self.clock = clock
        self.events: deque[tuple[float, TraceEvent]] = deque(maxlen=max_events)
        self.cgroups: OrderedDict[int, CgroupPaths | None] = OrderedDict()
        self.dropped = 0
        self.totals: Counter[str] = Counter()
        self._lock = threading.Lock()

    def add(self, event: TraceEvent) -> None:
        attributable = isinstance(event, PageAlloc | Extfrag)
        paths = None
        if attributable:
            pid = event.head.pid  # type: ignore[union-attr]
            with self._lock:
                known = pid in self.cgroups
            paths = self.cgroups[pid] if known else self.resolve(pid)
        with self._lock:
            if attributable:
                self.cgroups[pid] = paths
                self.cgroups.move_to_end(pid)
                while len(self.cgroups) > MAX_PIDS:
                    self.cgroups.popitem(last=False)
            if len(self.events) == self.events.maxlen:
                self.dropped += 1
            # A LOST line carries no time: it counts from when it was read.
            at = self.clock() if isinstance(event, Lost) else event.head.timestamp
            self.events.append((at, event))
            self._count(event)

    def _count(self, event: TraceEvent) -> None:
        if isinstance(event, PageAlloc) and event.failed:
            self.totals["failed"] += 1
            self.totals["silent"] += event.silent
        elif isinstance(event, Extfrag):
            self.totals["steals"] += 1
        elif isinstance(event, Lost):
            self.totals["lost"] += event.count

    def snapshot(self) -> tuple[tuple[TraceEvent, ...], dict[int, CgroupPaths | None], int]:
        """The window's events (older ones pruned), the pids' cgroups, and events dropped for
        the bound since start."""
        horizon = self.clock() - self.seconds
        with self._lock:
            while self.events and self.events[0][0] < horizon:
                self.events.popleft()
            return tuple(e for _, e in self.events), dict(self.cgroups), self.dropped


class TraceSource:
    """The whole kernel side, for the daemon and `memfrag-agent trace`: our instance with its
    filters, the reader thread and the window. `start` raises TracingError naming what is
    missing; `stop` removes the instance (and is safe to call twice). `armed` False starts the
    per-allocation failure counter (kmem:mm_page_alloc) disabled; `arm` turns it on and off
    in our instance, from any thread."""

    def __init__(
        self,
        min_order: int,
        window_seconds: float,
        pageblock_order: int | None,
        tracefs: Path | None = None,
        cgroups: CgroupReader | None = None,
        on_unparsed: Callable[[bytes], None] = lambda line: None,
        on_error: Callable[[str], None] = lambda message: log.error("tracing: %s", message),
        armed: bool = True,
    ) -> None:
        self.instance = TraceInstance(tracefs if tracefs is not None else find_tracefs())
        self.events = events_for(min_order, pageblock_order, armed)
        self.armed = armed
        self._arm_lock = threading.Lock()
        self.window = TraceWindow(window_seconds, (cgroups or CgroupReader()).of_pid)
        self.on_unparsed, self.on_error = on_unparsed, on_error
        self.follower: TraceFollower | None = None
        self.stale_removed = False

    def start(self) -> None:
        self.instance.check_events(self.events)
        fmt = self.instance.tracefs / "events" / "kmem" / "mm_page_alloc" / "format"
        try:
            names = nowarn_names(gfp_names(read_text(fmt, limit=1 << 20)))
        except OSError as exc:
            raise TracingError(f"{fmt}: cannot read: {exc.strerror or exc}") from exc
        self.stale_removed = self.instance.start(self.events)
        self.follower = TraceFollower(
            self.instance, self.window.add, self.on_unparsed, self.on_error, names
        )
        self.follower.start()

    def arm(self, on: bool) -> None:
        """Enable (on) or disable the failure counter's tracepoint in our instance; a no-op
        when it already is. Raises TracingError when the kernel refuses."""
        with self._arm_lock:
            if on != self.armed:
                self.instance.enable(*PAGE_ALLOC, on)
                self.armed = on

    def stop(self) -> None:
        if self.follower is not None:
            self.follower.stop()
            self.follower = None
        self.instance.remove()
