"""The remediation ladder: which actions, least disruptive first, fit the assessed cause.

Pure: the policy decides *whether* and *when* to climb it; this only says *what* helps.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.assess.verdict import Assessment, CauseKind, Verdict
from agent.kernel.actions import ActionKind


@dataclass(frozen=True)
class Step:
    action: ActionKind
    arg: int | None  # NUMA node for compact-node, 1/2/3 for drop-caches
    why: str

    @property
    def name(self) -> str:
        return self.action if self.arg is None else f"{self.action}={self.arg}"


def ladder(
    a: Assessment, per_node_compaction: tuple[int, ...], allow_drop_caches: bool = True
) -> tuple[Step, ...]:
    """Steps for a fragmented assessment; () when not fragmented (healthy, or exhausted: short
    of memory, not of contiguity).

    An unmovable cause gets one short attempt, not the ladder: dropping clean page cache gives
    compaction room to move the movable pages that share pageblocks with the kernel's (the lab
    measured 95 to 507 order-4 blocks regained that way). If that fails, the rest is the
    operator's call (drain or reboot), and the policy never repeats it within the episode."""
    if a.verdict != Verdict.FRAGMENTED:
        return ()
    nodes = a.fragmented_numa_nodes
    all_nodes = tuple(n.node for n in a.numa)
    compaction: list[Step] = []
    if nodes and set(nodes) < set(all_nodes) and set(nodes) <= set(per_node_compaction):
        compaction += [
            Step(ActionKind.COMPACT_NODE, n, f"only NUMA node {n} is fragmented: compact it alone")
            for n in nodes
        ]
    compaction.append(Step(ActionKind.COMPACT, None, "migrate movable pages to merge free blocks"))
    drop_page = Step(
        ActionKind.DROP_CACHES, 1, "free clean page cache so its free neighbours merge"
    )
    drop_slab = Step(ActionKind.DROP_CACHES, 2, "free reclaimable slab (dentries, inodes)")
    if a.cause.kind == CauseKind.UNMOVABLE:
        steps = [
            Step(ActionKind.DROP_CACHES, 1, "one attempt: free page cache so compaction has room"),
            Step(
                ActionKind.COMPACT,
                None,
                "one attempt: move the movable pages out of mixed pageblocks",
            ),
        ]
    elif a.cause.kind == CauseKind.RECLAIMABLE:
        steps = [drop_slab, *compaction]
    else:  # movable or unknown: compaction keeps the page cache; dropping it costs I/O later
        steps = [*compaction, drop_page, drop_slab]
    if not allow_drop_caches:
        steps = [s for s in steps if s.action != ActionKind.DROP_CACHES]
    return tuple(steps)
