"""Pure helpers of the benchmarks: percentiles, rates, /proc/PID/stat, Prometheus text, histogram
quantiles and the fleet projection. No I/O here, so tests/unit/test_bench_stats.py covers it."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence

WRITE_VERBS = frozenset({"POST", "PUT", "PATCH", "DELETE", "DELETECOLLECTION", "APPLY"})
LONG_RUNNING_VERBS = frozenset({"WATCH", "CONNECT"})

Labels = tuple[tuple[str, str], ...]
Series = tuple[str, Labels]  # (metric name, sorted label pairs)


def percentile(values: Iterable[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between closest ranks (numpy's
    default 'linear' method). Raises ValueError on no values."""
    xs = sorted(values)
    if not xs:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} outside 0..100")
    pos = (len(xs) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summarize(values: Sequence[float]) -> dict[str, float]:
    """n, min, p50, p90, p99, max and mean of a sample (empty: just n=0)."""
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "min": min(values),
        "p50": percentile(values, 50),
        "p90": percentile(values, 90),
        "p99": percentile(values, 99),
        "max": max(values),
        "mean": sum(values) / len(values),
    }


def per_hour(count: float, seconds: float) -> float:
    """A count observed over `seconds`, scaled to one hour."""
    if seconds <= 0:
        raise ValueError("window must be positive")
    return count * 3600.0 / seconds


def cpu_percent(ticks: float, clk_tck: float, wall_seconds: float) -> float:
    """CPU time (utime+stime clock ticks) over a wall-clock window, as percent of one core."""
    if wall_seconds <= 0 or clk_tck <= 0:
        raise ValueError("wall time and clock ticks must be positive")
    return 100.0 * ticks / clk_tck / wall_seconds


def proc_stat_ticks(stat: str) -> int:
    """utime + stime (fields 14 and 15) from the text of /proc/PID/stat. The command name (field
    2) may hold spaces and parentheses, so fields are counted from its last ')'."""
    rest = stat.rsplit(")", 1)[1].split()
    # rest[0] is field 3 (state): field n is rest[n - 3]
    return int(rest[14 - 3]) + int(rest[15 - 3])


