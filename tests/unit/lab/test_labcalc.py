"""The lab's pure helpers (lab/labcalc.py) on text recorded in the lab's guest."""

from __future__ import annotations

import pytest

from lab.labcalc import (
    blocks_ge,
    cpu_busy_ticks,
    in_windows,
    kcompactd_score,
    latency_summary,
    log_ts_seconds,
    metric_by,
    metric_sum,
    parse_buddyinfo,
    parse_metrics,
    parse_zoneinfo_present,
    percentile,
    proactive_wmark_high,
    proc_cpu_ticks,
    share,
    show,
)

# /proc/buddyinfo of the 2-node guest (768 MiB, node 1 made fragmented)
BUDDY = """\
Node 0, zone      DMA      1      1      1      0      2      1      1      0      1      1      3
Node 0, zone    DMA32    190    125     74     40     17     10      5      3      2      1     61
Node 1, zone    DMA32  46123    712      9      3      1      0      0      0      0      0      0
"""


def test_buddyinfo_blocks_per_node_without_the_isa_dma_zone() -> None:
    rows = parse_buddyinfo(BUDDY)
    assert [(n, z) for n, z, _ in rows] == [(0, "DMA"), (0, "DMA32"), (1, "DMA32")]
    node0 = 17 + 10 * 2 + 5 * 4 + 3 * 8 + 2 * 16 + 1 * 32 + 61 * 64
    assert blocks_ge(rows, node=0) == node0
    assert blocks_ge(rows, node=1) == 1
    assert blocks_ge(rows) == node0 + 1
    assert blocks_ge(rows, order=9, node=0) == 1 + 61 * 2


def test_a_buddyinfo_line_of_another_shape_is_named() -> None:
    with pytest.raises(ValueError, match="unexpected line 'Node 0, zone DMA32 x'"):
        parse_buddyinfo("Node 0, zone DMA32 x\n")


ZONEINFO = """\
Node 0, zone      DMA
  per-node stats
      nr_inactive_anon 12
  pages free     3975
        boost    0
        min      21
        spanned  4095
        present  3998
        managed  3976
Node 0, zone    DMA32
  pages free     2000
        present  126960
        managed  113000
Node 0, zone   Normal
  pages free     0
        spanned  0
        present  0
"""


def test_kcompactd_score_is_the_kernels_weighted_extfrag_for_order_9() -> None:
    present = parse_zoneinfo_present(ZONEINFO)
    assert present == {(0, "DMA"): 3998, (0, "DMA32"): 126960, (0, "Normal"): 0}
    rows = parse_buddyinfo(BUDDY)
    # DMA: 391 of 3975 free pages outside order>=9 blocks: extfrag 9, weight 3998/130959: 0;
    # DMA32: 2864 of 65840: extfrag 4, weight 126960/130959: 3
    assert kcompactd_score(rows, present, 0) == 3
    # node 1: every free page in order-0..4 blocks: 100, all of the node's present pages
    assert kcompactd_score(rows, {(1, "DMA32"): 98304}, 1) == 98304 * 100 // 98305
    assert kcompactd_score([(0, "DMA32", [0] * 11)], present, 0) == 0  # nothing free: 0
    assert proactive_wmark_high(20) == 90
    assert proactive_wmark_high(90) == 20
    assert proactive_wmark_high(100) == 15


METRICS = """\
# HELP memfrag_remediation_actions_total Remediation actions
# TYPE memfrag_remediation_actions_total counter
memfrag_remediation_actions_total{action="drop-caches=1",result="ok"} 1.0
memfrag_remediation_actions_total{action="compact",result="no_effect"} 1.0
memfrag_remediation_actions_created{action="compact",result="no_effect"} 1.7e+09
memfrag_traced_allocation_failures_total{order="9",silent="true"} 32.0
memfrag_traced_allocation_failures_total{order="4",silent="false"} 12.0
memfrag_kernel_log_findings_total{kind="page_allocation_failure",order="4"} 10.0
memfrag_verdict{verdict="fragmented"} 1.0
memfrag_verdict{verdict="healthy"} 0.0
garbage line {
memfrag_bad_value NaNx
"""


