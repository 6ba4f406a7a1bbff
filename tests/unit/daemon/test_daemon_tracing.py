"""The daemon's tracing part (sources.tracing_enabled) in the Agent, over the in-memory API, a
fake clock and a fake source fed with recorded trace_pipe events: counters from 0, the window's
sentence in the condition, one Event per episode, a source that cannot start told once."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agent.daemon.loop import Agent
from agent.daemon.tracing import RETRY_SECONDS
from agent.decide.ladder import Step
from agent.decide.tracearm import DISARM_AFTER_SECONDS
from agent.kernel.cgroupinfo import CgroupPaths
from agent.kernel.procfs import ProcReader
from agent.kernel.trace import CompactionBegin, CompactionEnd
from agent.kernel.tracefollow import TraceWindow
from agent.kernel.tracefs import TracingError
from agent.kernel.writes import ActionResult
from agent.kube import paths
from tests.trace_fixtures import POLLUTER_PID, recorded
from tests.unit.daemon.parts import (
    FRAGMENTED,
    HEALTHY,
    UNMOVABLE,
    CountingReader,
    Host,
    config_file,
    rewrite,
)
from tests.unit.daemon.test_daemon_loop import FAST, sample
from tests.unit.kube.fakekube import Clock, FakeKube

POD_UID = "0f1e2d3c-aaaa-bbbb-cccc-0123456789ab"
FAILURES = "memfrag_traced_allocation_failures_total"


class FakeSource:
    """A TraceSource without a kernel: the test adds events to its window."""

    def __init__(
        self, min_order: int, seconds: float, pageblock: int | None, on_error: Any, armed: bool
    ):
        self.args = (min_order, seconds, pageblock)
        self.armed = armed
        self.arms: list[bool] = []  # what `arm` was told, in order
        self.on_error: Callable[[str], None] = on_error
        cgroups = {POLLUTER_PID: CgroupPaths(f"/kubepods/pod{POD_UID}/c1", "/")}
        # the window's clock on the recorded trace clock: nothing is pruned
        self.window = TraceWindow(seconds, cgroups.get, clock=lambda: 11000.0)
        self.started = self.stopped = 0

    def start(self) -> None:
        self.started += 1

    def stop(self) -> None:
        self.stopped += 1

    def arm(self, on: bool) -> None:
        self.arms.append(on)
        self.armed = on


class Tracer:
    def __init__(self, fail: str | None = None) -> None:
        self.fail = fail
        self.made: list[FakeSource] = []

    def __call__(
        self, order: int, seconds: float, pb: int | None, on_error: Any, armed: bool
    ) -> FakeSource:
        if self.fail is not None:
            raise TracingError(self.fail)
        self.made.append(FakeSource(order, seconds, pb, on_error, armed))
        return self.made[-1]


class World:
    def __init__(
        self,
        tmp: Path,
        tracer: Tracer,
        enabled: bool = True,
        remediation: dict[str, Any] | None = None,
        alloc_failures: str = "at-risk",
        fixture: str = HEALTHY,
    ) -> None:
        self.kube = FakeKube()
        self.kube.add_node("n1")
        self.host = Host(tmp, fixture)
        self.clock = Clock()
        values = {k: dict(v) for k, v in FAST.items()}
        values["sources"]["tracing_enabled"] = enabled
        values["sources"]["tracing_alloc_failures"] = alloc_failures
        values["remediation"] = remediation or {}
        self.agent = Agent(
            "n1",
            self.kube,
            config_file(tmp, values),
            CountingReader(self.host),
            "ns",
            "pod-a",
            monotonic=self.clock,
            make_trace_source=tracer,
            cgroup_root=str(tmp / "cgroup"),
        )
        assert self.agent.reporter is not None
        self.agent.reporter.node_inf.offer(self.kube.objects[paths.node("n1")])

    def start(self) -> None:
        """Agent.start without the HTTP server and the watches: the tracing part only."""
        assert self.agent.tracing is not None
        self.agent.tracing.start(*self.agent._trace_layout())

    def tick(self, dt: float = 0.0) -> None:
        self.clock.t += dt
        self.agent.cycle([])

    def message(self) -> str:
        conds = self.kube.objects[paths.node("n1")]["status"].get("conditions") or []
        return str(conds[0]["message"]) if conds else ""

    def events(self) -> list[str]:
        return [o["reason"] for k, o in self.kube.objects.items() if "/events/" in k]


def test_off_by_default_there_is_no_tracing_part_and_no_series(tmp_path: Path) -> None:
    tracer = Tracer()
    w = World(tmp_path, tracer, enabled=False)
    assert w.agent.tracing is None and not tracer.made
    w.tick()
    assert (
        w.agent.metrics.registry.get_sample_value(FAILURES, {"order": "4", "silent": "true"})
        is None
    )
    assert "allocations failed" not in w.message()


def test_traced_failures_are_counted_from_zero_said_in_the_condition_and_once_as_event(
    tmp_path: Path,
) -> None:
    tracer = Tracer()
    w = World(tmp_path, tracer)
    for order in range(4, 14):
        for silent in ("true", "false"):
            assert (
                w.agent.metrics.registry.get_sample_value(
                    FAILURES, {"order": str(order), "silent": silent}
                )
                == 0
            ), (order, silent)
    w.start()
    (src,) = tracer.made
    assert src.started == 1 and src.args[:2] == (4, 600.0)
    for e in recorded("hugetlb-exhausted-thp.trace"):
        src.window.add(e)  # the reader's thread, as TraceFollower calls it
    assert sample(w.agent, FAILURES, {"order": "9", "silent": "true"}) == 300
    assert sample(w.agent, FAILURES, {"order": "9", "silent": "false"}) == 0
    w.tick(120)
    assert "300 high-order allocations failed in the last 2 minutes, 300 of them silent" in (
        w.message()
    )
    w.tick(15)
    assert w.events().count("HighOrderAllocationFailed") == 1
    w.agent.stop()
    assert src.stopped == 1


def test_an_unmovable_cause_names_the_polluting_pod_from_the_informer(tmp_path: Path) -> None:
    tracer = Tracer()
    w = World(tmp_path, tracer)
    w.start()
    assert w.agent.stuck is not None
    w.agent.stuck.pods.offer(
        {
            "metadata": {"name": "cart", "namespace": "shop", "uid": POD_UID},
            "spec": {"nodeName": "n1"},
        }
    )
    for e in recorded("pipes-and-compact-memory.trace"):
        tracer.made[0].window.add(e)
    w.host.be(UNMOVABLE)
    w.tick(60)
    assert "pageblock steals in the last 60 seconds by python (pod shop/cart): 475" in w.message()


def test_a_source_that_cannot_start_is_logged_counted_told_once_and_the_daemon_goes_on(
    tmp_path: Path,
) -> None:
    w = World(tmp_path, Tracer(fail="/sys/kernel/tracing: not mounted"))
    w.start()
    assert w.agent.tracing is not None and w.agent.tracing.source is None
    assert sample(w.agent, "memfrag_tracing_errors_total") == 1
    w.tick()
    w.tick(15)
    assert w.events().count("TracingFailed") == 1
    assert sample(w.agent, "memfrag_condition_true") == 0 and w.message()  # assessed, reported
    w.agent.stop()  # nothing to stop: no error


def test_a_reader_that_stops_later_is_told_once_too(tmp_path: Path) -> None:
    tracer = Tracer()
    w = World(tmp_path, tracer)
    w.start()
    tracer.made[0].on_error("trace_pipe: end of file (instance removed?)")
    w.tick()
    w.tick(15)
    assert w.events().count("TracingFailed") == 1
    assert sample(w.agent, "memfrag_tracing_errors_total") == 1


def test_a_source_that_could_not_start_is_tried_again_a_minute_later(tmp_path: Path) -> None:
    """The rollout case: the old pod still reads the instance when the new one starts."""
    tracer = Tracer(fail="instances/memfrag-agent: in use (Device or resource busy)")
    w = World(tmp_path, tracer)
    w.start()
    w.tick(RETRY_SECONDS / 2)
    assert not tracer.made
    tracer.fail = None  # the old pod is gone
    w.tick(RETRY_SECONDS / 2)
    assert len(tracer.made) == 1 and tracer.made[0].started == 1
    assert w.agent.tracing is not None and w.agent.tracing.source is tracer.made[0]
    assert w.events().count("TracingFailed") == 1


def test_a_source_whose_reader_stopped_is_replaced(tmp_path: Path) -> None:
    tracer = Tracer()
    w = World(tmp_path, tracer)
    w.start()
    tracer.made[0].on_error("trace_pipe: end of file (instance removed?)")
    w.tick(1)
    assert tracer.made[0].stopped == 1 and len(tracer.made) == 1
    w.tick(RETRY_SECONDS)
    assert len(tracer.made) == 2 and tracer.made[1].started == 1


def test_a_reload_that_changes_the_target_order_restarts_the_instance_with_its_filter(
    tmp_path: Path,
) -> None:
    """Before: the filter kept the order of the start until the pod restarted."""
    tracer = Tracer()
    w = World(tmp_path, tracer)
    w.start()
    assert tracer.made[0].args[0] == 4
    rewrite(
        w.agent.config_file, "assessment:\n  target_order: 2\nsources:\n  tracing_enabled: true\n"
    )
    w.agent.reload_config()
    assert tracer.made[0].stopped == 1
    assert len(tracer.made) == 2 and tracer.made[1].args[0] == 2 and tracer.made[1].started == 1
    assert sample(w.agent, FAILURES, {"order": "2", "silent": "true"}) == 0  # new labels at 0
    for e in recorded("hugetlb-exhausted-thp.trace"):
        tracer.made[1].window.add(e)
    assert sample(w.agent, FAILURES, {"order": "9", "silent": "true"}) == 300
    rewrite(
        w.agent.config_file, "assessment:\n  target_order: 2\nreporting:\n  heartbeat_seconds: 60\n"
    )
    w.agent.reload_config()  # the order unchanged: the instance stays
    assert len(tracer.made) == 2 and tracer.made[1].stopped == 0


def test_a_reload_before_start_only_sets_the_order(tmp_path: Path) -> None:
    tracer = Tracer()
    w = World(tmp_path, tracer)
    rewrite(
        w.agent.config_file, "assessment:\n  target_order: 6\nsources:\n  tracing_enabled: true\n"
    )
    w.agent.reload_config()
    assert not tracer.made
    w.start()
    assert tracer.made[0].args[0] == 6


def _stalls(vmstat: Path) -> Callable[[int], None]:
    """Sets the fake host's compact_stall (its other counters as the fixture has them)."""
    lines = vmstat.read_text().splitlines()

    def stall(n: int) -> None:
        vmstat.write_text(
            "\n".join(f"compact_stall {n}" if x.startswith("compact_stall ") else x for x in lines)
            + "\n"
        )

    return stall