def vm_rss_kib(status: str) -> int:
    """VmRSS in KiB from the text of /proc/PID/status (0 if absent: a zombie)."""
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+\d+)?$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_prometheus(text: str, prefixes: tuple[str, ...] = ("",)) -> dict[Series, float]:
    """Samples of the Prometheus text format whose metric name starts with one of `prefixes`."""
    out: dict[Series, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#") or not line.startswith(prefixes):
            continue
        m = _SAMPLE.match(line.strip())
        if m is None:
            continue
        name, _, body, value = m.group(1), m.group(2), m.group(3), m.group(4)
        labels = tuple(sorted((k, v.replace('\\"', '"')) for k, v in _LABEL.findall(body or "")))
        try:
            out[(name, labels)] = float(value)
        except ValueError:
            continue
    return out


def delta(before: Mapping[Series, float], after: Mapping[Series, float]) -> dict[Series, float]:
    """Counter increase per series (a series first seen in `after` started at 0); a decrease
    (a restarted server) counts from 0."""
    out: dict[Series, float] = {}
    for key, value in after.items():
        d = value - before.get(key, 0.0)
        out[key] = value if d < 0 else d
    return out


def label(series: Series, name: str) -> str:
    return dict(series[1]).get(name, "")


def request_counts(samples: Mapping[Series, float]) -> dict[tuple[str, str, str], float]:
    """apiserver_request_total summed by (verb, resource, subresource); requests to
    non-resource URLs (/readyz, /metrics) are left out."""
    out: dict[tuple[str, str, str], float] = {}
    for s, v in samples.items():
        if s[0] != "apiserver_request_total" or not label(s, "resource"):
            continue
        key = (label(s, "verb"), label(s, "resource"), label(s, "subresource"))
        out[key] = out.get(key, 0.0) + v
    return out


def subtract_background(
    observed: Mapping[tuple[str, str, str], float],
    background_per_s: Mapping[tuple[str, str, str], float],
    seconds: float,
    exact: Mapping[tuple[str, str, str], float] | None = None,
) -> dict[tuple[str, str, str], float]:
    """Take the API server's own traffic out of a window's counts, per series: first what is
    known exactly (`exact`: e.g. its identity Lease renewals, counted by watch events), then a
    background rate times the window, rounded; floored at 0. Zero series are dropped."""
    out: dict[tuple[str, str, str], float] = {}
    for key, count in observed.items():
        rest = count - (exact or {}).get(key, 0.0)
        rest = max(0.0, rest - round(background_per_s.get(key, 0.0) * seconds))
        if rest:
            out[key] = rest
    return out


def total(counts: Mapping[tuple[str, str, str], float], writes_only: bool = False) -> float:
    return sum(v for k, v in counts.items() if not writes_only or k[0] in WRITE_VERBS)


def histogram_buckets(
    samples: Mapping[Series, float], name: str, exclude_verbs: frozenset[str] = frozenset()
) -> list[tuple[float, float]]:
    """Cumulative (upper bound, count) buckets of histogram `name`, summed over every series
    whose verb is not excluded; sorted by bound, +Inf last."""
    acc: dict[float, float] = {}
    for s, v in samples.items():
        if s[0] != f"{name}_bucket" or label(s, "verb") in exclude_verbs:
            continue
        le = label(s, "le")
        bound = math.inf if le == "+Inf" else float(le)
        acc[bound] = acc.get(bound, 0.0) + v
    return sorted(acc.items())


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """Prometheus' histogram_quantile (q in 0..1) over cumulative buckets: linear interpolation
    inside the bucket the rank falls in; the highest finite bound if it falls in +Inf. None when
    the histogram holds no observations."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    count = buckets[-1][1]
    rank = q * count
    prev_bound, prev_count = 0.0, 0.0
    for bound, cum in buckets:
        if cum >= rank:
            if math.isinf(bound):
                return prev_bound
            if cum == prev_count:
                return bound
            return prev_bound + (bound - prev_bound) * (rank - prev_count) / (cum - prev_count)
        prev_bound, prev_count = bound, cum
    return prev_bound


def slope_through_origin(points: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope b of y = b*x (no intercept): sum(x*y) / sum(x*x). With one point it
    is y/x. This is the per-node rate when requests scale linearly with nodes."""
    sxx = sum(x * x for x, _ in points)
    if sxx <= 0:
        raise ValueError("need at least one point with x != 0")
    return sum(x * y for x, y in points) / sxx


def project(per_node: float, nodes: int) -> float:
    """Linear projection of a per-node rate to a fleet: rate(N) = N * per_node."""
    return per_node * nodes


def npd_heartbeat_writes_per_hour(heartbeat_s: float) -> float:
    """node-problem-detector's steady state: one nodes/status PATCH per heartbeat period."""
    return 3600.0 / heartbeat_s


def sustains(
    overruns: int,
    unsynced: int,
    api_errors: int,
    apiserver_p99_s: float | None,
    client_p99_s: float | None,
    latency_limit_s: float = 1.0,
) -> tuple[bool, list[str]]:
    """Whether a simulated fleet kept up, and why not: every cycle finished within its poll
    interval, every informer synced, no API call failed, and the API server's p99 latency for
    non-watch requests (server side and as the agents saw it) stayed under `latency_limit_s`
    (the Kubernetes API call latency SLO is 1 s at p99 for single-object calls)."""
    why: list[str] = []
    if overruns:
        why.append(f"{overruns} cycle(s) finished later than one poll interval after due")
    if unsynced:
        why.append(f"{unsynced} informer(s) never synced or lost their watch")
    if api_errors:
        why.append(f"{api_errors} API call(s) failed")
    for what, p99 in (("server", apiserver_p99_s), ("client", client_p99_s)):
        if p99 is not None and p99 > latency_limit_s:
            why.append(f"{what}-side p99 request latency {p99 * 1000:.0f} ms > {latency_limit_s}s")
    return (not why, why)
