"""The reporter (condition, taint, taint slot, owned effects), the stuck pods (the watch that
starts and stops, the answer, the deletion) and the remediator (lock, slot, run, one measurement)
with the in-memory API and a fake clock."""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path

from agent.assess.verdict import Reason, Verdict, assess
from agent.config.model import Config, ReportingConfig
from agent.daemon.observer import Observer
from agent.daemon.remediator import ClusterLock, Ran, Remediator
from agent.daemon.reporter import Reporter
from agent.daemon.stuck import SANDBOX_WATCH_LINGER, StuckPods
from agent.decide.ladder import Step
from agent.decide.nodeview import Condition, ConditionStatus
from agent.decide.remediation import ActionOutcome, PastAction, RemedyState
from agent.decide.report import Decision, ReportState, TaintChange
from agent.kernel.actions import ActionKind
from agent.kernel.procfs import ProcReader
from agent.kernel.writes import ActionResult
from agent.kube import paths
from agent.kube.errors import ApiError
from agent.kube.leases import NodeRecord, Semaphore, parse_node_state
from tests.unit.daemon.parts import FRAGMENTED, HEALTHY, CountingReader, Host, stuck_pod
from tests.unit.kube.fakekube import Clock, FakeKube

KEY = ReportingConfig().taint_key


class Failures:
    def __init__(self) -> None:
        self.ops: list[str] = []

    def __call__(self, op: str, exc: ApiError) -> None:
        self.ops.append(op)


def reporter(kube: FakeKube, failed: Failures) -> Reporter:
    clock = Clock()
    record = NodeRecord(kube, "ns", "n1", "pod-a", wall=time.time, monotonic=clock)
    sem = Semaphore(kube, "ns", "memfrag-taint", "pod-a", owner="n1", monotonic=clock)
    r = Reporter(kube, "n1", record, sem, failed, sleep=lambda s: None)
    r.node_inf.offer(kube.objects[paths.node("n1")])
    return r


def cond(status: ConditionStatus) -> Condition:
    return Condition(status, Reason.FREE_MEMORY_FRAGMENTED, "m", "2026-01-01T00:00:00Z", "x")


def test_the_reporter_writes_the_condition_and_the_taint_with_the_record_first() -> None:
    kube, failed = FakeKube(), Failures()
    kube.add_node("n1")
    r = reporter(kube, failed)
    cfg = ReportingConfig()
    state = r.carry_out(
        5.0,
        Decision(cond(ConditionStatus.TRUE), TaintChange.ADD, (), ReportState(Verdict.FRAGMENTED)),
        cfg,
    )
    assert state.written_at == 5.0
    record = parse_node_state(kube.objects[paths.lease("ns", r.record.name)])
    assert record.taint_effects == (cfg.taint_effect,)
    shown = r.shown(cfg)
    assert shown.condition_true and shown.tainted and failed.ops == []
    r.carry_out(6.0, Decision(None, TaintChange.REMOVE, (), state), cfg)
    assert not r.shown(cfg).tainted
    assert parse_node_state(kube.objects[paths.lease("ns", r.record.name)]).taint_effects == ()


def test_a_failed_condition_write_is_counted_and_not_taken_as_written() -> None:
    kube, failed = FakeKube(), Failures()
    kube.add_node("n1")
    r = reporter(kube, failed)
    kube.fail("PATCH", "/status", 403)
    state = r.carry_out(
        5.0, Decision(cond(ConditionStatus.TRUE), None, (), ReportState()), ReportingConfig()
    )
    assert state.written_at is None and failed.ops == ["condition"]


def test_no_taint_goes_on_unless_the_record_names_it() -> None:
    kube, failed = FakeKube(), Failures()
    kube.add_node("n1")
    r = reporter(kube, failed)
    kube.fail("GET", "/leases/", 500)  # reading the record, for the effects we own
    kube.fail("GET", "/leases/", 500)  # and again, to write it
    assert not r.set_taint(True, ReportingConfig())
    assert kube.objects[paths.node("n1")]["spec"].get("taints") is None
    assert failed.ops == ["lease", "lease"]
    kube.fail("PATCH", "/nodes/n1", 403)
    assert not r.set_taint(True, ReportingConfig())
    assert failed.ops[-1] == "taint"


def test_the_taint_slot_is_renewed_at_most_every_quarter_and_released() -> None:
    kube, failed = FakeKube(), Failures()
    kube.add_node("n1")
    r = reporter(kube, failed)
    cfg = ReportingConfig(max_tainted_percent=100)
    assert r.taint_slot(0.0, cfg)
    calls = len(kube.calls)
    assert r.taint_slot(100.0, cfg) and len(kube.calls) == calls  # cached
    r.release_taint_slot()
    assert not [k for k in kube.objects if "memfrag-taint" in k]
    kube.fail("GET", "/api/v1/nodes", 500)
    assert not r.taint_slot(200.0, cfg) and failed.ops == ["lease"]