def test_vmstat_rates_per_minute_are_a_gauge_and_in_the_message_while_not_healthy(
    tmp_path: Path,
) -> None:
    w = World(tmp_path, Tracer(), enabled=False)
    stall = _stalls(w.host.root / "vmstat")

    stall(100)
    w.tick()
    rate = "memfrag_vmstat_rate_per_minute"
    assert w.agent.metrics.registry.get_sample_value(rate, {"counter": "compact_stall"}) is None
    stall(130)
    w.tick(60)
    assert sample(w.agent, rate, {"counter": "compact_stall"}) == 30.0
    assert "per minute" not in w.message()  # healthy: no news
    w.host.be(UNMOVABLE)  # its vmstat: counters from another boot, a reset
    w.tick(60)
    assert "per minute over the last 10 minutes: compact_stall" in w.message()


COMPACTIONS = "memfrag_compactions_total"


def test_compactions_are_counted_by_numa_node_kind_and_result_from_zero(tmp_path: Path) -> None:
    tracer = Tracer()
    w = World(tmp_path, tracer)
    w.start()
    for kind in ("direct", "kcompactd", "manual"):
        for result in ("complete", "contended", "other"):
            labels = {"numa_node": "0", "kind": kind, "result": result}
            assert w.agent.metrics.registry.get_sample_value(COMPACTIONS, labels) == 0
    for e in recorded("pipes-and-compact-memory.trace"):
        tracer.made[0].window.add(e)
    # echo 1 > compact_memory: the writer's task compacts each of the VM's three zones
    manual = {"numa_node": "0", "kind": "manual"}
    assert sample(w.agent, COMPACTIONS, {**manual, "result": "complete"}) == 2
    assert sample(w.agent, COMPACTIONS, {**manual, "result": "contended"}) == 1
    count = sample(w.agent, "memfrag_compaction_duration_seconds_count", manual)
    total = sample(w.agent, "memfrag_compaction_duration_seconds_sum", manual)
    assert count == 3 and abs(total - (0.000015 + 0.002841 + 0.148408)) < 1e-6


