"""Prediction: when will a NUMA node's free blocks at the target order cross the fragmented line?

Pure. The input is the samples the daemon keeps per NUMA node: (monotonic seconds, free blocks
of order >= N, as assess() counts them). Fragmentation builds up over hours to days; what must
not predict is noise, a flat series, and the saw-tooth that compaction makes. So:

- only the window (default one hour) before `now` is read;
- an upward jump (remediation, kcompactd, memory freed by an exiting job) starts a new segment:
  the trend is read after the last jump only, because what came before no longer describes the
  node;
- the trend is Theil-Sen's (the median of the pairwise slopes: one sample in three may be wild
  without moving it), and it must be significant: the Mann-Kendall test on the segment, one-sided
  at about 1 % (|z| > 2.33), so a flat or noisy series does not predict;
- and the fall over the segment must exceed twice the series' scatter around the trend (the
  median absolute residual): a significant but tiny slope under wide noise is no forecast;
- the fitted line must cross the line (`fragmented_below`) within the horizon (default 6 h).

`predict_node` returns None for "no prediction" and a `Prediction` otherwise; the daemon turns it
into the reason FragmentationPredicted, the Event and the gauge
memfrag_predicted_seconds_to_fragmented{numa_node}.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

Sample = tuple[float, int]  # (monotonic seconds, free blocks at the target order)

WINDOW_SECONDS = 3600.0
HORIZON_SECONDS = 6 * 3600.0
MIN_SAMPLES = 8
MIN_SPAN_SECONDS = 600.0  # a trend read over less than 10 minutes is a wiggle
Z_CRITICAL = 2.33  # one-sided Mann-Kendall, about 1 %
MAX_SAMPLES = 400  # Theil-Sen is quadratic: thin longer series evenly
JUMP_MIN_BLOCKS = 16


@dataclass(frozen=True)
class Prediction:
    node: int
    seconds_to_fragmented: float  # 0: already at or below the line
    slope_per_hour: float  # blocks per hour, negative
    level_now: float  # the trend's value at `now`
    threshold: int
    samples: int  # in the segment read
    span_seconds: float
    z: float  # Mann-Kendall statistic (negative: falling)

    def message(self) -> str:
        """One line for the condition message and the Event."""
        return (
            f"NUMA node {self.node}: free blocks at the target order falling "
            f"{-self.slope_per_hour:.0f}/h (Theil-Sen over {self.span_seconds / 60:.0f} min, "
            f"{self.samples} samples), now about {self.level_now:.0f}: below {self.threshold} "
            f"in about {_duration(self.seconds_to_fragmented)}"
        )


def _duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    return f"{minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m"


def _median(values: Sequence[float]) -> float:
    s = sorted(values)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2


def last_segment(samples: Sequence[Sample], jump_min: int = JUMP_MIN_BLOCKS) -> list[Sample]:
    """The samples after the last upward jump: a rise between two neighbours larger than both
    `jump_min` blocks and five times the median absolute step (the series' own noise)."""
    if len(samples) < 3:
        return list(samples)
    steps = [b[1] - a[1] for a, b in itertools.pairwise(samples)]
    noise = _median([abs(s) for s in steps])
    limit = max(jump_min, 5 * noise)
    start = 0
    for i, step in enumerate(steps):
        if step > limit:
            start = i + 1
    return list(samples[start:])


def _thin(samples: Sequence[Sample], limit: int = MAX_SAMPLES) -> list[Sample]:
    if len(samples) <= limit:
        return list(samples)
    step = len(samples) / limit
    picked = [samples[int(i * step)] for i in range(limit - 1)]
    return [*picked, samples[-1]]


def theil_sen(samples: Sequence[Sample]) -> tuple[float, float]:
    """(slope per second, intercept): the median pairwise slope, the median residual."""
    slopes = [
        (b[1] - a[1]) / (b[0] - a[0])
        for i, a in enumerate(samples)
        for b in samples[i + 1 :]
        if b[0] != a[0]
    ]
    if not slopes:
        return 0.0, float(_median([y for _, y in samples])) if samples else 0.0
    slope = _median(slopes)
    return slope, _median([y - slope * t for t, y in samples])


def mann_kendall_z(samples: Sequence[Sample]) -> float:
    """The Mann-Kendall trend statistic (normal approximation, ties ignored in the variance:
    that only makes the test stricter for a series of repeated counts).

    S, the sum of sign(y_j - y_i) over all pairs i < j, is counted with a sorted list of the
    values before each j (two bisections each), not pair by pair: over an hour of 15 s polls
    (240 samples) the pairwise loop cost an idle agent ~5 ms a tick, more than the rest of it."""
    n = len(samples)
    if n < 3:
        return 0.0
    s = 0
    before: list[int | float] = []
    for _, y in samples:
        s += bisect.bisect_left(before, y) - (len(before) - bisect.bisect_right(before, y))
        bisect.insort(before, y)
    var = n * (n - 1) * (2 * n + 5) / 18
    if s == 0:
        return 0.0
    return (s - 1 if s > 0 else s + 1) / math.sqrt(var)


def predict_node(
    node: int,
    samples: Sequence[Sample],
    now: float,
    fragmented_below: int,
    window: float = WINDOW_SECONDS,
    horizon: float = HORIZON_SECONDS,
) -> Prediction | None:
    """The estimate for one NUMA node, or None when the series does not say it will cross the
    line within the horizon (too short, flat, noisy, rising, or crossing later)."""
    recent = sorted(
        ((t, y) for t, y in samples if now - window <= t <= now and math.isfinite(t)),
        key=lambda s: s[0],
    )
    seg = _thin(last_segment(recent))
    if len(seg) < MIN_SAMPLES:
        return None
    span = seg[-1][0] - seg[0][0]
    if span < min(MIN_SPAN_SECONDS, window / 2):
        return None
    z = mann_kendall_z(seg)
    if z > -Z_CRITICAL:
        return None  # no significant fall: the quadratic Theil-Sen fit is not needed
    slope, intercept = theil_sen(seg)
    if slope >= 0:
        return None
    scatter = _median([abs(y - (intercept + slope * t)) for t, y in seg])
    if -slope * span < 2 * scatter:
        return None
    level = intercept + slope * now
    if seg[-1][1] < fragmented_below or level < fragmented_below:
        eta = 0.0
    else:
        eta = (fragmented_below - intercept) / slope - now
    if eta > horizon:
        return None
    return Prediction(
        node=node,
        seconds_to_fragmented=max(0.0, eta),
        slope_per_hour=slope * 3600,
        level_now=level,
        threshold=fragmented_below,
        samples=len(seg),
        span_seconds=span,
        z=z,
    )


def predict(
    series: Mapping[int, Sequence[Sample]],
    now: float,
    fragmented_below: int,
    window: float = WINDOW_SECONDS,
    horizon: float = HORIZON_SECONDS,
) -> dict[int, Prediction | None]:
    """predict_node for every NUMA node: the gauge gets one value per node (None: no estimate)."""
    return {
        node: predict_node(node, samples, now, fragmented_below, window, horizon)
        for node, samples in sorted(series.items())
    }
