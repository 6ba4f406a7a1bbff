"""agent.decide.report.decide (with a fake clock) and the pure Node views of
agent.decide.nodeview."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.assess.verdict import Reason, Verdict
from agent.base.times import parse_rfc3339, rfc3339
from agent.config.model import ReportingConfig
from agent.decide.nodeview import (
    CONDITION_TYPE,
    Condition,
    ConditionStatus,
    NodeView,
    condition_patch,
    has_taint,
    node_view,
    taint_patch,
    with_taint,
    without_taint,
)
from agent.decide.report import (
    Decision,
    Outcome,
    ReportState,
    decide,
    initial_state,
)

T0 = 1_700_000_000  # 2023-11-14T22:13:20Z
CFG = ReportingConfig(
    fragmented_for_seconds=60.0, healthy_for_seconds=120.0, heartbeat_seconds=900.0
)
KEY = CFG.taint_key

FRAGMENTED = Outcome(Verdict.FRAGMENTED, Reason.FREE_MEMORY_FRAGMENTED, "Free memory is fragmented")
HEALTHY = Outcome(
    Verdict.HEALTHY, Reason.CONTIGUOUS_MEMORY_AVAILABLE, "Enough contiguous free memory"
)
AT_RISK = Outcome(Verdict.AT_RISK, Reason.CONTIGUOUS_MEMORY_LOW, "Few free blocks")
EXHAUSTED = Outcome(Verdict.AT_RISK, Reason.FREE_MEMORY_EXHAUSTED, "Free memory is exhausted")
UNKNOWN = Outcome(
    Verdict.UNKNOWN, Reason.ASSESSMENT_FAILED, "Cannot assess: /proc/buddyinfo: cannot read"
)

OTHER_TAINT = {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}


@dataclass
class FakeNode:
    """The Node as the API server would hold it after the outer layer carries out decisions."""

    cfg: ReportingConfig = CFG
    state: ReportState = field(default_factory=ReportState)
    condition: Condition | None = None
    taints: tuple[dict[str, Any], ...] = (OTHER_TAINT,)
    may_taint: bool = True
    owned: frozenset[str] = frozenset()  # effects the node's record says we put on

    def view(self) -> NodeView:
        return NodeView("node-a", "uid-1", "42", self.condition, self.taints)

    def step(self, now: float, outcome: Outcome, wall: float | None = None) -> Decision:
        """`now` monotonic; `wall` the wall clock (the same unless a test steps it)."""
        wall = now if wall is None else wall
        d = decide(
            now,
            outcome,
            self.state,
            self.view(),
            self.cfg,
            self.may_taint,
            wall=wall,
            owned=self.owned,
        )
        self.state = d.state
        if d.condition is not None:
            self.condition = d.condition
            self.state = replace(self.state, written_at=now)  # the API took the write
        owned = self.owned | {self.cfg.taint_effect}
        if d.taint == "add":
            self.taints = tuple(with_taint(self.taints, KEY, self.cfg.taint_effect, "true", owned))
        elif d.taint == "remove":
            self.taints = tuple(without_taint(self.taints, KEY, owned))
        return d

    @property
    def tainted(self) -> bool:
        return has_taint(self.taints, KEY, self.cfg.taint_effect)


def reasons(d: Decision) -> list[str]:
    return [e.reason for e in d.events]


# --- rfc3339 ----------------------------------------------------------------------------------


def test_rfc3339_roundtrip() -> None:
    assert rfc3339(T0) == "2023-11-14T22:13:20Z"
    assert parse_rfc3339("2023-11-14T22:13:20Z") == T0
    assert rfc3339(T0 + 0.9) == "2023-11-14T22:13:20Z"
    assert parse_rfc3339("yesterday") is None
    assert parse_rfc3339("") is None


# --- the hysteresis ---------------------------------------------------------------------------


def test_first_healthy_look_writes_false_without_events() -> None:
    n = FakeNode()
    d = n.step(T0, HEALTHY)
    assert d.condition == Condition(
        ConditionStatus.FALSE,
        "ContiguousMemoryAvailable",
        "Enough contiguous free memory",
        rfc3339(T0),
        rfc3339(T0),
    )
    assert (d.taint, d.events) == (None, ())
    assert d.state == ReportState(Verdict.HEALTHY, T0)


def test_fragmentation_sets_condition_at_once_and_taints_after_the_hold() -> None:
    n = FakeNode()
    n.step(T0, HEALTHY)
    d = n.step(T0 + 10, FRAGMENTED)
    assert d.condition is not None
    assert (d.condition.status, d.condition.reason) == ("True", "FreeMemoryFragmented")
    assert d.condition.last_transition == rfc3339(T0 + 10)
    assert reasons(d) == ["FragmentationDetected"]
    assert d.events[0].type == "Warning"
    assert d.events[0].message == "Free memory is fragmented"
    assert d.taint is None

    d = n.step(T0 + 69, FRAGMENTED)  # held 59 s of 60
    assert (d.condition, d.taint, d.events) == (None, None, ())

    d = n.step(T0 + 70, FRAGMENTED)  # held 60 s
    assert d.taint == "add"
    assert reasons(d) == ["NodeTainted"]
    assert d.events[0].message == (
        "Tainted memfrag.dev/fragmented:NoSchedule after 60s fragmented, so new pods go elsewhere"
    )
    assert d.condition is None  # the condition already says True
    assert n.taints == (OTHER_TAINT, {"key": KEY, "value": "true", "effect": "NoSchedule"})

    d = n.step(T0 + 85, FRAGMENTED)  # already tainted: nothing more
    assert (d.condition, d.taint, d.events) == (None, None, ())


def test_zero_hold_taints_with_the_condition() -> None:
    n = FakeNode(cfg=replace(CFG, fragmented_for_seconds=0.0))
    d = n.step(T0, FRAGMENTED)
    assert d.taint == "add"
    assert reasons(d) == ["FragmentationDetected", "NodeTainted"]


def _fragmented_and_tainted() -> FakeNode:
    n = FakeNode()
    n.step(T0, FRAGMENTED)
    assert n.step(T0 + 60, FRAGMENTED).taint == "add"
    return n


def test_recovery_keeps_true_until_healthy_long_enough() -> None:
    n = _fragmented_and_tainted()
    d = n.step(T0 + 100, HEALTHY)  # recovering: the words change, so written once, still True
    assert d.condition is not None and d.condition.status == "True"
    assert d.condition.message.startswith("Recovering: healthy for 0s")
    assert (d.taint, d.events) == (None, ())
    for t in (T0 + 150, T0 + 219):  # healthy 50, 119 s: only the numbers move
        d = n.step(t, HEALTHY)
        assert (d.condition, d.taint, d.events) == (None, None, ()), t
        assert n.tainted
    d = n.step(T0 + 220, HEALTHY)  # 120 s healthy
    assert d.condition is not None
    assert (d.condition.status, d.condition.reason) == ("False", "ContiguousMemoryAvailable")
    assert d.condition.last_transition == rfc3339(T0 + 220)
    assert d.taint == "remove"
    assert reasons(d) == ["Recovered", "TaintRemoved"]
    assert [e.type for e in d.events] == ["Normal", "Normal"]
    assert n.taints == (OTHER_TAINT,)


def test_recovering_message_counts_down_on_heartbeat() -> None:
    n = FakeNode(cfg=replace(CFG, healthy_for_seconds=2000.0))
    n.step(T0, FRAGMENTED)
    n.step(T0 + 100, HEALTHY)
    assert n.step(T0 + 900, HEALTHY).condition is None  # only the countdown moved
    d = n.step(T0 + 1000, HEALTHY)  # heartbeat due: rewritten, still True, same transition
    assert d.condition is not None
    assert (d.condition.status, d.condition.reason) == ("True", "FreeMemoryFragmented")
    assert d.condition.last_transition == rfc3339(T0)
    assert d.condition.message == (
        "Recovering: healthy for 900s, clears after 2000s (1100s left). "
        "Enough contiguous free memory"
    )


def test_interrupted_recovery_restarts_the_clock() -> None:
    n = _fragmented_and_tainted()
    n.step(T0 + 100, HEALTHY)
    n.step(T0 + 200, AT_RISK)  # 100 s healthy, then at-risk
    for t in (T0 + 210, T0 + 329):
        assert n.step(t, HEALTHY).taint is None
    d = n.step(T0 + 330, HEALTHY)  # 120 s since T0+210
    assert d.taint == "remove"


def test_at_risk_after_fragmentation_neither_clears_nor_taints() -> None:
    n = FakeNode()
    n.step(T0, FRAGMENTED)  # condition True, taint pending (held 0 s)
    for t in range(T0 + 30, T0 + 3000, 300):
        d = n.step(t, AT_RISK)
        assert d.taint is None
        assert "Recovered" not in reasons(d)
        assert n.condition is not None
        assert (n.condition.status, n.condition.reason) == ("True", "FreeMemoryFragmented")
    assert not n.tainted
    assert n.condition is not None
    assert n.condition.last_transition == rfc3339(T0)

    m = _fragmented_and_tainted()
    for t in range(T0 + 100, T0 + 3000, 300):
        assert m.step(t, EXHAUSTED).taint is None
        assert m.tainted
    assert m.condition is not None
    assert m.condition.status == "True"
    assert m.condition.message.startswith("Still short of contiguous memory. ")


def test_transition_time_moves_only_on_status_change() -> None:
    n = FakeNode()
    n.step(T0, HEALTHY)
    d = n.step(T0 + 15, AT_RISK)  # False -> False, reason changes: written, same transition
    assert d.condition is not None
    assert (d.condition.status, d.condition.reason) == ("False", "ContiguousMemoryLow")
    assert d.condition.last_transition == rfc3339(T0)
    assert d.condition.last_heartbeat == rfc3339(T0 + 15)
    assert d.events == ()
    d = n.step(T0 + 30, EXHAUSTED)
    assert d.condition is not None
    assert (d.condition.reason, d.condition.last_transition) == ("FreeMemoryExhausted", rfc3339(T0))
    d = n.step(T0 + 45, FRAGMENTED)
    assert d.condition is not None
    assert d.condition.last_transition == rfc3339(T0 + 45)


def test_unchanged_condition_only_rewritten_on_heartbeat() -> None:
    n = FakeNode()
    n.step(T0, HEALTHY)
    for t in range(T0 + 15, T0 + 900, 15):
        assert n.step(t, HEALTHY).condition is None, t
    d = n.step(T0 + 900, HEALTHY)
    assert d.condition == Condition(
        ConditionStatus.FALSE,
        "ContiguousMemoryAvailable",
        "Enough contiguous free memory",
        rfc3339(T0),
        rfc3339(T0 + 900),
    )
    assert d.events == ()
    assert n.step(T0 + 915, HEALTHY).condition is None
    assert n.step(T0 + 1800, HEALTHY).condition is not None


def test_numbers_alone_wait_for_the_heartbeat_words_do_not() -> None:
    n = FakeNode()
    n.step(T0, replace(HEALTHY, message="Enough: 6,000 blocks (375.5 MiB)"))
    assert (
        n.step(T0 + 15, replace(HEALTHY, message="Enough: 7,123 blocks (445.2 MiB)")).condition
        is None
    )
    worded = replace(HEALTHY, message="Enough: 7,123 blocks; 1 pod(s) stuck in ContainerCreating")
    d = n.step(T0 + 30, worded)
    assert d.condition is not None and d.condition.message == worded.message


def test_a_size_changing_unit_is_a_number_moving_not_new_words() -> None:
    """The size of the free memory in small blocks went from MiB to KiB and back on a busy
    host: each flip was a condition write until the heartbeat would have done."""
    n = FakeNode()
    say = "Enough contiguous free memory. NUMA node 0 (DMA32+Normal): {} blocks ({}), {} free"
    n.step(T0, replace(HEALTHY, message=say.format(333682, "20855 MiB", "169 MiB")))
    for t, small in ((15, "204 KiB"), (30, "1 MiB"), (45, "240 KiB"), (60, "1.2 GiB")):
        msg = say.format(273984 + t, "17124 MiB", small)
        assert n.step(T0 + t, replace(HEALTHY, message=msg)).condition is None, small
    worded = replace(HEALTHY, message=say.format(1, "2 MiB", "3 MiB") + "; hugepages stuck")
    assert n.step(T0 + 75, worded).condition is not None


def test_taint_effect_none_never_taints_and_removes_ours() -> None:
    cfg = replace(CFG, taint_effect="none")
    n = FakeNode(cfg=cfg)
    for t in range(T0, T0 + 3600, 60):
        d = n.step(t, FRAGMENTED)
        assert d.taint is None
        assert "NodeTainted" not in reasons(d)
    assert n.condition is not None
    assert n.condition.status == "True"
    # a taint left by an earlier config (the node's record names it) is removed, fragmented too
    ours = {"key": KEY, "value": "true", "effect": "NoSchedule"}
    m = FakeNode(cfg=cfg, taints=(OTHER_TAINT, ours), owned=frozenset({"NoSchedule"}))
    d = m.step(T0, FRAGMENTED)
    assert d.taint == "remove"
    assert reasons(d) == ["FragmentationDetected", "TaintRemoved"]
    assert m.taints == (OTHER_TAINT,)


def test_may_taint_false_reports_instead() -> None:
    n = FakeNode(may_taint=False)
    n.step(T0, FRAGMENTED)
    d = n.step(T0 + 60, FRAGMENTED)
    assert d.taint is None
    assert reasons(d) == ["TaintSkipped"]
    assert d.events[0].type == "Warning"
    assert "reporting.max_tainted_percent" in d.events[0].message
    assert not n.tainted


def test_unknown_verdict() -> None:
    n = FakeNode()
    n.step(T0, HEALTHY)
    d = n.step(T0 + 15, UNKNOWN)
    assert d.condition is not None
    assert (d.condition.status, d.condition.reason) == ("Unknown", "AssessmentFailed")
    assert d.condition.message == "Cannot assess: /proc/buddyinfo: cannot read"
    assert d.condition.last_transition == rfc3339(T0 + 15)
    assert reasons(d) == ["AssessmentFailed"]
    assert d.taint is None
    # a taint set before stays while the agent cannot see
    m = _fragmented_and_tainted()
    d = m.step(T0 + 75, UNKNOWN)
    assert d.taint is None
    assert m.tainted


def test_one_failed_read_does_not_skip_the_recovery_hold() -> None:
    """Fragmented and tainted; one poll cannot read /proc; the next is healthy. The node has
    been healthy for 0 s of healthy_for_seconds (120): the taint must stay."""
    n = _fragmented_and_tainted()
    n.step(T0 + 75, UNKNOWN)
    d = n.step(T0 + 90, HEALTHY)
    assert d.taint is None
    assert "Recovered" not in reasons(d)
    assert n.tainted
    assert n.condition is not None
    assert n.condition.status != "False"


# --- restarts ---------------------------------------------------------------------------------


def _true_condition(since: float, heartbeat: float) -> Condition:
    return Condition(
        ConditionStatus.TRUE,
        "FreeMemoryFragmented",
        FRAGMENTED.message,
        rfc3339(since),
        rfc3339(heartbeat),
    )


def test_initial_state() -> None:
    assert initial_state(None, T0, wall=T0) == ReportState()
    no_cond = NodeView("n", "u", "1", None, ())
    assert initial_state(no_cond, T0, wall=T0) == ReportState()
    false = NodeView(
        "n", "u", "1", replace(_true_condition(T0, T0), status=ConditionStatus.FALSE), ()
    )
    assert initial_state(false, T0 + 5, wall=T0 + 5) == ReportState()
    true = NodeView("n", "u", "1", _true_condition(T0 - 40, T0 - 10), ())
    assert initial_state(true, T0, wall=T0) == ReportState(Verdict.FRAGMENTED, T0 - 40)
    garbled = NodeView("n", "u", "1", replace(_true_condition(T0, T0), last_transition="?"), ())
    assert initial_state(garbled, T0 + 7, wall=T0 + 7) == ReportState(Verdict.FRAGMENTED, T0 + 7)


def test_restart_keeps_the_hysteresis_clock() -> None:
    """Fragmented since T0-40, agent restarts at T0: the taint comes at T0+20, not T0+60, and
    nothing is re-announced."""
    n = FakeNode(condition=_true_condition(T0 - 40, T0 - 10))
    n.state = initial_state(n.view(), T0, wall=T0)
    d = n.step(T0, FRAGMENTED)
    assert (d.condition, d.taint, d.events) == (None, None, ())
    assert n.step(T0 + 19, FRAGMENTED).taint is None
    d = n.step(T0 + 20, FRAGMENTED)
    assert d.taint == "add"
    assert reasons(d) == ["NodeTainted"]
    assert n.condition is not None
    assert n.condition.last_transition == rfc3339(T0 - 40)


def test_restart_while_tainted_and_healthy_does_not_flap() -> None:
    ours = {"key": KEY, "value": "true", "effect": "NoSchedule"}
    n = FakeNode(condition=_true_condition(T0 - 600, T0 - 10), taints=(OTHER_TAINT, ours))
    n.state = initial_state(n.view(), T0, wall=T0)
    for t in range(T0, T0 + 120, 15):
        d = n.step(t, HEALTHY)
        assert (d.taint, d.events) == (None, ()), t
    d = n.step(T0 + 120, HEALTHY)
    assert d.taint == "remove"
    assert reasons(d) == ["Recovered", "TaintRemoved"]


# --- agent.decide.nodeview ------------------------------------------------------------------------

NODE_JSON: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Node",
    "metadata": {
        "name": "worker-3",
        "uid": "0d3f3c1e-6b2a-4f0e-9f5e-2b7c1a9d8e11",
        "resourceVersion": "918273",
        "labels": {"kubernetes.io/hostname": "worker-3"},
    },
    "spec": {
        "podCIDR": "10.244.3.0/24",
        "taints": [
            {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"},
            {
                "key": "memfrag.dev/fragmented",
                "value": "true",
                "effect": "NoSchedule",
                "timeAdded": "2024-01-23T14:17:01Z",
            },
        ],
    },
    "status": {
        "conditions": [
            {
                "type": "MemoryPressure",
                "status": "False",
                "reason": "KubeletHasSufficientMemory",
                "message": "kubelet has sufficient memory available",
                "lastHeartbeatTime": "2024-01-23T14:20:00Z",
                "lastTransitionTime": "2024-01-01T00:00:00Z",
            },
            {
                "type": "MemoryFragmented",
                "status": "True",
                "reason": "FreeMemoryFragmented",
                "message": "Free memory is fragmented",
                "lastHeartbeatTime": "2024-01-23T14:19:00Z",
                "lastTransitionTime": "2024-01-23T14:16:01Z",
            },
            {
                "type": "Ready",
                "status": "True",
                "reason": "KubeletReady",
                "message": "kubelet is posting ready status",
                "lastHeartbeatTime": "2024-01-23T14:20:00Z",
                "lastTransitionTime": "2024-01-01T00:00:00Z",
            },
        ],
        "capacity": {"memory": "65842340Ki"},
    },
}


def test_node_view_parses_a_node() -> None:
    v = node_view(NODE_JSON)
    assert (v.name, v.uid, v.resource_version) == (
        "worker-3",
        "0d3f3c1e-6b2a-4f0e-9f5e-2b7c1a9d8e11",
        "918273",
    )
    assert v.condition == Condition(
        ConditionStatus.TRUE,
        "FreeMemoryFragmented",
        "Free memory is fragmented",
        "2024-01-23T14:16:01Z",
        "2024-01-23T14:19:00Z",
    )
    assert v.taints == tuple(NODE_JSON["spec"]["taints"])
    assert has_taint(v.taints, "memfrag.dev/fragmented")
    assert not has_taint(v.taints, "memfrag.dev/other")
    since = parse_rfc3339("2024-01-23T14:16:01Z") or -1.0
    assert initial_state(v, 50.0, wall=since + 100) == ReportState(Verdict.FRAGMENTED, -50.0)
    # a transition in the future (our clock stepped back): fragmented since now, never longer
    assert initial_state(v, 50.0, wall=since - 7200) == ReportState(Verdict.FRAGMENTED, 50.0)


def test_node_view_of_a_bare_node() -> None:
    v = node_view({"metadata": {"name": "n"}, "spec": {}, "status": {"conditions": None}})
    assert v == NodeView("n", "", "", None, ())
    assert node_view({}) == NodeView("", "", "", None, ())


def test_condition_json_and_patch() -> None:
    c = Condition(
        ConditionStatus.FALSE,
        "ContiguousMemoryAvailable",
        "ok",
        "2024-01-01T00:00:00Z",
        "2024-01-02T00:00:00Z",
    )
    assert condition_patch(c) == {
        "status": {
            "conditions": [
                {
                    "type": CONDITION_TYPE,
                    "status": "False",
                    "reason": "ContiguousMemoryAvailable",
                    "message": "ok",
                    "lastTransitionTime": "2024-01-01T00:00:00Z",
                    "lastHeartbeatTime": "2024-01-02T00:00:00Z",
                }
            ]
        }
    }
    assert CONDITION_TYPE == "MemoryFragmented"


def test_taint_patch_carries_the_resource_version() -> None:
    v = node_view(NODE_JSON)
    taints = without_taint(v.taints, KEY, {"NoSchedule"})
    assert taint_patch(v.resource_version, taints) == {
        "metadata": {"resourceVersion": "918273"},
        "spec": {"taints": [{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]},
    }


def test_with_taint_replaces_ours_once() -> None:
    v = node_view(NODE_JSON)
    out = with_taint(v.taints, KEY, "PreferNoSchedule", "true", {"NoSchedule"})
    assert out == [
        {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"},
        {"key": KEY, "value": "true", "effect": "PreferNoSchedule"},
    ]
    assert with_taint(tuple(out), KEY, "PreferNoSchedule", "true", ()) == out


OTHER_TAINTS = st.lists(
    st.dictionaries(
        st.sampled_from(["key", "value", "effect", "timeAdded", "x"]),
        st.none() | st.text(max_size=12) | st.integers(),
        max_size=4,
    ).filter(lambda t: t.get("key") != KEY),
    max_size=8,
)
OURS = st.fixed_dictionaries(
    {"key": st.just(KEY), "effect": st.sampled_from(["NoSchedule", "PreferNoSchedule"])},
    optional={"value": st.text(max_size=5)},
)


@settings(max_examples=500, deadline=None, database=None, derandomize=True)
@given(
    others=OTHER_TAINTS,
    ours=st.lists(OURS, max_size=3),
    positions=st.lists(st.integers(0, 20), max_size=3),
    effect=st.sampled_from(["NoSchedule", "PreferNoSchedule"]),
)
def test_taint_edits_keep_every_other_taint(
    others: list[dict[str, Any]],
    ours: list[dict[str, Any]],
    positions: list[int],
    effect: str,
) -> None:
    taints = list(others)
    for t, p in zip(ours, positions, strict=False):
        taints.insert(p % (len(taints) + 1), t)
    snapshot = [dict(t) for t in taints]
    both = {"NoSchedule", "PreferNoSchedule"}  # the node's record says we put on either
    added = with_taint(tuple(taints), KEY, effect, "true", both)
    assert added == [*others, {"key": KEY, "value": "true", "effect": effect}]
    assert sum(1 for t in added if t.get("key") == KEY) == 1
    removed = without_taint(tuple(taints), KEY, both)
    assert removed == others
    assert without_taint(tuple(added), KEY, both) == others
    assert taints == snapshot  # the input is not modified


@pytest.mark.parametrize("status", list(ConditionStatus))
def test_condition_roundtrip_through_node_json(status: ConditionStatus) -> None:
    c = Condition(status, "R", "m", rfc3339(T0), rfc3339(T0 + 1))
    node = {"metadata": {"name": "n"}, "status": condition_patch(c)["status"]}
    assert node_view(node).condition == c


# --- clocks: holds on the monotonic clock, wall time only in what is written ---------------


def _tainted_then_healthy(n: FakeNode) -> None:
    n.step(0.0, FRAGMENTED, wall=T0)
    n.step(60.0, FRAGMENTED, wall=T0 + 60)
    assert n.tainted
    n.step(61.0, HEALTHY, wall=T0 + 61)  # recovery begins


def test_wall_clock_stepped_back_2h_still_clears_after_the_hold() -> None:
    """Before: `now` was the wall clock, so 2 h back left the node tainted, 'healthy for
    -7167s'. The hold runs on the monotonic clock; the timestamps written stay wall time."""
    n = FakeNode()
    _tainted_then_healthy(n)
    d = n.step(91.0, HEALTHY, wall=T0 + 91 - 7200)
    assert d.taint is None and n.state.verdict_since == 61.0  # healthy for 30 s, not -7170 s
    assert n.step(180.0, HEALTHY, wall=T0 + 180 - 7200).taint is None
    d = n.step(181.0, HEALTHY, wall=T0 + 181 - 7200)
    assert d.taint == "remove" and not n.tainted
    assert n.condition is not None and n.condition.last_transition == rfc3339(T0 + 181 - 7200)


