"""The tracing source's cost (bench phase `tracing`): an allocation-heavy workload timed with our
ftrace instance off, on with the failure counter disarmed (the daemon's default state on a
healthy node: sources.tracing_alloc_failures at-risk) and on with it armed (at risk, or
`always`), interleaved in one run, and the agent's CPU with tracing on, at rest and under that
workload. Needs root and this machine's tracefs (mounted for the phase if it is
not); run it under `flock /work/locks/tracefs.lock`.

The workload faults in anonymous memory page by page (MADV_NOHUGEPAGE: one order-0
allocation, so one kmem:mm_page_alloc hit and one in-kernel filter check, per 4 KiB page) and
unmaps it: the tracepoint's worst case per byte. A THP variant (MADV_HUGEPAGE, order-9 faults)
is measured the same way, in details only. The touching is one ctypes.memset per mapping, so the
time is the kernel's, not Python's. Each round is timed twice: wall time, and the thread's CPU
time (CLOCK_THREAD_CPUTIME_ID: user + system, the page faults and the tracepoint's filter
included), which a shared, oversubscribed machine does not inflate with time spent waiting for a
CPU: the ratio is taken on CPU time.
"""

from __future__ import annotations

import contextlib
import ctypes
import enum
import mmap
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from agent.config.model import Config
from agent.kernel.procfs import ProcReader
from agent.kernel.tracefollow import TraceSource
from agent.kernel.tracefs import TRACEFS_MOUNTS

PAGE = mmap.PAGESIZE
HUGE = 2 << 20


@dataclass(frozen=True)
class Sample:
    wall: float
    cpu: float  # this thread's CPU seconds


def touch(mib: int, huge: bool) -> Sample:
    """Seconds to map `mib` MiB, fault every page in (one memset) and unmap it."""
    size = mib << 20
    t, c = time.perf_counter(), time.thread_time()
    m = mmap.mmap(-1, size + HUGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    try:
        m.madvise(mmap.MADV_HUGEPAGE if huge else mmap.MADV_NOHUGEPAGE)
        buf = (ctypes.c_char * (size + HUGE)).from_buffer(m)
        base = ctypes.addressof(buf)
        start = (base + HUGE - 1) & ~(HUGE - 1) if huge else base
        ctypes.memset(start, 1, size)
        del buf
    finally:
        m.close()
    return Sample(time.perf_counter() - t, time.thread_time() - c)


@dataclass(frozen=True)
class Rounds:
    """The workload's seconds per round, off[i] and on[i] run back to back (pair i)."""

    off: tuple[float, ...]
    on: tuple[float, ...]

    @property
    def pair_ratios(self) -> tuple[float, ...]:
        return tuple(b / a for a, b in zip(self.off, self.on, strict=True))

    @property
    def ratio(self) -> float:
        """The median of the pairs' on/off ratios: 1.0 is no slowdown. Each pair runs back to
        back, so a burst of the shared machine's load spoils one pair, not one side."""
        return statistics.median(self.pair_ratios)

    @property
    def ratio_of_minimums(self) -> float:
        """Each side's least-disturbed round: the other estimate, robust to one-sided noise."""
        return min(self.on) / min(self.off)


class State(enum.Enum):
    """Our instance during a round."""

    OFF = "off"  # no instance
    DISARMED = "disarmed"  # every event on but kmem:mm_page_alloc (a healthy node, at-risk)
    ARMED = "armed"  # every event on (at risk, or sources.tracing_alloc_failures: always)


def interleaved(
    work: Callable[[], Sample],
    tracing: Callable[[State], None],
    rounds: int,
    states: Sequence[State] = tuple(State),
) -> dict[State, tuple[Sample, ...]]:
    """`rounds` rounds of every state back to back, the order rotated each round, so a drift
    of the shared machine's load falls on all: each state's samples, round i at index i."""
    got: dict[State, list[Sample]] = {s: [] for s in states}
    work()  # warm-up: the first mapping of a process pays for its page tables
    for i in range(rounds):
        k = i % len(states)
        for state in (*states[k:], *states[:k]):
            tracing(state)
            got[state].append(work())
    tracing(states[0])
    return {s: tuple(x) for s, x in got.items()}


def versus(
    samples: dict[State, tuple[Sample, ...]], on: State, off: State = State.OFF
) -> tuple[Rounds, Rounds]:
    """State `on` against `off`, pair by pair: (CPU time, wall time)."""
    a, b = samples[off], samples[on]
    cpu = Rounds(tuple(x.cpu for x in a), tuple(x.cpu for x in b))
    return cpu, Rounds(tuple(x.wall for x in a), tuple(x.wall for x in b))


@contextlib.contextmanager
def tracefs_mounted() -> Iterator[Path]:
    """The host's tracefs, mounted for the phase when it is not (and unmounted after)."""
    for path in TRACEFS_MOUNTS:
        if (path / "instances").is_dir():
            yield path
            return
    target = TRACEFS_MOUNTS[0]
    subprocess.run(["mount", "-t", "tracefs", "nodev", str(target)], check=True)
    try:
        yield target
    finally:
        subprocess.run(["umount", str(target)], check=False)


class Toggle:
    """Our instance with the daemon's filters (the default target order) in one State: made
    when it is needed, its failure counter armed and disarmed as the daemon does it."""

    def __init__(self, tracefs: Path) -> None:
        pti = ProcReader("/proc").observe(with_pagetypeinfo=True).pagetype
        self.order = Config().assessment.target_order
        self.pageblock = pti.pageblock_order if pti is not None else None
        self.tracefs = tracefs
        self.source: TraceSource | None = None
        self.events = 0

    def __call__(self, state: State) -> None:
        if state is State.OFF:
            if self.source is not None:
                self.source.stop()
                self.events += len(self.source.window.snapshot()[0])
                self.source = None
            return
        if self.source is None:
            self.source = TraceSource(self.order, 600, self.pageblock, self.tracefs, armed=False)
            self.source.start()
        self.source.arm(state is State.ARMED)
