"""The daemon's vmstat rates: each tick's /proc/vmstat counters (the followed ones) into a
bounded series, their per-minute rates over assessment.vmstat_window_seconds into
memfrag_vmstat_rate_per_minute{counter} and the tick's facts. No rate before two samples a second
apart; a tick whose vmstat could not be read adds nothing."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Gauge

from agent.assess.vmrates import VmstatRates, followed, rates

MAX_SAMPLES = 4096  # a day of 15 s polls is 5,760: the window's time bound prunes first


class VmRates:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.samples: deque[tuple[float, dict[str, int]]] = deque(maxlen=MAX_SAMPLES)
        self.gauge = Gauge(
            "memfrag_vmstat_rate_per_minute",
            "/proc/vmstat counters (compaction stalls and failures, direct reclaim stalls, THP "
            "fault fallbacks, failed migrations, kswapd's quick low-watermark hits) per minute "
            "over assessment.vmstat_window_seconds; allocstall is the zones' sum",
            ["counter"],
            registry=registry,
        )

    def update(
        self, now: float, vmstat: Mapping[str, int] | None, window: float
    ) -> VmstatRates | None:
        if vmstat is not None:
            self.samples.append((now, followed(vmstat)))
        while self.samples and now - self.samples[0][0] > window:
            self.samples.popleft()
        got = rates(tuple(self.samples), window)
        for r in got.rates if got is not None else ():
            self.gauge.labels(r.counter).set(r.per_minute)
        return got

    def recent(self) -> VmstatRates | None:
        """The rates over the last poll alone (the two newest samples): what rose since."""
        return rates(tuple(self.samples)[-2:], math.inf)