def test_wall_clock_stepped_forward_1h_does_not_skip_the_hold() -> None:
    """Before: +1 h made the node 'healthy for 3600s' a second later and cleared it."""
    n = FakeNode()
    _tainted_then_healthy(n)
    d = n.step(62.0, HEALTHY, wall=T0 + 62 + 3600)
    assert d.taint is None and n.tainted
    assert n.condition is not None and n.condition.status == "True"


def test_heartbeat_runs_on_the_monotonic_clock() -> None:
    """After the wall clock steps back, the heartbeat still comes every heartbeat_seconds."""
    n = FakeNode()
    n.step(0.0, HEALTHY, wall=T0)
    assert n.step(899.0, HEALTHY, wall=T0 - 7200).condition is None
    d = n.step(900.0, HEALTHY, wall=T0 - 7200 + 1)
    assert d.condition is not None and d.condition.last_heartbeat == rfc3339(T0 - 7199)


def test_first_heartbeat_after_a_restart_from_the_future_is_due() -> None:
    """Restarted with the wall clock behind the heartbeat we wrote: write one now rather than
    wait until the clock catches up."""
    cond = replace(
        _true_condition(T0, T0), status=ConditionStatus.FALSE, reason="ContiguousMemoryAvailable"
    )
    n = FakeNode(condition=replace(cond, message=HEALTHY.message))
    assert n.step(5.0, HEALTHY, wall=T0 - 7200).condition is not None


