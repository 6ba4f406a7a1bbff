"""The second condition (MemoryFragmentationUnremediable, what a NodeHealthCheck selects) and the
summary annotation: decided in agent.decide, pure, written with the condition. Assessments from
real captures (tests/fixtures/proc)."""

from __future__ import annotations

import dataclasses
import json
from typing import Literal

import pytest

from agent.assess.verdict import Assessment, CauseKind, NodeState, Reason
from agent.config.model import Config
from agent.decide.cycle import TickDecision, TickState, decide_tick, escalation
from agent.decide.nodeview import (
    SUMMARY_ANNOTATION,
    UNREMEDIABLE_TYPE,
    Condition,
    ConditionStatus,
    NodeView,
    condition_patch,
    node_view,
    removal_patch,
)
from agent.decide.remediation import ActionOutcome, after_action
from agent.decide.report import Decision
from agent.decide.summary import SummaryError, parse_summary, summary_of
from tests.unit.decide.test_cycle import FRAG, HEALTHY, UNMOVABLE, cfg, facts, view


def climb(a: Assessment, c: Config) -> tuple[TickDecision, TickState]:
    """Every step of the ladder run without recovery: the decision after the last."""
    d = decide_tick(facts(a, view(ConditionStatus.FALSE)), TickState(), c)
    while d.run is not None:
        remedy = after_action(d.state.remedy, d.run, 100.0, ActionOutcome.NO_EFFECT, 0, 0)
        d = decide_tick(
            facts(a, view(ConditionStatus.TRUE)), dataclasses.replace(d.state, remedy=remedy), c
        )
    return d, d.state


def unremediable(d: TickDecision) -> Condition:
    report = d.report
    assert report is not None and report.condition is not None
    assert report.unremediable is not None
    return report.unremediable


def written(d: TickDecision) -> Decision:
    assert d.report is not None
    return d.report


def test_unremediable_is_true_only_once_the_unmovable_causes_one_attempt_failed() -> None:
    first = decide_tick(facts(UNMOVABLE, view(ConditionStatus.FALSE)), TickState(), cfg())
    u = unremediable(first)
    assert first.run is not None  # a step is still to come: not yet
    assert u is not None and u.status == ConditionStatus.FALSE
    assert u.reason == Reason.REMEDIATION_NOT_EXHAUSTED
    d, _ = climb(UNMOVABLE, cfg())
    u = unremediable(d)
    assert u.type == UNREMEDIABLE_TYPE and u.status == ConditionStatus.TRUE
    assert u.reason == Reason.REMEDIATION_EXHAUSTED
    assert "operator's call" in u.message


def test_unremediable_after_a_movable_ladder_ran_out_too() -> None:
    d, _ = climb(FRAG, cfg())
    assert unremediable(d).status == ConditionStatus.TRUE


@pytest.mark.parametrize("mode", ["off", "dry-run"])
def test_an_agent_that_does_not_act_never_says_unremediable(mode: str) -> None:
    """Remediation off or in dry-run: nothing was tried, so nothing is known not to help."""
    m: Literal["off", "dry-run"] = "off" if mode == "off" else "dry-run"
    _, state = climb(UNMOVABLE, cfg(m))
    again = decide_tick(facts(UNMOVABLE, view(ConditionStatus.TRUE)), state, cfg(m))
    assert unremediable(again).status == ConditionStatus.FALSE
    assert f"Remediation is {mode}" in unremediable(again).message
    assert escalation(UNMOVABLE, None, cfg(m)).status == ConditionStatus.UNKNOWN


def test_a_healthy_or_unassessed_node_is_not_unremediable() -> None:
    h = decide_tick(facts(HEALTHY, view(None)), TickState(), cfg())
    assert unremediable(h).status == ConditionStatus.FALSE
    unknown = decide_tick(facts(None, view(ConditionStatus.TRUE), error="x"), TickState(), cfg())
    assert unremediable(unknown).status == ConditionStatus.UNKNOWN


