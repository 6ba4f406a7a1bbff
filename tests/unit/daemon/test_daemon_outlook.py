"""agent.daemon.outlook in the Agent, over the in-memory API and a fake clock: the trend of the
free blocks per NUMA node (FragmentationPredicted, its Event, its gauge) and the hugepage
readiness read at the pagetypeinfo cadence."""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from agent.daemon.outlook import MAX_KEPT, Trend
from agent.decide.ladder import Step
from agent.kernel.procfs import ProcReader
from agent.kernel.writes import ActionResult
from tests.unit.daemon.parts import HEALTHY, PROC
from tests.unit.daemon.test_daemon_loop import World, sample

HP_SYS = PROC.parent / "sys" / "vm-6.18-x86_64-hugepages" / "sys"
BASE = 876  # HEALTHY's node 0 free blocks of order >= 4 besides DMA32's order-10 blocks
LINE = BASE + 64 * 100  # crossed when DMA32 holds 100 order-10 blocks
PREDICTING: dict[str, dict[str, Any]] = {
    "assessment": {"fragmented_below_blocks": LINE, "at_risk_below_blocks": BASE + 64 * 400},
}
GAUGE = "memfrag_predicted_seconds_to_fragmented"


def with_order10(w: World, blocks: int) -> None:
    """HEALTHY's buddyinfo with DMA32's order-10 count (752 in the capture) set to `blocks`."""
    text = (PROC / HEALTHY / "buddyinfo").read_text()
    (w.host.root / "buddyinfo").write_text(text.replace(" 752 ", f" {blocks} "))


def run(w: World, counts: list[int]) -> list[dict[str, Any] | None]:
    conditions = []
    for k in counts:
        with_order10(w, k)
        w.tick(60)
        conditions.append(w.condition())
    return conditions


def test_a_falling_node_is_predicted_once_with_the_estimate_in_the_message(
    tmp_path: Path,
) -> None:
    w = World(tmp_path, PREDICTING)
    conds = run(w, list(range(300, 270, -1)))  # one order-10 block fewer a minute
    c = conds[-1]
    assert c is not None and c["status"] == "False"
    assert c["reason"] == "FragmentationPredicted"
    assert re.search(f"now about [0-9]+: below {LINE} in about [23]h[0-5][0-9]m", c["message"])
    assert w.events().count("FragmentationPredicted") == 1  # once per episode, not per tick
    seconds = sample(w.agent, GAUGE, {"numa_node": "0"})
    assert 2.5 * 3600 < seconds < 3.5 * 3600  # 171 blocks of order 10 at one a minute
    # the first ticks (too few samples, too short a span) do not predict
    assert conds[0] is not None and conds[0]["reason"] == "ContiguousMemoryLow"


@pytest.mark.parametrize("shape", ["flat", "noisy"])
def test_a_flat_or_noisy_series_does_not_change_the_condition(tmp_path: Path, shape: str) -> None:
    w = World(tmp_path, PREDICTING)
    rng = random.Random(16)
    counts = [250 if shape == "flat" else 250 + rng.randint(-20, 20) for _ in range(60)]
    conds = run(w, counts)
    assert {c["reason"] for c in conds if c is not None} == {"ContiguousMemoryLow"}
    assert "FragmentationPredicted" not in w.events()
    assert math.isnan(sample(w.agent, GAUGE, {"numa_node": "0"}))


def test_prediction_off_leaves_no_gauge_and_no_reason(tmp_path: Path) -> None:
    off = {"assessment": {**PREDICTING["assessment"], "prediction_enabled": False}}
    w = World(tmp_path, off)
    conds = run(w, list(range(300, 270, -1)))
    assert conds[-1] is not None and conds[-1]["reason"] == "ContiguousMemoryLow"
    assert w.agent.metrics.registry.get_sample_value(GAUGE, {"numa_node": "0"}) is None
    assert "FragmentationPredicted" not in w.events()


