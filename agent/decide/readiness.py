"""Which ladder prepares a node for a readiness need: the steps for the NUMA nodes the need
concerns (those short of it, not exhausted). Pure; agent.cli.ready runs them once each."""

from __future__ import annotations

import dataclasses

from agent.assess.readiness import Gate, Need
from agent.assess.verdict import NodeState, Verdict
from agent.decide.ladder import Step, ladder


def preparation(
    g: Gate, need: Need, per_node_compaction: tuple[int, ...], allow_drop_caches: bool
) -> tuple[Step, ...]:
    """The ladder for the NUMA nodes the need concerns: those short of it, not exhausted."""
    concerned = (
        {need.numa_node} if need.numa_node is not None else {n.node for n in g.assessment.numa}
    )
    numa = tuple(
        n
        if n.node in concerned
        else dataclasses.replace(n, state=NodeState.HEALTHY)  # not this gate's business
        for n in g.assessment.numa
    )
    if not any(n.state == NodeState.FRAGMENTED for n in numa):
        return ()
    a = dataclasses.replace(g.assessment, verdict=Verdict.FRAGMENTED, numa=numa)
    return ladder(a, per_node_compaction, allow_drop_caches)