def test_a_remediation_records_how_long_the_node_compacted_while_it_ran(tmp_path: Path) -> None:
    """Not only its wall time: the traced compaction between the write and the settling."""
    tracer = Tracer()
    w = World(tmp_path, tracer, remediation={"mode": "on"})
    w.start()
    src = tracer.made[0]
    trace = recorded("pipes-and-compact-memory.trace")
    begin = next(e for e in trace if isinstance(e, CompactionBegin))
    end = next(e for e in trace if isinstance(e, CompactionEnd))

    def runner(step: Step, reader: ProcReader, timeout: float) -> ActionResult:
        now = time.monotonic()
        src.window.add(
            dataclasses.replace(begin, head=dataclasses.replace(begin.head, timestamp=now))
        )
        src.window.add(
            dataclasses.replace(end, head=dataclasses.replace(end.head, timestamp=now + 0.25))
        )
        w.host.be(HEALTHY)
        return ActionResult(True, 0.25)

    w.agent.remediator.runner = runner
    w.agent.remediator.settle = 0.3
    w.host.be(FRAGMENTED)
    w.tick()
    gauge = "memfrag_remediation_last_compaction_seconds"
    assert abs(sample(w.agent, gauge, {"kind": "manual"}) - 0.25) < 0.01
    assert sample(w.agent, gauge, {"kind": "direct"}) == 0
    w.tick(1)
    messages = [o["message"] for k, o in w.kube.objects.items() if "/events/" in k]
    assert any("the node compacted 0.250s meanwhile (traced: manual 0.250s)" in m for m in messages)


