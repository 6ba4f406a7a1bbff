"""What the tracepoints said over a window: failed high-order allocations, pageblock steals
(who pollutes), compaction cost, and the pods' unmovable kernel memory. Pure.

The kernel log prints at most one allocation failure per 10 s and none with __GFP_NOWARN; the
trace sees every one. Labels stay bounded: processes and cgroups are a top-N per window with
the rest summed as "other", never one entry per process.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from agent.kernel.cgroupinfo import CgroupPaths, KernelMemory, pod_uid
from agent.kernel.trace import (
    CompactionBegin,
    CompactionEnd,
    DirectCompaction,
    Extfrag,
    Lost,
    MigrateType,
    PageAlloc,
    SlowPath,
    TraceEvent,
)

TOP_N = 5
MAX_TOP_N = 50


class CompactionKind(enum.Enum):
    DIRECT = "direct"  # an allocation compacting for itself (the task stalls)
    KCOMPACTD = "kcompactd"  # the per-node background thread (woken or proactive)
    MANUAL = "manual"  # a write to compact_memory or a node's compact (the agent's remediation)


@dataclass(frozen=True)
class Who:
    """A process as the trace names it, with the cgroup it is charged to and its pod."""

    comm: str
    cgroup: str | None
    pod_uid: str | None


@dataclass(frozen=True)
class Ranked:
    who: Who
    count: int


@dataclass(frozen=True)
class OrderCount:
    order: int
    failed: int
    silent: int


@dataclass(frozen=True)
class StealCount:
    alloc: MigrateType
    fallback: MigrateType
    count: int


@dataclass(frozen=True)
class CompactionCost:
    node: int | None  # NUMA node of the zone; None when the zone is not known
    kind: CompactionKind
    runs: int
    seconds: float  # summed durations: how long tasks stalled (direct) or compacted
    longest: float
    results: tuple[tuple[str, int], ...]  # compact_result name -> runs


@dataclass(frozen=True)
class TraceSummary:
    seconds: float
    min_order: int
    failed: int
    silent: int
    by_order: tuple[OrderCount, ...]
    failing: tuple[Ranked, ...]  # top processes whose allocations failed
    failing_other: int
    steals: int
    steals_by_type: tuple[StealCount, ...]
    polluters: tuple[Ranked, ...]  # top processes stealing pageblocks
    polluters_other: int
    compaction: tuple[CompactionCost, ...]
    unpaired: int  # compaction begins or ends whose other half is outside the window
    lost: int  # events the ring buffer overwrote: every count above is then a lower bound
    dropped: int = 0  # events the window did not keep (its memory bound): the same
    # allocations at or above min_order that entered the allocator's slow path (kswapd woken,
    # direct reclaim or compaction, compaction deferred): what arms the failure counter
    slow_path: int = 0

    def sentence(self) -> str:
        """The condition message's sentence."""
        noun = "allocation" if self.failed == 1 else "allocations"
        text = (
            f"{self.failed} high-order {noun} failed in the last {span(self.seconds)}, "
            f"{self.silent} of them silent"
        )
        missed = self.lost + self.dropped
        return text + (f" (at least: {missed} trace events lost)" if missed else "")


def span(seconds: float) -> str:
    if seconds >= 90:
        minutes = round(seconds / 60)
        return f"{minutes} minutes"
    whole = round(seconds)
    return "1 second" if whole == 1 else f"{whole} seconds"


def summarize(
    events: Iterable[TraceEvent],
    seconds: float,
    min_order: int,
    cgroups: Mapping[int, CgroupPaths | None],
    zone_nodes: Mapping[int, int],
    top_n: int = TOP_N,
    dropped: int = 0,
) -> TraceSummary:
    """Aggregate the events of one window, in the order the trace gave them.

    `cgroups` maps a pid to its cgroups as read when the event arrived (None: gone);
    `zone_nodes` maps a zone's start pfn to its NUMA node (from /proc/zoneinfo); `dropped`
    counts events the caller could not keep (TraceWindow's bound).
    """
    top_n = max(1, min(top_n, MAX_TOP_N))
    orders: Counter[tuple[int, bool]] = Counter()
    failing: Counter[Who] = Counter()
    steals: Counter[tuple[MigrateType, MigrateType]] = Counter()
    polluters: Counter[Who] = Counter()
    compaction = CompactionPairer(zone_nodes)
    runs: list[CompactionRun] = []
    lost = slow = 0
    for e in events:
        if isinstance(e, PageAlloc):
            if e.failed and e.order >= min_order:
                orders[(e.order, e.silent)] += 1
                failing[_who(e.head.comm, cgroups.get(e.head.pid))] += 1
        elif isinstance(e, Extfrag):
            if e.fragmenting or e.change_ownership:
                steals[(e.alloc_migratetype, e.fallback_migratetype)] += 1
                polluters[_who(e.head.comm, cgroups.get(e.head.pid))] += 1
        elif isinstance(e, Lost):
            lost += e.count
        elif isinstance(e, SlowPath):
            slow += e.order >= min_order
        else:
            slow += isinstance(e, DirectCompaction) and e.order >= min_order
            run = compaction.add(e)
            if run is not None:
                runs.append(run)
    by_order = tuple(
        OrderCount(o, orders[(o, False)] + orders[(o, True)], orders[(o, True)])
        for o in sorted({o for o, _ in orders})
    )
    top_failing, failing_other = _top(failing, top_n)
    top_polluters, polluters_other = _top(polluters, top_n)
    return TraceSummary(
        seconds=seconds,
        min_order=min_order,
        failed=sum(orders.values()),
        silent=sum(n for (_, silent), n in orders.items() if silent),
        by_order=by_order,
        failing=top_failing,
        failing_other=failing_other,
        steals=sum(steals.values()),
        steals_by_type=tuple(
            StealCount(a, f, n) for (a, f), n in sorted(steals.items(), key=lambda kv: -kv[1])
        ),
        polluters=top_polluters,
        polluters_other=polluters_other,
        compaction=compaction_costs(runs),
        unpaired=compaction.unpaired(),
        lost=lost,
        dropped=dropped,
        slow_path=slow,
    )


