"""agent.decide.contiguity: the bucket from the emptiest NUMA node's blocks against the lines,
with hysteresis, written only when it changes, removed when turned off."""

from __future__ import annotations

import dataclasses

import pytest

from agent.config.model import AssessmentConfig
from agent.decide.contiguity import LABEL, Contiguity, LabelChange, bucket, label_change
from agent.decide.nodeview import NodeView
from tests.unit.decide.test_cycle import FRAG, HEALTHY, UNMOVABLE

CFG = AssessmentConfig()  # fragmented below 64, at risk below 512: medium to 1024


@pytest.mark.parametrize(
    ("blocks", "want"),
    [(0, "none"), (63, "none"), (64, "low"), (511, "low"), (512, "medium"), (1024, "high")],
)
def test_buckets_from_the_lines(blocks: int, want: str) -> None:
    assert bucket(blocks, None, CFG) == want


def test_hysteresis_moves_only_past_the_margin() -> None:
    assert bucket(530, "low", CFG) == Contiguity.LOW  # 512 crossed by under 10 %
    assert bucket(564, "low", CFG) == Contiguity.MEDIUM  # 512 * 1.1 = 563.2
    assert bucket(480, "medium", CFG) == Contiguity.MEDIUM  # 512 * 0.9 = 460.8
    assert bucket(460, "medium", CFG) == Contiguity.LOW
    assert bucket(0, "high", CFG) == Contiguity.NONE  # a fall past several lines at once
    assert bucket(700, "bogus", CFG) == Contiguity.MEDIUM  # not ours to keep: replaced


def view(label: str | None) -> NodeView:
    return NodeView("n1", "u", "1", None, (), labels={LABEL: label} if label else {"other": "x"})


def test_written_only_when_it_changes_and_removed_when_off() -> None:
    first = label_change(HEALTHY, view(None), True, CFG)
    assert first == LabelChange("high")
    assert label_change(HEALTHY, view("high"), True, CFG) is None  # no write per tick
    assert label_change(FRAG, view("high"), True, CFG) == LabelChange("none")
    assert label_change(None, view("high"), True, CFG) is None  # not assessed: left as is
    assert label_change(HEALTHY, view("high"), False, CFG) == LabelChange(None)
    assert label_change(HEALTHY, view(None), False, CFG) is None
    assert label_change(HEALTHY, None, True, CFG) is None  # the Node not known yet
    raised = dataclasses.replace(UNMOVABLE, order=9)  # a tick at a finding's order
    assert label_change(raised, view("none"), True, CFG) is None


def test_the_emptiest_numa_node_counts() -> None:
    nodes = sorted(n.blocks_at_target for n in UNMOVABLE.numa)
    assert len(nodes) == 2
    want = bucket(nodes[0], None, CFG)
    assert label_change(UNMOVABLE, view(None), True, CFG) == LabelChange(want.value)