def test_metrics_text_sums_and_groups() -> None:
    s = parse_metrics(METRICS)
    assert metric_sum(s, "memfrag_traced_allocation_failures_total") == 44
    assert metric_sum(s, "memfrag_traced_allocation_failures_total", silent="true") == 32
    assert metric_sum(s, "memfrag_nothing") == 0
    assert metric_by(s, "memfrag_remediation_actions_total", "action", "result") == {
        "drop-caches=1/ok": 1.0,
        "compact/no_effect": 1.0,
    }
    assert metric_by(s, "memfrag_verdict", "verdict") == {"fragmented": 1.0}
    assert not any(n == "memfrag_bad_value" for n, _, _ in s)


def test_proc_stat_cpu_ticks_with_a_comm_that_has_spaces_and_parentheses() -> None:
    stat = "77 (kcompactd0) S 2 0 0 0 -1 2129984 0 0 0 0 13 250 0 0 20 0 1 0 9 0 0"
    assert proc_cpu_ticks(stat) == 263
    odd = "42 (a (b) c) R 1 42 42 0 -1 4194304 100 0 0 0 7 5 0 0 20 0 3 0 50 0 0"
    assert proc_cpu_ticks(odd) == 12


def test_latency_over_the_windows_a_fix_ran_in() -> None:
    samples = [(t / 10, 0.0001) for t in range(100)] + [(5.05, 0.2), (9.5, 0.05)]
    assert percentile([], 99) is None
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0
    assert percentile([float(i) for i in range(1, 101)], 99) == 99.0
    assert len(in_windows(samples, [(5.0, 5.1)])) == 3
    got = latency_summary(samples, [(5.0, 5.1)])
    assert got == {"workload_p99_ms": 200.0, "workload_max_ms": 200.0, "workload_samples": 3}
    assert latency_summary(samples, [(20.0, 30.0)])["workload_p99_ms"] is None


def test_share_of_the_seed_fix() -> None:
    assert share(780, 1246) == 0.63
    assert share(3.0, 0) is None and share(None, 5) is None


def test_show_checks_the_issues_claims() -> None:
    rows: list[dict[str, object]] = [
        {"scenario": "reclaimable", "strategy": "seed", "workload_p99_ms": 30.0},
        {
            "scenario": "reclaimable",
            "strategy": "agent",
            "recovered": True,
            "blocks_vs_seed": 0.63,
            "cache_vs_seed": 0.0,
            "workload_p99_ms": 20.0,
        },
        {"scenario": "numa", "strategy": "seed"},
        {
            "scenario": "numa",
            "strategy": "agent",
            "recovered": True,
            "blocks_vs_seed": 0.9,
            "actions": ["compact-node=1"],
        },
        {
            "scenario": "hopeless",
            "strategy": "agent",
            "actions": ["drop-caches=1", "compact"],
            "agent_events": [
                {"reason": "RemediationNotPossible", "message": "23.2 MiB long-term pinned"},
                {"reason": "Other"},
            ],
        },
    ]

    assert show(rows) == [
        "reclaimable: recovered yes, blocks 0.63 of seed's SHORT, cache dropped 0.0 of seed's "
        "ok, stall p99 20.0 vs seed 30.0 ms lower",
        "numa: recovered yes, blocks 0.9 of seed's ok, actions ['compact-node=1'] one node only",
        "hopeless: 2 action(s) ok (seed: 2), RemediationNotPossible said 1 time(s): "
        "23.2 MiB long-term pinned",
    ]


def test_cpu_busy_ticks_per_cpu_without_idle_and_iowait() -> None:
    stat = (
        "cpu  300 0 100 5000 20 5 5 0 0 0\n"
        "cpu0 200 0 50 2000 10 3 2 0 0 0\n"
        "cpu1 100 0 50 3000 10 2 3 1 0 0\n"
        "intr 12345 0 0\n"
    )
    assert cpu_busy_ticks(stat) == {0: 255, 1: 156}


def test_the_daemons_log_timestamp_in_epoch_seconds() -> None:
    assert log_ts_seconds("1970-01-01T00:01:40.250Z") == 100.25
    assert log_ts_seconds("07:40:01") is None
