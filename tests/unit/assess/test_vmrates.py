"""vmstat counters as per-minute rates over a window (agent.assess.vmrates), from real /proc/vmstat
captures: the followed counters, allocstall summed over the zones, resets, the window."""

from __future__ import annotations

from pathlib import Path

from agent.assess.vmrates import followed, rates
from agent.kernel.vmstat import parse_vmstat

PROC = Path(__file__).resolve().parents[2] / "fixtures" / "proc"


def test_followed_counters_of_a_6_18_kernel_sum_allocstall_over_its_zones() -> None:
    vm = parse_vmstat((PROC / "vm-6.18-x86_64" / "vmstat").read_text())
    got = followed(vm)
    assert {"compact_stall", "compact_fail", "thp_fault_fallback_charge"} <= set(got)
    assert {"allocstall_dma32", "allocstall_normal", "allocstall_movable"} <= set(got)
    zones = [k for k in got if k.startswith("allocstall_")]
    assert got["allocstall"] == sum(got[k] for k in zones)
    assert "nr_free_pages" not in got


def test_an_old_kernel_with_one_allocstall_keeps_it() -> None:
    assert followed({"allocstall": 7, "compact_stall": 1}) == {"allocstall": 7, "compact_stall": 1}


def test_rates_are_per_minute_over_the_window_not_since_boot() -> None:
    big = 10_000_000  # since boot
    samples = [(0.0, {"compact_stall": big}), (30.0, {"compact_stall": big + 3})]
    samples += [(60.0, {"compact_stall": big + 6}), (120.0, {"compact_stall": big + 6})]
    r = rates(samples, 600)
    assert r is not None and r.per_minute("compact_stall") == 3.0 and r.seconds == 120
    # only the last minute: nothing happened in it
    r = rates(samples, 60)
    assert r is not None and r.per_minute("compact_stall") == 0.0


def test_no_rate_before_two_samples_a_second_apart() -> None:
    assert rates([], 600) is None
    assert rates([(5.0, {"compact_stall": 1})], 600) is None
    assert rates([(5.0, {"compact_stall": 1}), (5.5, {"compact_stall": 9})], 600) is None


def test_a_counter_that_went_down_restarted_and_counts_its_new_value() -> None:
    """A reboot under the series, or a wrap: never a negative rate."""
    samples = [(0.0, {"compact_fail": 500}), (60.0, {"compact_fail": 510})]
    samples += [(120.0, {"compact_fail": 4})]
    r = rates(samples, 600)
    assert r is not None and r.per_minute("compact_fail") == 7.0


def test_a_counter_missing_from_one_sample_adds_nothing_across_it() -> None:
    samples = [(0.0, {"pgmigrate_fail": 5}), (60.0, {}), (120.0, {"pgmigrate_fail": 9})]
    r = rates(samples, 600)
    assert r is not None and r.per_minute("pgmigrate_fail") is None
    samples.append((180.0, {"pgmigrate_fail": 12}))
    r = rates(samples, 600)
    assert r is not None and r.per_minute("pgmigrate_fail") == 1.0


def test_the_words_name_the_same_counters_whatever_the_numbers() -> None:
    a = rates(
        [
            (0.0, {"compact_stall": 0, "allocstall": 0}),
            (60.0, {"compact_stall": 2, "allocstall": 0}),
        ],
        600,
    )
    b = rates(
        [
            (0.0, {"compact_stall": 0, "allocstall": 0}),
            (60.0, {"compact_stall": 0, "allocstall": 0}),
        ],
        600,
    )
    assert a is not None and b is not None
    assert a.words() == "compact_stall 2.0, allocstall 0.0"
    assert b.words() == "compact_stall 0.0, allocstall 0.0"
