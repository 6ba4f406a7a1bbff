"""Our own ftrace instance: `<tracefs>/instances/memfrag-agent`, and nothing else in tracefs.

An instance has its own ring buffer, events and filters: the global tracer and other tools'
instances are never read or written. The in-kernel filters keep what leaves the kernel to what
the agent counts (failed allocations at or above an order, pageblock steals, compactions), so
the tracepoint on the allocator's hot path costs a filter check, not a ring-buffer write.

A killed agent leaves its instance behind (tracefs outlives processes): `start` removes a stale
one first. The kernel refuses to remove an instance whose trace_pipe is open (EBUSY): that is a
live reader (another agent on the node), and we say so instead of fighting it.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from agent.base.errors import MemfragError

INSTANCE = "memfrag-agent"
TRACEFS_MOUNTS = (Path("/sys/kernel/tracing"), Path("/sys/kernel/debug/tracing"))
# The kernel's "no page" pfn (-1UL): mm_page_alloc prints page=0 pfn=0x0 for it.
NO_PAGE_PFN = (1 << 64) - 1
# Filtered events are rare; a small buffer per CPU still holds minutes of a storm's failures.
BUFFER_KB = 512


class TracingError(MemfragError):
    """Tracing cannot start or stop: names what (tracefs, the instance, an event) and where."""


@dataclass(frozen=True)
class EventSetup:
    """One tracepoint of the instance, its in-kernel filter ("" for none) and whether it is
    enabled at start (the per-allocation one may start disarmed)."""

    system: str
    name: str
    filter: str = ""
    enabled: bool = True


# The one tracepoint on the allocator's fast path: it fires, and runs its filter, for every
# page allocated (~190 ns each on the development VM), so it can be armed and disarmed.
PAGE_ALLOC = ("kmem", "mm_page_alloc")


def events_for(
    min_order: int, pageblock_order: int | None, armed: bool = True
) -> tuple[EventSetup, ...]:
    """The tracepoints we enable and their filters.

    mm_page_alloc fires for every allocation: only failures (pfn == -1UL) at or above the
    order pass; `armed` False leaves it disabled (no cost on the fast path) until `arm`.
    mm_page_alloc_extfrag's `fragmenting` is computed in its print format
    (fallback_order < pageblock_order), not a field: without the pageblock order the filter
    keeps every steal and the aggregation reads `fragmenting` from the line.
    try_to_compact_pages marks a compaction as direct (an allocation's), not manual. The
    slow-path events (kswapd woken, direct reclaim, compaction deferred) fire only when an
    allocation did not find a free block at once: filtered to the order, they are the cheap
    always-on sign that arms mm_page_alloc.
    """
    steal = (
        ""
        if pageblock_order is None
        else f"fallback_order < {pageblock_order} || change_ownership == 1"
    )
    at_order = f"order >= {min_order}"
    return (
        EventSetup(*PAGE_ALLOC, f"{at_order} && pfn == {NO_PAGE_PFN:#x}", armed),
        EventSetup("kmem", "mm_page_alloc_extfrag", steal),
        EventSetup("compaction", "mm_compaction_try_to_compact_pages"),
        EventSetup("compaction", "mm_compaction_begin"),
        EventSetup("compaction", "mm_compaction_end"),
        EventSetup("vmscan", "mm_vmscan_wakeup_kswapd", at_order),
        EventSetup("vmscan", "mm_vmscan_direct_reclaim_begin", at_order),
        EventSetup("compaction", "mm_compaction_deferred", at_order),
    )


def find_tracefs(candidates: Sequence[Path] = TRACEFS_MOUNTS) -> Path:
    """The mounted tracefs: the first candidate that holds `instances` (an unmounted
    /sys/kernel/tracing is an empty directory)."""
    for path in candidates:
        if (path / "instances").is_dir():
            return path
    raise TracingError(
        "tracefs is not mounted at "
        + " or ".join(str(p) for p in candidates)
        + ": mount it (mount -t tracefs nodev /sys/kernel/tracing) or, in a pod, mount the "
        "host's /sys/kernel/tracing"
    )


def _write(path: Path, value: str) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
    except OSError as exc:
        raise TracingError(f"{path}: cannot open for writing: {_why(exc)}") from exc
    try:
        os.write(fd, value.encode() + b"\n")
    except OSError as exc:
        raise TracingError(f"{path}: the kernel refused {value!r}: {_why(exc)}") from exc
    finally:
        os.close(fd)


def _why(exc: OSError) -> str:
    text = exc.strerror or str(exc)
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"{text} (tracing needs root: CAP_SYS_ADMIN)"
    return text


class TraceInstance:
    """Creates, configures and removes `<tracefs>/instances/<name>`."""

    def __init__(self, tracefs: Path, name: str = INSTANCE) -> None:
        if not name or "/" in name or name in (".", ".."):
            raise TracingError(f"instance name {name!r}: one path component expected")
        self.tracefs = tracefs
        self.path = tracefs / "instances" / name

    @property
    def trace_pipe(self) -> Path:
        return self.path / "trace_pipe"

    def raw_pipes(self) -> tuple[Path, ...]:
        """The per-CPU binary buffers (measured against trace_pipe: see tracefollow)."""
        return tuple(sorted((self.path / "per_cpu").glob("cpu*/trace_pipe_raw")))

    def check_events(self, events: Sequence[EventSetup]) -> None:
        """Every event must exist on this kernel: checked in the global events directory, so
        a missing one is said before anything is created."""
        for e in events:
            where = self.tracefs / "events" / e.system / e.name
            if not (where / "enable").exists():
                raise TracingError(
                    f"this kernel has no tracepoint {e.system}:{e.name} ({where} is absent)"
                )

    def start(self, events: Sequence[EventSetup], buffer_kb: int = BUFFER_KB) -> bool:
        """Remove a stale instance, create ours, set filters, enable events. Returns whether a
        stale instance (a killed agent's) was removed. On any error nothing is left behind."""
        self.check_events(events)
        stale = self.remove()
        try:
            os.mkdir(self.path)
        except OSError as exc:
            raise TracingError(f"{self.path}: cannot create the instance: {_why(exc)}") from exc
        try:
            _write(self.path / "buffer_size_kb", str(buffer_kb))
            # CLOCK_MONOTONIC: event times compare with time.monotonic() in the window.
            _write(self.path / "trace_clock", "mono")
            for e in events:
                base = self.path / "events" / e.system / e.name
                _write(base / "filter", e.filter or "0")
                _write(base / "enable", "1" if e.enabled else "0")
            _write(self.path / "tracing_on", "1")
        except TracingError:
            self.remove()
            raise
        return stale

    def enable(self, system: str, name: str, on: bool) -> None:
        """Enable or disable one event of OUR instance (its filter stays): the global events
        and other instances are not touched."""
        _write(self.path / "events" / system / name / "enable", "1" if on else "0")

    def remove(self) -> bool:
        """Remove the instance if it exists (the kernel disables its events). EBUSY means a
        process still reads its trace_pipe: a live agent, not a stale instance."""
        for _ in range(50):
            try:
                os.rmdir(self.path)
                return True
            except FileNotFoundError:
                return False
            except OSError as exc:
                if exc.errno != errno.EBUSY:
                    raise TracingError(f"{self.path}: cannot remove: {_why(exc)}") from exc
                last = exc
            # Our own reader may take a moment to close its pipe after stop().
            time.sleep(0.02)
        raise TracingError(
            f"{self.path}: in use ({last.strerror}): another process reads its trace_pipe "
            "(a second agent on this node?); not removed"
        )