def test_an_unmovable_cause_names_the_pods_by_kernel_memory_and_gives_each_an_event(
    tmp_path: Path,
) -> None:
    """From the cgroup files (v1 here, as on this machine), names from the pod informer, the
    Event in the pod's namespace about the pod; once per episode; tracing not needed."""
    w = World(tmp_path, Tracer(), enabled=False)
    pod = tmp_path / "cgroup" / "memory" / "kubepods" / "burstable" / f"pod{POD_UID}"
    pod.mkdir(parents=True)
    (pod / "memory.kmem.usage_in_bytes").write_text(f"{200 << 20}\n")
    (pod / "memory.kmem.tcp.usage_in_bytes").write_text(f"{56 << 20}\n")
    assert w.agent.stuck is not None
    w.agent.stuck.pods.offer(
        {
            "metadata": {"name": "cart", "namespace": "shop", "uid": POD_UID},
            "spec": {"nodeName": "n1"},
        }
    )
    w.tick()
    assert w.agent.kernel_memory.reads == 0  # healthy: the cgroups are not walked
    w.host.be(UNMOVABLE)
    w.tick(15)  # the first fragmented tick reads pagetypeinfo: the cause is known at once
    assert "unmovable kernel memory by pod: shop/cart 256.0 MiB" in w.message()
    w.tick(15)
    w.tick(15)
    on_pods = [o for k, o in w.kube.objects.items() if "/namespaces/shop/events/" in k]
    assert len(on_pods) == 1
    (ev,) = on_pods
    assert ev["reason"] == "UnmovableKernelMemory" and ev["type"] == "Warning"
    assert ev["involvedObject"] == {
        "apiVersion": "v1",
        "kind": "Pod",
        "namespace": "shop",
        "name": "cart",
        "uid": POD_UID,
    }
    assert ev["reportingInstance"] == "n1" and "kmem 200.0 MiB, kmem_tcp 56.0 MiB" in ev["message"]
    assert w.agent.kernel_memory.reads == 1  # at most once a minute


