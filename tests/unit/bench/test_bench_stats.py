"""bench.stats and bench.npd's pure parts: percentiles, rates, /proc and Prometheus parsing,
histogram quantiles, the fleet projection and NPD's write decision. No cluster, no timing."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.npd import Cond, ConditionManager, default_conditions, status_patch
from bench.stats import (
    cpu_percent,
    delta,
    histogram_buckets,
    histogram_quantile,
    npd_heartbeat_writes_per_hour,
    parse_prometheus,
    per_hour,
    percentile,
    proc_stat_ticks,
    project,
    request_counts,
    slope_through_origin,
    subtract_background,
    summarize,
    sustains,
    total,
    vm_rss_kib,
)

floats = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)


def test_percentile_interpolates_between_ranks() -> None:
    xs = [15.0, 20.0, 35.0, 40.0, 50.0]
    assert percentile(xs, 0) == 15.0
    assert percentile(xs, 100) == 50.0
    assert percentile(xs, 50) == 35.0
    assert percentile(xs, 40) == pytest.approx(29.0)  # numpy.percentile(xs, 40)
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0  # order of input does not matter
    assert percentile([7.0], 99) == 7.0


def test_percentile_p99_of_fifty_trials_sits_between_the_two_largest() -> None:
    xs = [float(i) for i in range(1, 51)]
    assert percentile(xs, 99) == pytest.approx(49.51)


def test_percentile_rejects_nothing_and_out_of_range() -> None:
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 101)


@given(st.lists(floats, min_size=1, max_size=50), st.floats(0, 100), st.floats(0, 100))
def test_percentile_is_monotone_and_bounded(xs: list[float], q1: float, q2: float) -> None:
    lo, hi = sorted((q1, q2))
    a, b = percentile(xs, lo), percentile(xs, hi)
    assert min(xs) - 1e-6 <= a <= b + 1e-6
    assert b <= max(xs) + 1e-6


def test_summarize() -> None:
    assert summarize([]) == {"n": 0}
    s = summarize([1.0, 2.0, 3.0, 4.0])
    assert s["n"] == 4 and s["min"] == 1.0 and s["max"] == 4.0
    assert s["p50"] == 2.5 and s["mean"] == 2.5


def test_rates() -> None:
    assert per_hour(1, 300) == 12.0
    assert per_hour(0, 300) == 0.0
    assert cpu_percent(150, 100, 30) == pytest.approx(5.0)  # 1.5 s of CPU in 30 s
    with pytest.raises(ValueError):
        per_hour(1, 0)
    with pytest.raises(ValueError):
        cpu_percent(1, 100, 0)


def test_proc_stat_ticks_counts_from_the_last_parenthesis() -> None:
    stat = "4242 (memfrag (agent) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 37 5 0 0 20 0 7 0"
    assert proc_stat_ticks(stat) == 42  # utime 37 + stime 5


def test_vm_rss() -> None:
    assert vm_rss_kib("Name:\tpython\nVmRSS:\t   49152 kB\nThreads:\t7\n") == 49152
    assert vm_rss_kib("Name:\tzombie\n") == 0


METRICS = """\
# HELP apiserver_request_total Counter of apiserver requests
# TYPE apiserver_request_total counter
apiserver_request_total{code="200",resource="nodes",subresource="status",verb="PATCH"} 7
apiserver_request_total{code="409",resource="nodes",subresource="status",verb="PATCH"} 1
apiserver_request_total{code="200",resource="leases",subresource="",verb="PUT"} 30
apiserver_request_total{code="200",resource="",subresource="/readyz",verb="GET"} 3
apiserver_request_total{code="200",resource="nodes",subresource="",verb="WATCH"} 2
apiserver_request_duration_seconds_bucket{resource="nodes",verb="PATCH",le="0.005"} 6
apiserver_request_duration_seconds_bucket{resource="nodes",verb="PATCH",le="0.01"} 8
apiserver_request_duration_seconds_bucket{resource="nodes",verb="PATCH",le="+Inf"} 8
apiserver_request_duration_seconds_bucket{resource="nodes",verb="WATCH",le="0.005"} 0
apiserver_request_duration_seconds_bucket{resource="nodes",verb="WATCH",le="0.01"} 0
apiserver_request_duration_seconds_bucket{resource="nodes",verb="WATCH",le="+Inf"} 2
other_metric{a="b"} 1
"""


def test_prometheus_parsing_and_request_counts() -> None:
    samples = parse_prometheus(METRICS, ("apiserver_",))
    assert all(name.startswith("apiserver_") for name, _ in samples)
    counts = request_counts(samples)
    assert counts == {
        ("PATCH", "nodes", "status"): 8.0,  # codes summed
        ("PUT", "leases", ""): 30.0,
        ("WATCH", "nodes", ""): 2.0,  # /readyz (no resource) left out
    }
    assert total(counts) == 40.0
    assert total(counts, writes_only=True) == 38.0


def test_parse_prometheus_handles_escaped_quotes() -> None:
    samples = parse_prometheus('m{path="a\\"b",x="y"} 2.5\n')
    assert samples == {("m", (("path", 'a"b'), ("x", "y"))): 2.5}


def test_delta_counts_new_series_from_zero_and_survives_a_reset() -> None:
    k1, k2 = ("c", (("a", "1"),)), ("c", (("a", "2"),))
    assert delta({k1: 5.0}, {k1: 8.0, k2: 3.0}) == {k1: 3.0, k2: 3.0}
    assert delta({k1: 9.0}, {k1: 2.0}) == {k1: 2.0}  # a restarted server starts at 0


def test_subtract_background_exact_first_then_rate() -> None:
    observed = {("PUT", "leases", ""): 31.0, ("PATCH", "nodes", "status"): 1.0}
    exact = {("PUT", "leases", ""): 30.0}
    assert subtract_background(observed, {}, 300, exact) == {
        ("PUT", "leases", ""): 1.0,
        ("PATCH", "nodes", "status"): 1.0,
    }
    rate = {("PUT", "leases", ""): 0.1}
    assert subtract_background(observed, rate, 300) == {
        ("PUT", "leases", ""): 1.0,
        ("PATCH", "nodes", "status"): 1.0,
    }
    assert subtract_background(observed, rate, 300, exact) == {("PATCH", "nodes", "status"): 1.0}


def test_histogram_quantile_like_prometheus() -> None:
    buckets = [(0.005, 6.0), (0.01, 8.0), (math.inf, 8.0)]
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.005 * 4 / 6)
    assert histogram_quantile(0.99, buckets) == pytest.approx(0.005 + 0.005 * (7.92 - 6) / 2)
    assert histogram_quantile(0.99, [(0.1, 1.0), (math.inf, 10.0)]) == 0.1  # in +Inf
    assert histogram_quantile(0.5, [(0.1, 0.0), (math.inf, 0.0)]) is None
    assert histogram_quantile(0.5, []) is None


def test_histogram_buckets_leave_out_watches() -> None:
    samples = parse_prometheus(METRICS, ("apiserver_",))
    b = histogram_buckets(samples, "apiserver_request_duration_seconds", frozenset({"WATCH"}))
    assert b == [(0.005, 6.0), (0.01, 8.0), (math.inf, 8.0)]
    with_watch = histogram_buckets(samples, "apiserver_request_duration_seconds")
    assert with_watch[-1] == (math.inf, 10.0)


def test_projection_is_linear_through_the_origin() -> None:
    assert slope_through_origin([(100, 0.5)]) == 0.005
    # exactly linear data: the slope is recovered
    assert slope_through_origin([(100, 1.0), (1000, 10.0), (5000, 50.0)]) == pytest.approx(0.01)
    # least squares weights the large levels: sum(xy)/sum(xx)
    assert slope_through_origin([(1, 2.0), (2, 2.0)]) == pytest.approx(6 / 5)
    assert project(0.01, 5000) == pytest.approx(50.0)
    with pytest.raises(ValueError):
        slope_through_origin([])


@given(st.floats(1e-6, 10), st.lists(st.integers(1, 10000), min_size=1, max_size=5))
def test_projection_recovers_any_per_node_rate(rate: float, ns: list[int]) -> None:
    slope = slope_through_origin([(n, rate * n) for n in ns])
    assert slope == pytest.approx(rate)
    assert project(slope, 5000) == pytest.approx(5000 * rate)


def test_npd_model() -> None:
    assert npd_heartbeat_writes_per_hour(300) == 12.0
    assert npd_heartbeat_writes_per_hour(60) == 60.0


def test_sustains() -> None:
    assert sustains(0, 0, 0, 0.02, 0.05) == (True, [])
    ok, why = sustains(2, 1, 3, 1.5, None)
    assert not ok
    assert len(why) == 4 and "server-side p99" in why[3]
    assert sustains(0, 0, 0, None, None) == (True, [])


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_npd_writes_on_change_and_on_heartbeat_only() -> None:
    clock = Clock()
    written: list[dict[str, Cond]] = []
    m = ConditionManager(written.append, clock=clock, heartbeat=300)
    conds = default_conditions(0.0)
    for c in conds.values():
        m.update(c)
    assert m.tick()  # first sync: everything is new
    assert len(written[-1]) == 5
    for _ in range(299):
        clock.t += 1
        assert not m.tick()  # nothing changed, no heartbeat due
    clock.t += 1
    assert m.tick()  # 300 s after the last write
    mf = conds["MemoryFragmented"]
    m.update(Cond(mf.type, "True", "HighOrderAllocationFailure", "order:4", 5.0))
    clock.t += 1
    assert m.tick()
    assert written[-1]["MemoryFragmented"].status == "True"
    assert len(written[-1]) == 5  # ALL conditions, every time
    m.update(written[-1]["MemoryFragmented"])  # the same value again is no change
    clock.t += 1
    assert not m.tick()
    assert m.writes == 3


def test_npd_patch_carries_every_condition_with_a_new_heartbeat() -> None:
    patch = status_patch(default_conditions(0.0), 3600.0)
    conds = patch["status"]["conditions"]
    assert [c["type"] for c in conds] == [
        "KernelDeadlock",
        "ReadonlyFilesystem",
        "XfsShutdown",
        "CorruptDockerOverlay2",
        "MemoryFragmented",
    ]
    assert {c["lastHeartbeatTime"] for c in conds} == {"1970-01-01T01:00:00Z"}
    assert {c["lastTransitionTime"] for c in conds} == {"1970-01-01T00:00:00Z"}


def test_tracing_rounds_ratio_is_the_median_of_back_to_back_pairs() -> None:
    """A burst of load on one round spoils its pair only, whichever side it fell on."""
    from bench.tracing import Rounds

    r = Rounds(off=(1.0, 1.0, 5.0, 1.0, 1.0), on=(1.01, 1.02, 1.0, 9.0, 1.01))
    assert r.pair_ratios == (1.01, 1.02, 0.2, 9.0, 1.01)
    assert r.ratio == 1.01
    assert r.ratio_of_minimums == 1.0


def test_tracing_states_are_interleaved_in_rotated_order_and_compared_pair_by_pair() -> None:
    """Off, disarmed, armed: every state once per round, who goes first rotating, so a drift
    of the machine's load falls on all three."""
    from bench.tracing import Sample, State, interleaved, versus

    seen: list[State] = []
    cost = {State.OFF: 1.0, State.DISARMED: 1.0, State.ARMED: 1.06}
    now = [State.OFF]

    def set_state(s: State) -> None:
        now[0] = s
        seen.append(s)

    got = interleaved(lambda: Sample(cost[now[0]], cost[now[0]]), set_state, 3)
    off, dis, arm = State.OFF, State.DISARMED, State.ARMED
    assert seen == [off, dis, arm, dis, arm, off, arm, off, dis, off]  # then back to off
    assert {s: len(x) for s, x in got.items()} == dict.fromkeys(State, 3)
    assert versus(got, State.DISARMED)[0].ratio == 1.0
    assert abs(versus(got, State.ARMED)[0].ratio - 1.06) < 1e-9


def test_condition_writes_are_read_from_the_agents_log_within_the_window() -> None:
    from bench.run import condition_writes

    log = "\n".join(
        [
            '{"ts": "2026-12-02T03:09:06.249Z", "msg": "condition written", "status": "False",'
            ' "reason": "ContiguousMemoryAvailable", "text": "start"}',
            "garbage {",
            '{"ts": "2026-12-02T03:20:00.000Z", "msg": "started"}',
            '{"ts": "2026-12-02T03:25:00.5Z", "msg": "condition written", "status": "False",'
            ' "reason": "FragmentationPredicted", "text": "later"}',
            '{"ts": "nope", "msg": "condition written"}',
        ]
    )
    start = 1_796_181_000.0  # 2026-12-02T03:10:00Z
    got = condition_writes(log, start, start + 3600)
    assert [(w["reason"], w["text"]) for w in got] == [("FragmentationPredicted", "later")]
