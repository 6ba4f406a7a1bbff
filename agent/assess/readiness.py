"""Whether one look at the kernel can serve a need: M free blocks of order N (on NUMA node K),
with the reasons when it cannot. Pure; `memfrag-agent ready` asks it (agent.cli.ready).

The blocks counted are assess()'s: free blocks of order >= N (larger ones counted as several)
in the zones that serve the workload, the same numbers `check` and the node condition show.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from agent.assess.verdict import Assessment, NodeState, assess
from agent.config.model import AssessmentConfig
from agent.kernel.observation import Observation


@dataclass(frozen=True)
class Need:
    order: int
    blocks: int
    numa_node: int | None = None


@dataclass(frozen=True)
class Gate:
    """The answer for one look at the kernel."""

    ok: bool
    have: int  # free blocks of the order where they count (the NUMA node, or all of them)
    reasons: tuple[str, ...]
    assessment: Assessment


def where(need: Need) -> str:
    return "this node" if need.numa_node is None else f"NUMA node {need.numa_node}"


def gate(obs: Observation, cfg: AssessmentConfig, need: Need) -> Gate:
    """Pure: whether the observation can serve the need. The assessment is made with the need
    as the fragmented line, so the NUMA nodes short of it read as fragmented (or exhausted, when
    the memory itself is short) and the ladder fits their cause."""
    gate_cfg = dataclasses.replace(
        cfg,
        fragmented_below_blocks=need.blocks,
        at_risk_below_blocks=max(need.blocks, cfg.at_risk_below_blocks),
    )
    a = assess(obs, gate_cfg, need.order)
    if need.numa_node is not None:
        mine = [n for n in a.numa if n.node == need.numa_node]
        if not mine:
            known = ", ".join(str(n.node) for n in a.numa) or "none"
            reason = f"NUMA node {need.numa_node} has no memory here (NUMA nodes: {known})"
            return Gate(False, 0, (reason,), a)
    else:
        mine = list(a.numa)
    have = sum(n.blocks_at_target for n in mine)
    size_kib = (a.page_size << need.order) // 1024
    head = (
        f"{where(need)} holds {have} free blocks of order>={need.order} ({size_kib} KiB each), "
        f"{need.blocks} needed"
    )
    if have >= need.blocks:
        return Gate(True, have, (head,), a)
    reasons = [head]
    for n in mine:
        reasons.append(
            f"NUMA node {n.node} ({'+'.join(n.zones)}): {n.blocks_at_target} blocks, {n.state}"
        )
    free_pages = sum(n.free_pages for n in mine)
    if need.blocks << need.order > free_pages:
        reasons.append(
            f"{need.blocks} such blocks are more than all free memory there "
            f"({free_pages * a.page_size >> 20} MiB): only freeing memory can serve them"
        )
    if all(n.state == NodeState.EXHAUSTED for n in mine):
        reasons.append(
            "free memory itself is short (at the zone watermarks): compaction cannot help"
        )
    elif obs.pagetype is not None:
        reasons.append(f"cause: {a.cause.kind}: {a.cause.explanation}")
    reasons += [f"not read: {g}" for g in a.gaps]
    return Gate(False, have, tuple(reasons), a)
