"""agent.assess.predict: falling series predict, flat, noisy, rising and jumpy ones do not."""

from __future__ import annotations

import random
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.assess.predict import (
    Sample,
    last_segment,
    mann_kendall_z,
    predict,
    predict_node,
    theil_sen,
)

SERIES = Path(__file__).resolve().parents[2] / "fixtures" / "series"
NOW = 100_000.0


def line(level_now: float, per_hour: float, n: int = 120, step: float = 30.0) -> list[Sample]:
    """n samples ending at NOW, falling (or rising) `per_hour` blocks per hour."""
    return [
        (NOW - (n - 1 - i) * step, round(level_now + per_hour * (n - 1 - i) * step / 3600))
        for i in range(n)
    ]


def test_steady_decline_predicts_the_crossing() -> None:
    # 1000 blocks now, -200/h, line at 64: (1000 - 64) / 200 h = 4.68 h
    p = predict_node(0, line(1000, 200), NOW, 64)
    assert p is not None
    assert abs(p.seconds_to_fragmented - 4.68 * 3600) < 120
    assert abs(p.slope_per_hour + 200) < 2
    assert p.node == 0 and p.threshold == 64
    assert "falling 200/h" in p.message() and "below 64 in about 4h4" in p.message()


def test_crossing_beyond_the_horizon_is_no_prediction() -> None:
    assert predict_node(0, line(10_000, 200), NOW, 64) is None  # ~50 h away
    assert predict_node(0, line(10_000, 200), NOW, 64, horizon=60 * 3600) is not None


def test_flat_series_does_not_predict() -> None:
    assert predict_node(0, [(NOW - i * 30, 500) for i in range(120)], NOW, 64) is None


def test_noisy_flat_series_does_not_predict() -> None:
    rng = random.Random(16)
    for _ in range(200):
        noisy = [(NOW - i * 30, 500 + rng.randint(-200, 200)) for i in range(120)]
        assert predict_node(0, noisy, NOW, 64) is None


def test_noisy_decline_still_predicts() -> None:
    rng = random.Random(7)
    noisy = [(t, y + rng.randint(-30, 30)) for t, y in line(600, 300)]
    p = predict_node(0, noisy, NOW, 64)
    assert p is not None and 1.2 * 3600 < p.seconds_to_fragmented < 2.4 * 3600


def test_rising_series_does_not_predict() -> None:
    assert predict_node(0, line(1000, -200), NOW, 64) is None


def test_too_short_or_too_few_samples_do_not_predict() -> None:
    assert predict_node(0, line(1000, 2000, n=5), NOW, 64) is None
    assert predict_node(0, line(1000, 2000, n=30, step=10), NOW, 64) is None  # 5 minutes


def test_a_jump_starts_a_new_segment() -> None:
    # falling fast, then compaction lifts the count by 3000 and it stays flat: no prediction
    before = [(t - 1800, y) for t, y in line(2000, 3000, n=60)]
    after = [(NOW - (59 - i) * 30, 5000) for i in range(60)]
    series = before + after
    assert len(last_segment(series)) == 60
    assert predict_node(0, series, NOW, 64) is None
    # without the jump the same fall would predict
    assert predict_node(0, [(t + 1800, y) for t, y in before], NOW, 64) is not None


def test_already_below_the_line_is_zero() -> None:
    p = predict_node(0, line(40, 300), NOW, 64)
    assert p is not None and p.seconds_to_fragmented == 0.0


def test_samples_outside_the_window_are_ignored() -> None:
    old_fall = [(t - 7200, y) for t, y in line(1000, 400)]
    flat = [(NOW - i * 30, 700) for i in range(60)]
    assert predict_node(0, old_fall + flat, NOW, 64) is None


def test_per_numa_node() -> None:
    out = predict({0: line(1000, 200), 1: [(NOW - i * 30, 900) for i in range(120)]}, NOW, 64)
    assert out[0] is not None and out[1] is None


def test_recorded_series_from_this_machine_does_not_predict() -> None:
    """Order >= 4 free blocks of this VM's Normal zone every 2 s for 3 minutes while other
    sessions ran (tests/fixtures/series/README.md): a busy but steady node must not predict."""
    samples = [
        (float(t), int(float(y)))
        for t, y in (
            row.split() for row in (SERIES / "vm-6.18-normal-order4.txt").read_text().splitlines()
        )
    ]
    now = samples[-1][0]
    assert predict_node(0, samples, now, 64, window=180) is None


def test_theil_sen_and_mann_kendall_on_a_line() -> None:
    pts = [(float(i), 10 - 2 * i) for i in range(10)]
    assert theil_sen(pts) == (-2.0, 10.0)
    assert mann_kendall_z(pts) < -3
    assert mann_kendall_z([(float(i), 5) for i in range(10)]) == 0.0


@settings(max_examples=60, deadline=None)
@given(
    level=st.integers(200, 5000),
    per_hour=st.integers(50, 2000),
    offset=st.integers(0, 10_000),
)
def test_property_an_offset_moves_level_and_line_together(
    level: int, per_hour: int, offset: int
) -> None:
    base = predict_node(0, line(level, per_hour), NOW, 64)
    moved = predict_node(0, [(t, y + offset) for t, y in line(level, per_hour)], NOW, 64 + offset)
    assert (base is None) == (moved is None)
    if base is not None and moved is not None:
        assert abs(base.seconds_to_fragmented - moved.seconds_to_fragmented) < 1e-6 * 3600 + 1


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 100_000), min_size=8, max_size=150))
def test_property_a_series_that_never_falls_never_predicts(steps: list[int]) -> None:
    level, series = 100, []
    for i, rise in enumerate(steps):
        level += rise
        series.append((NOW - (len(steps) - 1 - i) * 60.0, level))
    assert predict_node(0, series, NOW, 64) is None


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(min_value=-5, max_value=5), max_size=60))
def test_mann_kendall_counts_every_pair_as_the_definition_does(ys: list[int]) -> None:
    """S counted with bisections equals the sum of sign(y_j - y_i) over every pair i < j."""
    import math

    n = len(ys)
    s = sum((b > a) - (b < a) for i, a in enumerate(ys) for b in ys[i + 1 :])
    want = (
        0.0
        if n < 3 or s == 0
        else (s - 1 if s > 0 else s + 1) / math.sqrt(n * (n - 1) * (2 * n + 5) / 18)
    )
    assert mann_kendall_z([(float(i), y) for i, y in enumerate(ys)]) == want
