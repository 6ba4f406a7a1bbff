"""Long-term pinned memory that no step can move (the lab's hopeless scenario): one compaction,
then nothing more, one RemediationNotPossible Event naming the holders, standalone too."""

from __future__ import annotations

import dataclasses

from agent.assess.pinned import PinnedMemory, pinned_memory
from agent.assess.verdict import Assessment, CauseKind
from agent.decide.cycle import TickDecision, TickState, decide_tick
from agent.decide.nodeview import ConditionStatus
from agent.decide.remediation import ActionOutcome, after_action
from agent.decide.report import EventReason
from agent.kernel.pininfo import PinHolder
from tests.unit.decide.test_cycle import FRAG, cfg, facts, view

# The seed incident's zones, sized as the lab's guest: 112k pages managed in its workload zones
WORKLOAD = sum(1 for z in FRAG.zones if z.workload)
A: Assessment = dataclasses.replace(
    FRAG,
    zones=tuple(dataclasses.replace(z, managed_pages=112_000 // WORKLOAD) for z in FRAG.zones),
)
HOLDERS = (
    PinHolder(412, "python3", 5946 * 4096, pod_uid="0b1c-uid"),
    PinHolder(77, "qemu-ga", 8192),
)
# the lab's build: 5946 pages pinned, one per order-4 block
VMSTAT = {"nr_foll_pin_acquired": 5946, "nr_foll_pin_released": 0}


def pinned(pages: int = 5946, holders: tuple[PinHolder, ...] = HOLDERS) -> PinnedMemory:
    p = pinned_memory(A, {"nr_foll_pin_acquired": pages, "nr_foll_pin_released": 0}, holders)
    assert p is not None
    return p


def tick(state: TickState, p: PinnedMemory | None, standalone: bool = False) -> TickDecision:
    v = None if standalone else view(ConditionStatus.TRUE)
    return decide_tick(facts(A, v, pinned=p, pods={"0b1c-uid": "lab/pinner"}), state, cfg())


def after_compaction(p: PinnedMemory | None, standalone: bool = False) -> TickDecision:
    first = tick(TickState(), None, standalone)
    assert first.run is not None and first.run.name == "compact"
    remedy = after_action(first.state.remedy, first.run, 100.0, ActionOutcome.NO_EFFECT, 7, 6)
    return tick(dataclasses.replace(first.state, remedy=remedy), p, standalone)


def not_possible(d: TickDecision) -> list[str]:
    return [e.message for e in d.events if e.reason == EventReason.REMEDIATION_NOT_POSSIBLE]


def test_pins_spread_over_most_blocks_stop_the_ladder_after_compaction() -> None:
    assert A.cause.kind != CauseKind.UNMOVABLE  # Movable pageblocks: a ladder of three steps
    d = after_compaction(pinned())
    assert d.run is None  # before: drop-caches=1, then drop-caches=2 (the lab's 3 actions)
    assert d.state.remedy.climbed and d.state.remedy.pinned
    (msg,) = not_possible(d)
    assert msg.startswith("23.2 MiB long-term pinned, by python3 (pid 412, pod lab/pinner): ")
    assert "qemu-ga (pid 77): 0.0 MiB" in msg and "compact did not recover" in msg
    assert "Remediation: 23.2 MiB long-term pinned" in d.outcome.message
    assert d.report is not None and d.report.unremediable is not None
    assert d.report.unremediable.status == ConditionStatus.TRUE
    # once per episode: the next tick says nothing new, and runs nothing
    again = tick(d.state, pinned())
    assert again.run is None and not_possible(again) == []


def test_standalone_gets_the_event_too() -> None:
    d = after_compaction(pinned(), standalone=True)
    assert d.run is None and d.report is None
    assert len(not_possible(d)) == 1


def test_few_pins_leave_the_ladder_alone() -> None:
    small = pinned(3000, HOLDERS[1:])  # 3000 x 16 of 112k pages: under half
    assert not small.blocking
    d = after_compaction(small)
    assert d.run is not None and d.run.name == "drop-caches=1"
    assert not_possible(d) == []


def test_no_stop_before_compaction_ran() -> None:
    d = tick(TickState(), pinned())
    assert d.run is not None and d.run.name == "compact"


def test_vmstat_or_vmpin_whichever_is_larger() -> None:
    p = pinned_memory(A, {"nr_foll_pin_acquired": 37, "nr_foll_pin_released": 0}, HOLDERS)
    assert p is not None and p.source == "VmPin" and p.pinned_bytes == 5948 * 4096
    assert pinned_memory(A, None, ()) is None
    no_zoneinfo = dataclasses.replace(A, zones=FRAG.zones)
    assert pinned_memory(no_zoneinfo, VMSTAT, HOLDERS) is None
    assert WORKLOAD >= 1


def test_once_the_pins_are_released_the_ladder_goes_on() -> None:
    d = after_compaction(pinned())
    later = tick(d.state, pinned(pages=100, holders=()))
    assert later.run is not None and later.run.name == "drop-caches=1"
    assert not later.state.remedy.climbed and not later.state.remedy.pinned