ARMED = "memfrag_tracing_alloc_failures_armed"


def _arm_logs(caplog: pytest.LogCaptureFixture) -> list[tuple[str, Any]]:
    return [
        (r.getMessage().rsplit(" ", 1)[-1], r.__dict__.get("why"))
        for r in caplog.records
        if r.getMessage().startswith("tracing: allocation failure counter")
    ]


def test_a_healthy_node_keeps_the_failure_counter_disarmed(tmp_path: Path) -> None:
    """The default (at-risk): the per-allocation tracepoint costs nothing while healthy."""
    tracer = Tracer()
    w = World(tmp_path, tracer)
    w.start()
    (src,) = tracer.made
    assert not src.armed and sample(w.agent, ARMED) == 0
    for _ in range(4):
        w.tick(15)
    assert src.arms == [] and sample(w.agent, ARMED) == 0


def test_a_slow_path_event_arms_it_at_once_and_a_quiet_spell_disarms_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tracer = Tracer()
    w = World(tmp_path, tracer)
    with caplog.at_level(logging.INFO, logger="memfrag.agent"):
        w.start()
        w.tick()
        src = tracer.made[0]
        src.window.add(recorded("slow-path.trace")[0])  # kswapd woken at order 9
        assert src.arms == [True] and sample(w.agent, ARMED) == 1  # before the next tick
        for e in recorded("slow-path.trace")[1:]:
            src.window.add(e)
        assert src.arms == [True]  # armed once
        w.tick(15)  # the tick takes the reader's signs: the last one now
        w.tick(DISARM_AFTER_SECONDS - 15)
        assert src.arms == [True]
        w.tick(15)  # 10 minutes without a sign
        assert src.arms == [True, False] and sample(w.agent, ARMED) == 0
    assert _arm_logs(caplog) == [("armed", "slow-path"), ("disarmed", None)]


def test_a_slow_path_event_below_the_traced_order_does_not_arm(tmp_path: Path) -> None:
    tracer = Tracer()
    w = World(tmp_path, tracer)
    w.start()
    rewrite(
        w.agent.config_file, "assessment:\n  target_order: 10\nsources:\n  tracing_enabled: true\n"
    )
    w.agent.reload_config()
    for e in recorded("slow-path.trace"):  # order 9
        tracer.made[-1].window.add(e)
    assert all(not s.arms for s in tracer.made)


def test_failures_counted_while_armed_keep_it_armed(tmp_path: Path) -> None:
    tracer = Tracer()
    w = World(tmp_path, tracer)
    w.start()
    src = tracer.made[0]
    src.window.add(recorded("slow-path.trace")[0])
    fails = recorded("hugetlb-exhausted-thp.trace")
    for i in range(8):
        w.tick(DISARM_AFTER_SECONDS / 4)
        src.window.add(fails[i])
    assert src.arms == [True]