def test_a_finding_at_a_higher_order_does_not_enter_the_series(tmp_path: Path) -> None:
    """A tick raised to a kernel-log finding's order counts other blocks: left out."""
    w = World(tmp_path, PREDICTING)
    w.tick()
    a = w.agent.observer.last
    assert a is not None
    w.agent.outlook.trend.add(61.0, dataclasses.replace(a, order=9), w.agent.cfg)
    assert [len(s) for s in w.agent.outlook.trend.series.values()] == [1]


def hugepages(w: World, overcommit: int) -> None:
    shutil.copytree(HP_SYS, w.host.sys, dirs_exist_ok=True)
    pool = w.host.sys / "kernel" / "mm" / "hugepages" / "hugepages-2048kB"
    (pool / "nr_overcommit_hugepages").write_text(f"{overcommit}\n")


def test_hugepages_allocatable_per_size_and_node_and_a_pool_that_cannot_grow(
    tmp_path: Path,
) -> None:
    w = World(tmp_path)
    hugepages(w, overcommit=100_000)
    w.tick()
    assert (
        sample(w.agent, "memfrag_hugepages_allocatable", {"size_kib": "2048", "numa_node": "0"})
        == 1505
    )
    gigantic = w.agent.metrics.registry.get_sample_value(
        "memfrag_hugepages_allocatable", {"size_kib": "1048576", "numa_node": "0"}
    )
    assert gigantic is not None and math.isnan(gigantic)  # cut by migration: cannot tell
    c = w.condition()
    assert c is not None and c["status"] == "False"
    assert c["reason"] == "ContiguousMemoryAvailable"
    assert "hugepages-2048kB" in c["message"] and "cannot grow by 100000" in c["message"]
    # the pools are read at the pagetypeinfo cadence, not every tick
    hugepages(w, overcommit=0)
    w.tick(60)
    assert "cannot grow" in (w.condition() or {})["message"]
    w.tick(w.agent.cfg.sources.pagetypeinfo_interval_seconds)
    assert "cannot grow" not in (w.condition() or {})["message"]


def test_a_malformed_pool_file_is_logged_and_the_tick_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    w = World(tmp_path)
    hugepages(w, overcommit=100_000)
    (w.host.sys / "kernel" / "mm" / "hugepages" / "hugepages-2048kB" / "nr_hugepages").write_text(
        "lots\n"
    )
    with caplog.at_level(logging.ERROR, "memfrag.agent"):
        w.tick()
    said = [
        r.__dict__ for r in caplog.records if r.getMessage() == "cannot read the hugepage pools"
    ]
    assert len(said) == 1 and "nr_hugepages" in str(said[0]["error"])
    c = w.condition()
    assert c is not None and c["reason"] == "ContiguousMemoryAvailable"
    assert "hugepages" not in c["message"]
    assert (
        w.agent.metrics.registry.get_sample_value(
            "memfrag_hugepages_allocatable", {"size_kib": "2048", "numa_node": "0"}
        )
        is None
    )


def test_the_series_is_bounded_by_the_window_and_by_max_kept(tmp_path: Path) -> None:
    w = World(tmp_path, PREDICTING)
    w.tick()
    a, cfg = w.agent.observer.last, w.agent.cfg
    assert a is not None
    trend = Trend()
    window = cfg.assessment.prediction_window_seconds
    for i in range(20_000):  # a second apart: far more than MAX_KEPT in a window
        trend.add(i * 1.0, a, cfg)
    (series,) = trend.series.values()
    assert len(series) <= MAX_KEPT
    assert series[-1][0] - series[0][0] <= window
    # another fragmented line: the old samples counted against another line, start over
    moved = dataclasses.replace(
        cfg, assessment=dataclasses.replace(cfg.assessment, fragmented_below_blocks=LINE + 1)
    )
    trend.add(20_000.0, a, moved)
    assert [len(s) for s in trend.series.values()] == [1]


