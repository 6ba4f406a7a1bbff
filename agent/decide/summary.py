"""The Node's summary annotation (memfrag.dev/summary): per NUMA node the state and the free
blocks at the target order, the cause and the stuck pods, in compact JSON. `kubectl memfrag
nodes` reads it; the daemon writes it in the same PATCH as its condition, so it costs no API
write of its own and is as fresh as the condition (rewritten when a state or the cause changes,
else with the heartbeat)."""

from __future__ import annotations

import json
from dataclasses import dataclass

from agent.assess.verdict import Assessment, CauseKind, NodeState

MAX_CHARS = 16384  # a summary larger than this was not written by the agent


class SummaryError(ValueError):
    """The annotation is not a summary the agent wrote: says what is wrong with it."""


@dataclass(frozen=True)
class NumaSummary:
    node: int
    state: NodeState
    blocks: int  # free blocks of order >= `order` in the zones that serve the workload


@dataclass(frozen=True)
class Summary:
    order: int
    cause: CauseKind
    numa: tuple[NumaSummary, ...]
    stuck: int  # pods stuck in ContainerCreating

    def to_annotation(self) -> str:
        return json.dumps(
            {
                "order": self.order,
                "cause": self.cause.value,
                "stuck": self.stuck,
                "numa": [
                    {"node": n.node, "state": n.state.value, "blocks": n.blocks} for n in self.numa
                ],
            },
            separators=(",", ":"),
        )

    def words(self) -> tuple[object, ...]:
        """What a rewrite waits for: the states and the cause, not the numbers."""
        return (self.order, self.cause, tuple((n.node, n.state) for n in self.numa), self.stuck > 0)


def summary_of(a: Assessment, stuck: int) -> Summary:
    return Summary(
        order=a.order,
        cause=a.cause.kind,
        numa=tuple(NumaSummary(n.node, n.state, n.blocks_at_target) for n in a.numa),
        stuck=stuck,
    )


def _int(doc: dict[str, object], key: str) -> int:
    value = doc.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise SummaryError(f"{key!r} is {value!r}, not a count")
    return value


def parse_summary(text: str | None) -> Summary | None:
    """None when there is none; SummaryError naming the fault when it is not ours."""
    if text is None:
        return None
    if len(text) > MAX_CHARS:
        raise SummaryError(f"{len(text)} characters, more than the agent writes ({MAX_CHARS})")
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise SummaryError(f"not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise SummaryError("not a JSON object")
    numa = doc.get("numa")
    if not isinstance(numa, list):
        raise SummaryError("'numa' is not a list")
    try:
        cause = CauseKind(str(doc.get("cause")))
        nodes = []
        for n in numa:
            if not isinstance(n, dict):
                raise SummaryError("a NUMA entry is not an object")
            nodes.append(
                NumaSummary(_int(n, "node"), NodeState(str(n.get("state"))), _int(n, "blocks"))
            )
    except ValueError as exc:
        raise SummaryError(str(exc)) from exc
    return Summary(_int(doc, "order"), cause, tuple(nodes), _int(doc, "stuck"))
