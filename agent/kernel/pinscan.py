"""Reads VmPin from /proc/PID/status a bounded number of processes per call (parsed by
agent.kernel.pininfo), resuming where the last call stopped: a node with thousands of processes
is read over several ticks, never all at once."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from agent.base.errors import ParseError
from agent.base.files import read_text
from agent.kernel.pininfo import PinHolder, SkipReason, parse_status_pin


class PinScanner:
    def __init__(
        self, proc_root: str | Path = "/proc", on_skip: Callable[[SkipReason], None] | None = None
    ) -> None:
        self.proc = Path(proc_root)
        self.on_skip = on_skip
        self._after = 0  # the last pid read; the next call starts above it
        self._known: dict[int, PinHolder] = {}  # pids with VmPin > 0, as last read
        self.skipped: Counter[SkipReason] = Counter()  # since start, by reason

    def _pids(self) -> list[int]:
        try:
            names = os.listdir(self.proc)
        except OSError:
            return []
        return sorted(int(n) for n in names if n.isdigit())

    def scan(self, max_procs: int) -> tuple[PinHolder, ...]:
        """Read up to `max_procs` processes' status files after the last one read (wrapping at
        the end), and return every holder with VmPin > 0 known so far, largest first. A
        process that vanished or whose file is malformed is skipped and counted."""
        pids = self._pids()
        live = set(pids)
        for gone in [p for p in self._known if p not in live]:
            del self._known[gone]
        todo = [p for p in pids if p > self._after][:max_procs]
        if len(todo) < max_procs:  # the end of this pass: the rest from the start
            todo += [p for p in pids if p <= self._after][: max_procs - len(todo)]
        for pid in todo:
            self._after = pid
            self._known.pop(pid, None)
            path = self.proc / str(pid) / "status"
            try:
                got = parse_status_pin(read_text(path, limit=1 << 16), str(path))
            except (FileNotFoundError, ProcessLookupError):
                self._skip(SkipReason.VANISHED)
                continue
            except OSError:
                self._skip(SkipReason.UNREADABLE)
                continue
            except (ParseError, ValueError):
                self._skip(SkipReason.MALFORMED)
                continue
            if got is None:
                self._skip(SkipReason.NO_MM)
                continue
            comm, pinned = got
            if pinned > 0:
                self._known[pid] = PinHolder(pid, comm, pinned)
        return tuple(sorted(self._known.values(), key=lambda h: (-h.pinned_bytes, h.pid)))

    def _skip(self, reason: SkipReason) -> None:
        self.skipped[reason] += 1
        if self.on_skip is not None:
            self.on_skip(reason)