def test_act_on_prediction_compacts_the_numa_node_once_through_the_remediation_path(
    tmp_path: Path,
) -> None:
    """A falling node, idle (the capture's PSI is 0), with act_on_prediction: one compact-node
    run through the Remediator (node record, slot, Event), not one per tick."""
    more = {
        "assessment": PREDICTING["assessment"],
        "remediation": {"mode": "on", "act_on_prediction": True},
    }
    w = World(tmp_path, more)
    node0 = w.host.sys / "devices" / "system" / "node" / "node0"
    node0.mkdir(parents=True)
    (node0 / "compact").write_text("")
    (w.host.root / "pressure").mkdir()
    shutil.copy(PROC / HEALTHY / "pressure" / "memory", w.host.root / "pressure" / "memory")
    ran: list[str] = []

    def runner(step: Step, reader: ProcReader, timeout: float) -> ActionResult:
        ran.append(step.name)
        return ActionResult(True, 0.1)

    w.agent.remediator.runner = runner
    w.agent.remediator.settle = 0
    conds = run(w, list(range(300, 270, -1)))
    assert conds[-1] is not None and conds[-1]["reason"] == "FragmentationPredicted"
    assert ran == ["compact-node=0"]
    assert w.events().count("RemediationNoEffect") + w.events().count("RemediationSucceeded") == 1
    assert w.kube is not None
    (said,) = [
        o["message"]
        for k, o in w.kube.objects.items()
        if "/events/" in k and o["reason"].startswith("Remediation")
    ]
    assert "ahead of the predicted fragmentation" in said and "recovered" not in said
    assert (
        sample(
            w.agent,
            "memfrag_remediation_actions_total",
            {"action": "compact-node=0", "result": "no_effect"},
        )
        + sample(
            w.agent,
            "memfrag_remediation_actions_total",
            {"action": "compact-node=0", "result": "ok"},
        )
        == 1
    )


def vmstat_fallback(w: World, n: int) -> None:
    path = w.host.root / "vmstat"
    text = path.read_text()
    path.write_text(
        re.sub(r"^thp_fault_fallback [0-9]+$", f"thp_fault_fallback {n}", text, flags=re.M)
    )


def test_thp_fallback_rate_in_the_message_when_high(tmp_path: Path) -> None:
    """thp_fault_fallback per minute from the vmstat rates (agent.daemon.vmrates): said in the
    condition's message only above assessment.thp_fallback_high_per_minute."""
    w = World(tmp_path, {"assessment": {"thp_fallback_high_per_minute": 100}})
    rate = "memfrag_vmstat_rate_per_minute"
    vmstat_fallback(w, 1000)
    w.tick()
    vmstat_fallback(w, 1090)
    w.tick(60)
    assert sample(w.agent, rate, {"counter": "thp_fault_fallback"}) == 90.0
    assert "fell back to small pages" not in (w.condition() or {})["message"]
    vmstat_fallback(w, 1390)
    w.tick(60)
    assert sample(w.agent, rate, {"counter": "thp_fault_fallback"}) == 195.0  # 390 in 2 min
    msg = (w.condition() or {})["message"]
    assert "transparent huge page faults fell back to small pages 195 times a minute" in msg


def test_hugepage_targets_in_gauges_and_the_message(tmp_path: Path) -> None:
    w = World(tmp_path, {"assessment": {"hugepage_targets": "2M=64,2M=20000@0,1G=2"}})
    hugepages(w, overcommit=0)
    w.tick()
    g = "memfrag_hugepages_target"
    assert sample(w.agent, g, {"size_kib": "2048", "numa_node": "all"}) == 64
    assert sample(w.agent, g, {"size_kib": "2048", "numa_node": "0"}) == 20000
    short = "memfrag_hugepages_shortfall"
    assert sample(w.agent, short, {"size_kib": "2048", "numa_node": "all"}) == 0  # holds 64
    assert sample(w.agent, short, {"size_kib": "2048", "numa_node": "0"}) == 20000 - 64
    msg = (w.condition() or {})["message"]
    assert (
        "hugepages-2048kB (2 MiB) on NUMA node 0: holds 64 of the target 20000, 1505 could be "
        "allocated now: it cannot grow by 19936" in msg
    )
    assert "target 64" not in msg  # met: no news
    assert "hugepages-1048576kB (1 GiB): holds 0 of the target 2" not in msg  # cannot tell