def test_a_second_node_gets_no_taint_slot_at_a_one_node_cap() -> None:
    kube, failed = FakeKube(), Failures()
    kube.add_node("n1")
    kube.add_node("n2")
    other = Semaphore(kube, "ns", "memfrag-taint", "pod-b", owner="n2")
    assert other.acquire(1, 600) is not None
    assert not reporter(kube, failed).taint_slot(0.0, ReportingConfig(max_tainted_percent=10))


def test_the_sandbox_watch_starts_with_a_pending_pod_and_stops_after_the_linger() -> None:
    kube, failed = FakeKube(), Failures()
    s = StuckPods(kube, "n1", failed)
    s.update_watch(0.0)
    assert s.sandbox is None and s.informers() == [s.pods]
    pod = kube.put(paths.pod("default", "web"), stuck_pod("web", "n1"))
    s.pods.offer(pod)
    s.update_watch(1.0)
    watch = s.sandbox
    assert watch is not None and watch.synced.wait(5)
    assert s.stuck(time.time(), 600) == ["default/web"]  # answering starts and stops nothing
    assert s.sandbox is watch
    running = {**pod, "status": {"phase": "Running"}}
    s.pods.offer({**running, "metadata": {**pod["metadata"], "resourceVersion": "99"}})
    s.update_watch(1.0 + SANDBOX_WATCH_LINGER)
    assert s.sandbox is watch  # lingers
    s.update_watch(2.0 + SANDBOX_WATCH_LINGER)
    assert s.sandbox is None
    s.stop()


def test_only_stuck_pods_a_controller_recreates_are_deleted() -> None:
    kube, failed = FakeKube(), Failures()
    s = StuckPods(kube, "n1", failed)
    for name, owned in (("web", True), ("bare", False), ("gone", True)):
        s.pods.offer(kube.put(paths.pod("default", name), stuck_pod(name, "n1", owned)))
    kube.fail("DELETE", "/pods/gone", 404)
    events = s.delete(["default/web", "default/bare", "default/gone", "default/unknown"])
    assert [e.reason for e in events] == ["StuckPodDeleted"]
    assert paths.pod("default", "web") not in kube.objects
    assert paths.pod("default", "bare") in kube.objects
    assert failed.ops == ["pod-delete"]


# --- the remediator ------------------------------------------------------------------------


class Runner:
    """Stands in for the kernel write: the host turns healthy, as after a good compaction."""

    def __init__(self, host: Host, ok: bool = True) -> None:
        self.host, self.ok = host, ok
        self.ran: list[str] = []

    def __call__(self, step: Step, reader: ProcReader, timeout: float) -> ActionResult:
        self.ran.append(step.name)
        if self.ok:
            self.host.be(HEALTHY)
        return ActionResult(self.ok, 0.25, None if self.ok else "Permission denied")


def remediator(
    tmp: Path, kube: FakeKube | None, failed: Failures, ok: bool = True
) -> tuple[Remediator, CountingReader, Runner]:
    host = Host(tmp, FRAGMENTED)
    reader = CountingReader(host)
    clock = Clock()
    lock = None
    if kube is not None:
        record = NodeRecord(kube, "ns", "n1", "pod-a", monotonic=clock)
        slots = Semaphore(kube, "ns", "memfrag-remediation", "pod-a", monotonic=clock)
        lock = ClusterLock(record, slots, "pod-a", failed, lambda: kube.budget(5))
    runner = Runner(host, ok)
    rem = Remediator(
        reader, Observer(reader), lock, threading.Event(), clock, "pod-a", runner, settle=0
    )
    return rem, reader, runner


STEP = Step(ActionKind.COMPACT, None, "the cause is movable")


def run_once(rem: Remediator, reader: CountingReader, cfg: Config) -> Ran:
    obs = reader.observe()
    a = assess(obs, cfg.assessment)
    return rem.carry_out(1000.0, time.time(), STEP, obs, a, 4, (STEP,), RemedyState(), cfg)


def on() -> Config:
    return dataclasses.replace(
        Config(), remediation=dataclasses.replace(Config().remediation, mode="on")
    )


