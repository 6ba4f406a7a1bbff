"""What comes next, per NUMA node: the trend of the free blocks at the target order (a bounded
series per node, agent.assess.predict each tick) and how many hugepages could be allocated now
(the pools under /sys re-read at the pagetypeinfo cadence, agent.assess.hugepages) against the
configured targets. They only report: they feed the tick's Facts and their gauges, and never
act."""

from __future__ import annotations

import logging
import math
from collections import deque
from pathlib import Path

from agent.assess.hugepages import (
    HugepageReadiness,
    TargetReadiness,
    readiness,
    target_readiness,
)
from agent.assess.predict import Prediction, Sample, predict
from agent.assess.verdict import Assessment
from agent.base.errors import MemfragError
from agent.config.model import Config
from agent.config.targets import parse_targets
from agent.daemon.metrics import Metrics
from agent.kernel.hugepages import read_hugepages
from agent.kernel.observation import Observation

log = logging.getLogger("memfrag.agent")
MAX_KEPT = 1440  # samples per NUMA node, whatever the window and the poll interval


class Trend:
    """Per NUMA node, (monotonic, blocks at the target order) over the prediction window: at most
    MAX_KEPT samples (thinned to one per window/MAX_KEPT), none older than the window. A change
    of the target order or of the fragmented line starts the series over: the old samples count
    something else."""

    def __init__(self) -> None:
        self.series: dict[int, deque[Sample]] = {}
        self._basis: tuple[int, int] | None = None

    def add(self, now: float, a: Assessment, cfg: Config) -> None:
        c = cfg.assessment
        if a.order != c.target_order:
            return  # a tick raised to a kernel-log finding's order: not this series' count
        basis = (c.target_order, c.fragmented_below_blocks)
        if basis != self._basis:
            self.series.clear()
            self._basis = basis
        window = c.prediction_window_seconds
        gap = window / MAX_KEPT
        for n in a.numa:
            s = self.series.setdefault(n.node, deque(maxlen=MAX_KEPT))
            if s and now - s[-1][0] < gap:
                continue
            s.append((now, n.blocks_at_target))
        for node in list(self.series):
            s = self.series[node]
            while s and now - s[0][0] > window:
                s.popleft()
            if not s:  # a node no assessment names any more
                del self.series[node]

    def predict(self, now: float, cfg: Config) -> dict[int, Prediction | None]:
        c = cfg.assessment
        return predict(
            self.series,
            now,
            c.fragmented_below_blocks,
            c.prediction_window_seconds,
            c.prediction_horizon_seconds,
        )


class Outlook:
    """The daemon's part: the trend and the hugepage readiness, with their gauges."""

    def __init__(self, sys_root: str | Path, metrics: Metrics) -> None:
        self.sys_root = sys_root
        self.metrics = metrics
        self.trend = Trend()
        self.hugepages: HugepageReadiness | None = None
        self.targets: tuple[TargetReadiness, ...] = ()
        self._read_at = -1e18

    def predictions(self, now: float, a: Assessment | None, cfg: Config) -> tuple[Prediction, ...]:
        """Record this tick's assessment and predict; the gauge gets every node with a series
        (NaN: no estimate), none while prediction is off."""
        gauge = self.metrics.predicted_seconds
        if not cfg.assessment.prediction_enabled:
            self.trend.series.clear()
            gauge.clear()
            return ()
        if a is not None:
            self.trend.add(now, a, cfg)
        out = self.trend.predict(now, cfg)
        gauge.clear()
        for node, p in out.items():
            gauge.labels(str(node)).set(math.nan if p is None else p.seconds_to_fragmented)
        return tuple(p for p in out.values() if p is not None)

    def readiness(
        self, now: float, obs: Observation | None, cfg: Config
    ) -> HugepageReadiness | None:
        """The pools re-read every sources.pagetypeinfo_interval_seconds against that tick's
        buddyinfo and zoneinfo; the last reading stands in between. A malformed pool file is
        logged and leaves the gauge empty: never a crash, never a stale number."""
        if obs is None or now - self._read_at < cfg.sources.pagetypeinfo_interval_seconds:
            return self.hugepages
        self._read_at = now
        gauge = self.metrics.hugepages_allocatable
        gauge.clear()
        try:
            pools = read_hugepages(self.sys_root)
        except MemfragError as exc:
            log.error("cannot read the hugepage pools", extra={"error": str(exc)})
            self.hugepages, self.targets = None, ()
            self.metrics.hugepages_target.clear()
            self.metrics.hugepages_shortfall.clear()
            return None
        self.hugepages = readiness(obs.buddy, obs.zoneinfo, pools, obs.page_size)
        for n in self.hugepages.nodes:
            value = math.nan if n.allocatable is None else n.allocatable
            gauge.labels(str(n.size_kib), str(n.node)).set(value)
        # validated with the config: a parse error here cannot happen
        self.targets = target_readiness(
            self.hugepages, parse_targets(cfg.assessment.hugepage_targets)
        )
        self.metrics.hugepages_target.clear()
        self.metrics.hugepages_shortfall.clear()
        for t in self.targets:
            labels = (str(t.size_kib), "all" if t.numa_node is None else str(t.numa_node))
            self.metrics.hugepages_target.labels(*labels).set(t.target)
            self.metrics.hugepages_shortfall.labels(*labels).set(t.shortfall)
        return self.hugepages
