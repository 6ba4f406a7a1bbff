"""Measured vm tunables in the Agent (agent.daemon.tuner), over the in-memory API, a fake clock
and a /proc/sys/vm of plain files: the slot, the original in the node's record before the write,
kept or rolled back with an Event, restored on stop and after a crash, one node at a time."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from agent.daemon.loop import Agent
from agent.kube import paths
from agent.kube.leases import TRIAL, TUNED, node_record_name
from tests.unit.daemon.test_daemon_loop import World, sample
from tests.unit.daemon.test_daemon_outlook import with_order10

TRIAL_S = 120
TUNING: dict[str, dict[str, Any]] = {
    "remediation": {"mode": "on", "apply_tunables": True, "tunables_trial_seconds": TRIAL_S},
}


def knobs(w: World, **values: int) -> Path:
    vm = w.host.root / "sys" / "vm"
    vm.mkdir(parents=True, exist_ok=True)
    for name, v in values.items():
        (vm / name).write_text(f"{v}\n")
    return vm


def knob(w: World, name: str) -> int:
    return int((w.host.root / "sys" / "vm" / name).read_text())


def record(w: World, node: str = "n1") -> dict[str, str]:
    assert w.kube is not None
    lease = w.kube.objects.get(paths.lease("ns", node_record_name(node))) or {}
    return dict((lease.get("metadata") or {}).get("annotations") or {})


def slots(w: World) -> list[str]:
    assert w.kube is not None
    return [k for k in w.kube.objects if "/leases/memfrag-tunables-" in k]


def messages(w: World, reason: str) -> list[str]:
    assert w.kube is not None
    return [
        str(o.get("message"))
        for k, o in w.kube.objects.items()
        if "/events/" in k and o.get("reason") == reason
    ]


def through_baseline(w: World) -> None:
    """The first tick takes the slot, a window later the trial value is written."""
    with_order10(w, 300)
    w.tick()
    assert slots(w) and knob(w, "watermark_scale_factor") == 10  # measuring, nothing written
    for _ in range(TRIAL_S // 60):
        w.tick(60)


def test_a_knob_that_helps_is_kept_with_an_event(tmp_path: Path) -> None:
    w = World(tmp_path, TUNING)
    knobs(w, watermark_scale_factor=10)
    through_baseline(w)
    assert knob(w, "watermark_scale_factor") == 100
    trial = json.loads(record(w)[TRIAL])
    assert (trial["name"], trial["original"], trial["value"]) == ("watermark_scale_factor", 10, 100)
    assert messages(w, "TunableTrialStarted")
    with_order10(w, 400)  # more free blocks with the knob on
    for _ in range(TRIAL_S // 60):
        w.tick(60)
    assert knob(w, "watermark_scale_factor") == 100
    (kept,) = messages(w, "TunableKept")
    assert "vm.watermark_scale_factor=100 kept (was 10)" in kept and "before: blocks" in kept
    assert TRIAL not in record(w) and json.loads(record(w)[TUNED]) == [
        ["watermark_scale_factor", "kept"]
    ]
    assert not slots(w)  # the slot is given back
    trials = "memfrag_tunable_trials_total"
    assert sample(w.agent, trials, {"tunable": "watermark_scale_factor", "result": "kept"}) == 1
    assert sample(w.agent, trials, {"tunable": "extfrag_threshold", "result": "kept"}) == 0
    w.tick(60)
    assert not slots(w)  # nothing left to try (the knob is at the recommended value now)


def test_a_knob_that_does_not_help_is_rolled_back(tmp_path: Path) -> None:
    w = World(tmp_path, TUNING)
    knobs(w, watermark_scale_factor=10)
    through_baseline(w)
    for _ in range(TRIAL_S // 60):
        w.tick(60)
    assert knob(w, "watermark_scale_factor") == 10
    (back,) = messages(w, "TunableRolledBack")
    assert "100 -> 10: rolled back, it did not help" in back
    assert json.loads(record(w)[TUNED]) == [["watermark_scale_factor", "rolled_back"]]
    for _ in range(3):  # never tried again
        w.tick(60)
    assert not slots(w) and knob(w, "watermark_scale_factor") == 10


def test_stop_mid_trial_restores_the_original(tmp_path: Path) -> None:
    w = World(tmp_path, TUNING)
    knobs(w, watermark_scale_factor=10)
    through_baseline(w)
    assert knob(w, "watermark_scale_factor") == 100
    w.agent.stop()
    assert knob(w, "watermark_scale_factor") == 10
    assert "rolled back, the agent is stopping" in messages(w, "TunableRolledBack")[0]
    assert TRIAL not in record(w) and not slots(w)


def test_a_crash_mid_trial_is_rolled_back_by_the_next_agent(tmp_path: Path) -> None:
    w = World(tmp_path, TUNING)
    knobs(w, watermark_scale_factor=10)
    through_baseline(w)
    assert knob(w, "watermark_scale_factor") == 100
    # kill -9: no stop(); a new pod on the node reads the record
    again = Agent("n1", w.kube, w.config, w.reader, "ns", "pod-b", time.time, w.clock)
    events = again.tuner.resume()
    assert knob(w, "watermark_scale_factor") == 10
    assert "interrupted" in events[0].message and "pod-a" in events[0].message
    assert TRIAL not in record(w)
    assert json.loads(record(w)[TUNED]) == [["watermark_scale_factor", "rolled_back"]]


def test_a_hostile_record_names_no_path(tmp_path: Path) -> None:
    """The trial's name becomes a path under /proc/sys/vm: only a knob the review knows."""
    w = World(tmp_path, TUNING)
    knobs(w, watermark_scale_factor=10)
    assert w.kube is not None
    bad = {"name": "../../kernel/panic", "original": 1, "value": 0, "by": "x", "at": 0}
    name = node_record_name("n1")
    meta = {"name": name, "annotations": {TRIAL: json.dumps(bad)}}
    w.kube.put(paths.lease("ns", name), {"metadata": meta, "spec": {}})
    again = Agent("n1", w.kube, w.config, w.reader, "ns", "pod-b", time.time, w.clock)
    assert again.tuner.resume() == []


def test_at_most_the_budget_of_nodes_try_at_once(tmp_path: Path) -> None:
    w = World(tmp_path, TUNING)
    knobs(w, watermark_scale_factor=10)
    assert w.kube is not None
    w.kube.add_node("n2")
    other = Agent("n2", w.kube, w.config, w.reader, "ns", "pod-n2", time.time, w.clock)
    w.tick()
    assert len(slots(w)) == 1
    other.cycle([])
    assert other.tuner.state.phase == "idle"  # waits: max_concurrent_nodes is 1
    assert len(slots(w)) == 1
