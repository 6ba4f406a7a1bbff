"""The kernel's compaction, reclaim and THP event counters (/proc/vmstat) as rates per minute
over a recent window, not since boot: a node that stalled in compaction an hour after boot and
never since has a large compact_stall and a rate of 0. Pure.

The counters followed are fixed (COUNTERS, and every allocstall_<zone> the kernel prints, plus
their sum as `allocstall`), so the metric's label set is bounded by the kernel's zone names. A
counter that goes down between two samples restarted (a reboot under a snapshot, a wrap): the
increase over that step is its new value, as Prometheus' rate() counts it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise

COUNTERS = (
    "compact_stall",
    "compact_fail",
    "compact_success",
    "thp_fault_fallback",
    "thp_fault_fallback_charge",  # since Linux 5.9: where present
    "pgmigrate_fail",
    "kswapd_low_wmark_hit_quickly",
)
ALLOCSTALL = "allocstall"  # the zones' allocstall_<zone> summed (one allocstall before 4.8)
MAX_ZONES = 8  # the kernel's zone types: DMA, DMA32, Normal, HighMem, Movable, Device


SHOWN = ("compact_stall", "compact_fail", "allocstall", "thp_fault_fallback")


@dataclass(frozen=True)
class Rate:
    counter: str
    per_minute: float


@dataclass(frozen=True)
class VmstatRates:
    seconds: float  # the span the rates are over (the window, shorter while young)
    window: float  # the window asked for: the message's words, which must not move
    rates: tuple[Rate, ...]

    def per_minute(self, counter: str) -> float | None:
        return next((r.per_minute for r in self.rates if r.counter == counter), None)

    def words(self) -> str:
        """The condition message's part: the same counters every time (their numbers move,
        the words do not, so the condition is not rewritten for a new rate)."""
        shown = [(c, self.per_minute(c)) for c in SHOWN]
        return ", ".join(f"{c} {v:.1f}" for c, v in shown if v is not None)


def followed(vmstat: Mapping[str, int]) -> dict[str, int]:
    """The counters of one /proc/vmstat reading this module follows, with `allocstall` the sum
    of the zones' (or the old kernel's single allocstall)."""
    out = {k: vmstat[k] for k in COUNTERS if k in vmstat}
    zones = sorted(k for k in vmstat if k.startswith(ALLOCSTALL + "_"))[:MAX_ZONES]
    for k in zones:
        out[k] = vmstat[k]
    if zones:
        out[ALLOCSTALL] = sum(vmstat[k] for k in zones)
    elif ALLOCSTALL in vmstat:
        out[ALLOCSTALL] = vmstat[ALLOCSTALL]
    return out


def rates(samples: Sequence[tuple[float, Mapping[str, int]]], window: float) -> VmstatRates | None:
    """Per-minute rates over the samples (monotonic seconds, `followed` counters) of the last
    `window` seconds before the newest one; None until two samples span a second or more. A
    counter missing from a sample contributes no increase across it."""
    if not samples:
        return None
    newest = samples[-1][0]
    recent = [(t, c) for t, c in samples if newest - t <= window]
    if len(recent) < 2 or newest - recent[0][0] < 1.0:
        return None
    span = newest - recent[0][0]
    increase: dict[str, int] = {}
    for (_, before), (_, after) in pairwise(recent):
        for name, value in after.items():
            old = before.get(name)
            if old is None:
                continue
            increase[name] = increase.get(name, 0) + (value - old if value >= old else value)
    names = [n for n in (*COUNTERS, ALLOCSTALL) if n in increase]
    names += sorted(n for n in increase if n not in names)
    return VmstatRates(span, window, tuple(Rate(n, increase[n] * 60.0 / span) for n in names))