# --- the taint is ours by key AND effect -----------------------------------------------------

THEIRS = {"key": KEY, "value": "x", "effect": "PreferNoSchedule"}


def test_another_tools_taint_under_our_key_stays() -> None:
    """Before: taints were ours by key alone, so another tool's key:PreferNoSchedule was
    removed with ours, and counted as ours (the node looked tainted by the agent)."""
    n = FakeNode(taints=(OTHER_TAINT, THEIRS))
    n.step(T0, FRAGMENTED)
    d = n.step(T0 + 60, FRAGMENTED)
    assert d.taint == "add"
    assert {t["effect"] for t in n.taints if t["key"] == KEY} == {"NoSchedule", "PreferNoSchedule"}
    n.step(T0 + 61, HEALTHY)
    d = n.step(T0 + 181, HEALTHY)
    assert d.taint == "remove"
    assert n.taints == (OTHER_TAINT, THEIRS)
    h = FakeNode(taints=(OTHER_TAINT, THEIRS))
    assert h.step(T0, HEALTHY).taint is None  # healthy: nothing of ours to remove


def test_a_changed_taint_effect_is_applied_to_our_taint() -> None:
    """Before: the taint kept its old effect for the whole episode. The node's record names
    NoSchedule as ours: it is replaced by the new effect at the next decision."""
    ours = {"key": KEY, "value": "true", "effect": "NoSchedule"}
    cfg = replace(CFG, taint_effect="PreferNoSchedule")
    n = FakeNode(
        cfg=cfg,
        condition=_true_condition(T0 - 600, T0 - 10),
        taints=(OTHER_TAINT, ours),
        owned=frozenset({"NoSchedule"}),
    )
    d = n.step(T0, FRAGMENTED)
    assert d.taint == "add" and reasons(d) == ["TaintChanged"]
    assert n.taints == (OTHER_TAINT, {"key": KEY, "value": "true", "effect": "PreferNoSchedule"})
    assert n.step(T0 + 15, FRAGMENTED).taint is None  # applied once