def test_a_step_runs_under_the_lock_and_is_measured_by_one_observation(tmp_path: Path) -> None:
    kube, failed = FakeKube(), Failures()
    rem, reader, runner = remediator(tmp_path, kube, failed)
    ran = run_once(rem, reader, on())
    assert runner.ran == ["compact"] and ran.result == "ok"
    assert ran.blocks_after > ran.blocks_before and ran.seconds == 0.25
    assert reader.observed == 2  # the before-observation, and one after
    assert [e.reason for e in ran.events] == ["RemediationSucceeded"]
    assert ran.state.tried == ("compact",)
    record = parse_node_state(kube.objects[paths.lease("ns", "memfrag-node-n1")])
    assert [(a.step, a.result, a.by) for a in record.actions] == [("compact", "ok", "pod-a")]
    lease = kube.objects[paths.lease("ns", "memfrag-node-n1")]
    assert not lease["spec"].get("holderIdentity")  # unlocked
    assert not [k for k in kube.objects if "memfrag-remediation-" in k]  # slot released
    assert failed.ops == []


def test_a_failed_write_is_reported_failed(tmp_path: Path) -> None:
    rem, reader, _ = remediator(tmp_path, None, Failures(), ok=False)
    ran = run_once(rem, reader, on())
    assert ran.result == "failed" and ran.events[0].reason == "RemediationFailed"
    assert "Permission denied" in ran.events[0].message


def test_dry_run_writes_nothing(tmp_path: Path) -> None:
    kube = FakeKube()
    rem, reader, runner = remediator(tmp_path, kube, Failures())
    cfg = dataclasses.replace(
        Config(), remediation=dataclasses.replace(Config().remediation, mode="dry-run")
    )
    ran = run_once(rem, reader, cfg)
    assert ran.result == "dry_run" and runner.ran == [] and kube.calls == []
    assert ran.events[0].reason == "RemediationDryRun"


def test_another_pods_lock_or_a_full_cluster_budget_skips(tmp_path: Path) -> None:
    kube, failed = FakeKube(), Failures()
    rem, reader, runner = remediator(tmp_path, kube, failed)
    other = NodeRecord(kube, "ns", "n1", "pod-b")
    assert other.lock(600) is not None
    assert run_once(rem, reader, on()).result == "skipped" and runner.ran == []
    other.update(lambda s: s, unlock=True)
    busy = Semaphore(kube, "ns", "memfrag-remediation", "pod-z")
    assert busy.acquire(1, 600) is not None
    assert run_once(rem, reader, on()).result == "skipped" and runner.ran == []
    lease = kube.objects[paths.lease("ns", "memfrag-node-n1")]
    assert not lease["spec"].get("holderIdentity")  # the node's lock given back


def test_the_nodes_record_can_say_not_now(tmp_path: Path) -> None:
    """Another pod of the node ran the step a moment ago: its cooldown holds for us too."""
    kube, failed = FakeKube(), Failures()
    rem, reader, runner = remediator(tmp_path, kube, failed)
    other = NodeRecord(kube, "ns", "n1", "pod-b")
    other.update(
        lambda s: dataclasses.replace(
            s, actions=(PastAction("compact", time.time(), ActionOutcome.OK, "pod-b"),)
        )
    )
    ran = run_once(rem, reader, on())
    assert ran.result is None and runner.ran == []
    assert ran.state.others  # the node's history is now ours to count


def test_a_lease_error_skips_the_step_and_is_counted(tmp_path: Path) -> None:
    kube, failed = FakeKube(), Failures()
    rem, reader, runner = remediator(tmp_path, kube, failed)
    kube.fail("GET", "/leases/memfrag-node-n1", 500)
    assert run_once(rem, reader, on()).result is None and runner.ran == []
    assert failed.ops == ["lease"]


def test_without_an_api_the_step_runs_without_a_lock(tmp_path: Path) -> None:
    rem, reader, runner = remediator(tmp_path, None, Failures())
    assert run_once(rem, reader, on()).result == "ok" and runner.ran == ["compact"]


def test_an_actions_blocks_are_counted_on_the_same_numa_nodes_before_and_after() -> None:
    from agent.assess.verdict import Assessment, Cause, NumaReport, Reason
    from agent.daemon.remediator import blocks, troubled

    def two(state1: str, blocks1: int) -> Assessment:
        return Assessment(
            verdict="fragmented" if state1 == "fragmented" else "healthy",  # type: ignore[arg-type]
            reason=Reason.FREE_MEMORY_FRAGMENTED,
            message="m",
            order=4,
            exhausted=False,
            cause=Cause("movable", (), "why"),  # type: ignore[arg-type]
            numa=(
                NumaReport(0, "healthy", 4186, 100, ("DMA32",)),  # type: ignore[arg-type]
                NumaReport(1, state1, blocks1, 100, ("DMA32",)),  # type: ignore[arg-type]
            ),
            zones=(),
            gaps=(),
        )

    before, after = two("fragmented", 0), two("healthy", 1982)
    assert troubled(before) == {1} and troubled(after) == {0, 1}
    assert blocks(before) == 0
    assert blocks(after, troubled(before)) == 1982  # not 6168: node 0's blocks were never gone