def test_the_summary_rides_on_the_condition_write_and_its_words_rewrite_it() -> None:
    d = decide_tick(facts(FRAG, view(ConditionStatus.FALSE)), TickState(), cfg())
    assert d.report is not None and d.report.summary is not None
    s = parse_summary(d.report.summary)
    assert s == summary_of(FRAG, 0)
    assert s is not None and s.numa and s.numa[0].state == NodeState.FRAGMENTED
    assert s.cause == FRAG.cause.kind
    r = written(d)
    assert r.condition is not None and r.unremediable is not None
    patch = condition_patch(r.condition, r.unremediable, summary=r.summary)
    shown = node_view({"metadata": {"name": "n1"}, **patch})
    assert shown.summary == d.report.summary and shown.unremediable == d.report.unremediable
    # The Node as written, a tick later: the same words write nothing until the heartbeat...
    later = dataclasses.replace(facts(FRAG, shown), now=101.0, wall=facts(FRAG, None).wall + 1)
    assert written(decide_tick(later, d.state, cfg())).condition is None
    # ...but a NUMA node changing state does.
    stale = dataclasses.replace(
        shown, summary=summary_of(HEALTHY, 0).to_annotation().replace('"order":4', '"order":4')
    )
    moved = dataclasses.replace(later, view=stale)
    assert written(decide_tick(moved, d.state, cfg())).condition is not None


def test_the_summary_numbers_alone_wait_for_the_heartbeat() -> None:
    d = decide_tick(facts(FRAG, view(ConditionStatus.FALSE)), TickState(), cfg())
    assert d.report is not None
    r = written(d)
    assert r.condition is not None and r.unremediable is not None
    patch = condition_patch(r.condition, r.unremediable, summary=r.summary)
    doc = json.loads(str(d.report.summary))
    doc["numa"][0]["blocks"] += 7  # numbers moved, words did not
    patch["metadata"]["annotations"][SUMMARY_ANNOTATION] = json.dumps(doc)
    shown = node_view({"metadata": {"name": "n1"}, **patch})
    later = dataclasses.replace(facts(FRAG, shown), now=101.0)
    assert written(decide_tick(later, d.state, cfg())).condition is None


def test_summary_round_trips_and_is_small() -> None:
    s = summary_of(UNMOVABLE, 3)
    text = s.to_annotation()
    assert parse_summary(text) == s and len(text) < 200
    assert s.cause == CauseKind.UNMOVABLE and s.stuck == 3


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("{", "not JSON"),
        ("[]", "not a JSON object"),
        ('{"numa": 3}', "'numa' is not a list"),
        ('{"order": 4, "cause": "movable", "stuck": 0, "numa": [1]}', "not an object"),
        ('{"order": 4, "cause": "lava", "stuck": 0, "numa": []}', "lava"),
        ('{"order": -1, "cause": "movable", "stuck": 0, "numa": []}', "'order' is -1"),
        ('{"order": 4, "cause": "movable", "stuck": true, "numa": []}', "'stuck' is True"),
        (
            '{"order": 4, "cause": "movable", "stuck": 0, "numa": [{"node": 0, "state": "x"}]}',
            "'x'",
        ),
        ("x" * 20000, "more than the agent writes"),
    ],
)
def test_a_summary_not_ours_is_refused_naming_why(text: str, says: str) -> None:
    with pytest.raises(SummaryError) as err:
        parse_summary(text)
    assert says in str(err.value)


def test_removal_patch_names_both_conditions_and_the_annotation() -> None:
    p = removal_patch()
    assert p["metadata"]["annotations"] == {SUMMARY_ANNOTATION: None}
    assert [c["type"] for c in p["status"]["conditions"]] == [
        "MemoryFragmented",
        UNREMEDIABLE_TYPE,
    ]
    assert NodeView("n", "u", "1", None, ()).ours is False