def _who(comm: str, paths: CgroupPaths | None) -> Who:
    path = paths.path if paths is not None else None
    return Who(comm, path, pod_uid(path) if path else None)


def _top(counts: Counter[Who], n: int) -> tuple[tuple[Ranked, ...], int]:
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0].comm, kv[0].cgroup or ""))
    top = tuple(Ranked(w, c) for w, c in ranked[:n])
    return top, sum(c for _, c in ranked[n:])


@dataclass(frozen=True)
class CompactionRun:
    """One zone's compaction, begin to end, on the trace clock."""

    node: int | None
    kind: CompactionKind
    began: float
    ended: float
    status: str

    @property
    def seconds(self) -> float:
        return max(0.0, self.ended - self.began)


class CompactionPairer:
    """Pairs begin and end per task (one task compacts one zone at a time) and tells direct
    compaction from kcompactd's and a manual one: a direct compaction follows the task's
    try_to_compact_pages and visits each zone of its zonelist at most once. Fed in trace order,
    by the window's summary and, event by event, by the daemon's compaction metrics. Bounded:
    at most MAX_OPEN tasks between a begin and its end."""

    MAX_OPEN = 4096

    def __init__(self, zone_nodes: Mapping[int, int]) -> None:
        self.zone_nodes = zone_nodes
        self.direct: dict[int, set[int]] = {}  # pid -> zones compacted since the marker
        self.open: dict[int, tuple[CompactionBegin, CompactionKind]] = {}
        self.orphans = 0

    def add(self, e: CompactionBegin | CompactionEnd | DirectCompaction) -> CompactionRun | None:
        """The run an end completes; None for anything else (or an end without its begin)."""
        pid = e.head.pid
        if isinstance(e, DirectCompaction):
            self.direct[pid] = set()
            _bound(self.direct, self.MAX_OPEN)
        elif isinstance(e, CompactionBegin):
            if pid in self.open:
                self.orphans += 1
            self.open[pid] = (e, self._kind(e))
            self.orphans += _bound(self.open, self.MAX_OPEN)
        else:
            begun = self.open.pop(pid, None)
            if begun is None or begun[0].zone_start != e.zone_start:
                self.orphans += 1
                return None
            node = self.zone_nodes.get(e.zone_start)
            return CompactionRun(
                node, begun[1], begun[0].head.timestamp, e.head.timestamp, e.status
            )
        return None

    def _kind(self, e: CompactionBegin) -> CompactionKind:
        if e.head.comm.startswith("kcompactd"):
            return CompactionKind.KCOMPACTD
        zones = self.direct.get(e.head.pid)
        if zones is not None and e.zone_start not in zones:
            zones.add(e.zone_start)
            return CompactionKind.DIRECT
        self.direct.pop(e.head.pid, None)
        return CompactionKind.MANUAL

    def unpaired(self) -> int:
        return self.orphans + len(self.open)


def _bound(d: dict[int, Any], n: int) -> int:
    """Drop the oldest entries beyond n; how many went."""
    gone = 0
    while len(d) > n:
        del d[next(iter(d))]
        gone += 1
    return gone


def compaction_costs(runs: Iterable[CompactionRun]) -> tuple[CompactionCost, ...]:
    """Runs summed per NUMA node and kind (unknown node last)."""
    grouped: dict[tuple[int | None, CompactionKind], list[CompactionRun]] = {}
    for r in runs:
        grouped.setdefault((r.node, r.kind), []).append(r)
    out = []
    for (node, kind), rs in sorted(
        grouped.items(), key=lambda kv: (kv[0][0] is None, kv[0][0] or 0, kv[0][1].value)
    ):
        results = Counter(r.status for r in rs)
        out.append(
            CompactionCost(
                node,
                kind,
                len(rs),
                sum(r.seconds for r in rs),
                max(r.seconds for r in rs),
                tuple(sorted(results.items())),
            )
        )
    return tuple(out)


@dataclass(frozen=True)
class PodKernelMemory:
    pod_uid: str
    memory: KernelMemory


def top_pods(by_pod: Mapping[str, KernelMemory], n: int = TOP_N) -> tuple[PodKernelMemory, ...]:
    """The pods holding the most unmovable kernel memory, largest first."""
    ranked = sorted(by_pod.items(), key=lambda kv: (-kv[1].total, kv[0]))
    return tuple(PodKernelMemory(uid, km) for uid, km in ranked[: max(1, min(n, MAX_TOP_N))])