def test_a_fragmented_node_arms_it_on_its_first_tick_and_a_new_source_starts_armed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tracer = Tracer()
    w = World(tmp_path, tracer, fixture=FRAGMENTED)
    with caplog.at_level(logging.INFO, logger="memfrag.agent"):
        w.start()
        assert not tracer.made[0].armed
        w.tick()
    assert tracer.made[0].arms == [True] and sample(w.agent, ARMED) == 1
    assert _arm_logs(caplog) == [("armed", "verdict")]
    tracer.made[0].on_error("trace_pipe: end of file (instance removed?)")
    w.tick(1)
    w.tick(RETRY_SECONDS)
    assert len(tracer.made) == 2 and tracer.made[1].armed and tracer.made[1].arms == []


def test_always_starts_armed_and_stays_armed(tmp_path: Path) -> None:
    tracer = Tracer()
    w = World(tmp_path, tracer, alloc_failures="always")
    w.start()
    assert tracer.made[0].armed and sample(w.agent, ARMED) == 1
    for _ in range(3):
        w.tick(DISARM_AFTER_SECONDS)
    assert tracer.made[0].arms == [] and sample(w.agent, ARMED) == 1
    rewrite(
        w.agent.config_file,
        "sources:\n  tracing_enabled: true\n  tracing_alloc_failures: at-risk\n",
    )
    w.agent.reload_config()
    w.tick(DISARM_AFTER_SECONDS)  # a reload to at-risk: the healthy node disarms it
    assert tracer.made[0].arms == [False]


def test_a_kernel_that_refuses_to_arm_is_a_tracing_error(tmp_path: Path) -> None:
    tracer = Tracer()
    w = World(tmp_path, tracer, fixture=FRAGMENTED)
    w.start()

    def refuse(on: bool) -> None:
        raise TracingError("events/kmem/mm_page_alloc/enable: the kernel refused '1'")

    tracer.made[0].arm = refuse  # type: ignore[method-assign]
    w.tick()
    assert sample(w.agent, "memfrag_tracing_errors_total") == 1
    w.tick(1)
    w.tick(RETRY_SECONDS)
    assert len(tracer.made) == 2 and tracer.made[1].armed  # replaced, armed from the start


def test_compaction_stalls_rising_since_the_last_poll_arm_it_and_old_ones_do_not(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """vmstat over the last poll, not the 10-minute window: a stall long ago keeps nothing
    armed."""
    tracer = Tracer()
    w = World(tmp_path, tracer)
    stall = _stalls(w.host.root / "vmstat")

    with caplog.at_level(logging.INFO, logger="memfrag.agent"):
        w.start()
        stall(100)
        w.tick()
        w.tick(15)
        assert tracer.made[0].arms == []  # the boot's stalls: no rise
        stall(101)
        w.tick(15)
        assert tracer.made[0].arms == [True]
        for _ in range(int(DISARM_AFTER_SECONDS // 15)):
            w.tick(15)  # the 10-minute rate still shows the stall; the last poll does not
    assert tracer.made[0].arms == [True, False]
    assert _arm_logs(caplog) == [("armed", "compaction-stalls"), ("disarmed", None)]


def test_a_slow_path_event_read_while_the_source_starts_arms_that_source(tmp_path: Path) -> None:
    """The new reader runs before `start` returns: its first events must reach the new source."""
    slow = recorded("slow-path.trace")[0]

    class Early(Tracer):
        def __call__(
            self, order: int, seconds: float, pb: int | None, on_error: Any, armed: bool
        ) -> FakeSource:
            src = super().__call__(order, seconds, pb, on_error, armed)
            real = src.start

            def start() -> None:
                real()
                src.window.add(slow)  # the reader thread, before the part holds the source

            src.start = start  # type: ignore[method-assign]
            return src

    tracer = Early()
    w = World(tmp_path, tracer)
    w.start()
    assert tracer.made[0].armed and tracer.made[0].arms == [True]
