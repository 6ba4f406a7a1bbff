"""The Node label that says how much contiguous memory the node has (reporting.contiguity_label):
`memfrag.dev/contiguity=high|medium|low|none`, for nodeSelector and node affinity, so pods that
need contiguous memory can prefer nodes before the taint fires.

The bucket comes from the free blocks at the target order on the emptiest NUMA node (the pod may
land on any) against the assessment's lines: none below fragmented_below_blocks, low below
at_risk_below_blocks, medium below twice that, high above. Hysteresis: the bucket moves only once
the count is 10 % past the line it crosses, so a count that wobbles around a line writes nothing;
and a label is written only when its value changes, never per tick."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from agent.assess.verdict import Assessment
from agent.config.model import AssessmentConfig
from agent.decide.nodeview import NodeView

LABEL = "memfrag.dev/contiguity"
MARGIN = 0.10


class Contiguity(StrEnum):
    NONE = "none"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


_RANK = {c: i for i, c in enumerate(Contiguity)}


@dataclass(frozen=True)
class LabelChange:
    value: str | None  # None: remove our label


def raw(blocks: float, cfg: AssessmentConfig) -> Contiguity:
    if blocks < cfg.fragmented_below_blocks:
        return Contiguity.NONE
    if blocks < cfg.at_risk_below_blocks:
        return Contiguity.LOW
    if blocks < 2 * cfg.at_risk_below_blocks:
        return Contiguity.MEDIUM
    return Contiguity.HIGH


def bucket(blocks: int, current: str | None, cfg: AssessmentConfig) -> Contiguity:
    """The bucket for `blocks`, moving off `current` (the label as the Node has it) only past
    the margin; a value that is no bucket (someone else wrote it) is replaced at once."""
    try:
        cur = Contiguity(current) if current is not None else None
    except ValueError:
        cur = None
    if cur is None:
        return raw(blocks, cfg)
    up = raw(blocks / (1 + MARGIN), cfg)
    down = raw(blocks / (1 - MARGIN), cfg)
    if _RANK[up] > _RANK[cur]:
        return up
    if _RANK[down] < _RANK[cur]:
        return down
    return cur


def label_change(
    a: Assessment | None, view: NodeView | None, enabled: bool, cfg: AssessmentConfig
) -> LabelChange | None:
    """What to write to the label, or None: nothing (the Node already says it, or the node
    was not assessed at the target order). Turned off, our label comes off."""
    if view is None:
        return None
    cur = view.labels.get(LABEL)
    if not enabled:
        return LabelChange(None) if cur is not None else None
    if a is None or not a.numa or a.order != cfg.target_order:
        return None
    b = bucket(min(n.blocks_at_target for n in a.numa), cur, cfg)
    return None if b == cur else LabelChange(b.value)
