"""Judge fragmentation from an Observation: pure functions, no I/O.

Per (NUMA node, zone, order) we compute the kernel's own indices; per NUMA node we count the
free blocks at the target order in the zones that serve the workload; the node verdict is the
worst NUMA node's, because a task confined to one node (cpuset mems, __GFP_THISNODE slab
allocations) fails there whatever the other nodes hold, and per-node compaction can fix it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import StrEnum

from agent.assess.indices import contig_info, fragmentation_index_milli, unusable_index_milli
from agent.config.model import AssessmentConfig
from agent.kernel.buddyinfo import ZoneBlocks
from agent.kernel.observation import Observation
from agent.kernel.pagetypeinfo import PageTypeInfo
from agent.kernel.zoneinfo import ZoneWatermarks


class Verdict(StrEnum):
    """The node's verdict. UNKNOWN is never assess()'s answer: it is what the daemon reports when
    the node could not be assessed at all (the condition turns Unknown)."""

    HEALTHY = "healthy"
    AT_RISK = "at-risk"
    FRAGMENTED = "fragmented"
    UNKNOWN = "unknown"


class NodeState(StrEnum):
    """One NUMA node's state: exhaustion (short of memory, not of contiguity) told apart."""

    HEALTHY = "healthy"
    AT_RISK = "at-risk"
    FRAGMENTED = "fragmented"
    EXHAUSTED = "exhausted"


class CauseKind(StrEnum):
    """Where the stranded free memory sits, by pageblock migrate type."""

    MOVABLE = "movable"
    RECLAIMABLE = "reclaimable"
    UNMOVABLE = "unmovable"
    UNKNOWN = "unknown"


class Reason(StrEnum):
    """The condition's reasons, defined once (the NHC example and alerts select on them)."""

    CONTIGUOUS_MEMORY_AVAILABLE = "ContiguousMemoryAvailable"
    CONTIGUOUS_MEMORY_LOW = "ContiguousMemoryLow"
    FREE_MEMORY_FRAGMENTED = "FreeMemoryFragmented"
    FREE_MEMORY_EXHAUSTED = "FreeMemoryExhausted"
    # the daemon's, while not fragmented: a NUMA node's trend crosses the line within the horizon
    FRAGMENTATION_PREDICTED = "FragmentationPredicted"
    ASSESSMENT_FAILED = "AssessmentFailed"  # the daemon's, when nothing could be assessed
    # The daemon's second condition, MemoryFragmentationUnremediable (what a NodeHealthCheck
    # selects): True with REMEDIATION_EXHAUSTED once every step the agent may take ran in this
    # fragmented episode without recovery (for an unmovable cause: its one attempt); False with
    # REMEDIATION_NOT_EXHAUSTED otherwise (not fragmented, or a step is still to come).
    REMEDIATION_EXHAUSTED = "RemediationExhausted"
    REMEDIATION_NOT_EXHAUSTED = "RemediationNotExhausted"


REASONS: dict[NodeState, Reason] = {
    NodeState.HEALTHY: Reason.CONTIGUOUS_MEMORY_AVAILABLE,
    NodeState.AT_RISK: Reason.CONTIGUOUS_MEMORY_LOW,
    NodeState.FRAGMENTED: Reason.FREE_MEMORY_FRAGMENTED,
    NodeState.EXHAUSTED: Reason.FREE_MEMORY_EXHAUSTED,
}
_SEVERITY: dict[NodeState, int] = {
    NodeState.HEALTHY: 0,
    NodeState.AT_RISK: 1,
    NodeState.EXHAUSTED: 2,
    NodeState.FRAGMENTED: 3,
}
EXTFRAG_THRESHOLD_DEFAULT = 500
_CAUSE_TYPES = ("Movable", "Reclaimable", "Unmovable")


@dataclass(frozen=True)
class ZoneReport:
    node: int
    zone: str
    free: tuple[int, ...]
    free_pages: int
    managed_pages: int | None
    workload: bool  # whether this zone drives the verdict
    blocks_at_target: int
    unusable_milli: int
    fragindex_milli: int
    watermark_pages: int | None
    exhausted: bool


@dataclass(frozen=True)
class NumaReport:
    node: int
    state: NodeState
    blocks_at_target: int
    free_pages: int
    zones: tuple[str, ...]  # workload zones counted


@dataclass(frozen=True)
class Cause:
    kind: CauseKind
    # Share (0..1) of the free pages stranded below the target order, per migrate type.
    stranded_share: tuple[tuple[str, float], ...]
    explanation: str


@dataclass(frozen=True)
class Assessment:
    verdict: Verdict
    reason: Reason
    message: str
    order: int
    exhausted: bool
    cause: Cause
    numa: tuple[NumaReport, ...]
    zones: tuple[ZoneReport, ...]
    gaps: tuple[str, ...]
    page_size: int = 4096

    @property
    def fragmented_numa_nodes(self) -> tuple[int, ...]:
        return tuple(n.node for n in self.numa if n.state == NodeState.FRAGMENTED)


def _size(pages: int, page_size: int) -> str:
    kib = pages * page_size // 1024
    return f"{kib // 1024} MiB" if kib >= 1024 else f"{kib} KiB"


def _matching_zoneinfo(
    obs: Observation, gaps: list[str]
) -> tuple[dict[tuple[int, str], ZoneWatermarks], set[int]]:
    """zoneinfo's entries by (node, zone), and the NUMA nodes whose every buddyinfo zone has
    one. A zoneinfo that does not describe buddyinfo's zones (from another machine or another
    moment) would turn every zone into 'not workload' and flip the verdict: where it falls
    short, the zones are chosen as without zoneinfo, and the report says so."""
    if obs.zoneinfo is None:
        return {}, set()
    wms = {(w.node, w.zone): w for w in obs.zoneinfo}
    missing = [z for z in obs.buddy if (z.node, z.zone) not in wms]
    if len(missing) == len(obs.buddy):
        gaps.append(
            "zoneinfo names none of buddyinfo's zones: ignored (zones chosen by name, no "
            "watermarks)"
        )
        return {}, set()
    if missing:
        names = ", ".join(f"node {z.node} zone {z.zone}" for z in missing[:4])
        more = f" and {len(missing) - 4} more" if len(missing) > 4 else ""
        gaps.append(f"zoneinfo lacks {names}{more}: on those NUMA nodes zones are chosen by name")
    lacking = {z.node for z in missing}
    return wms, {z.node for z in obs.buddy} - lacking


def _workload(
    z: ZoneBlocks, wm: ZoneWatermarks | None, node_managed: int, share: float, have_zoneinfo: bool
) -> bool:
    """Zones that hardly serve the workload (the 16 MiB DMA zone, DMA32 on a large machine)
    must not drive the verdict: their depletion is normal and their blocks would mask a
    fragmented Normal zone."""
    if not have_zoneinfo:
        return z.zone != "DMA"  # only buddyinfo: exclude the ISA DMA zone by name
    if wm is None or wm.managed == 0 or node_managed == 0:
        return False
    return wm.managed / node_managed >= share


def _zone_report(
    z: ZoneBlocks,
    wm: ZoneWatermarks | None,
    workload: bool,
    order: int,
    cfg: AssessmentConfig,
    extfrag_threshold: int,
) -> ZoneReport:
    fragindex = fragmentation_index_milli(z.free, order)
    blocks = z.blocks_at_or_above(order)
    watermark = getattr(wm, cfg.exhaustion_watermark) if wm is not None else None
    # Short of memory rather than contiguity: at or below the watermark, or (the kernel's own
    # test for costly orders) no suitable block and a fragmentation index at or below
    # vm.extfrag_threshold, where the kernel itself would reclaim instead of compacting.
    exhausted = (watermark is not None and z.free_pages <= watermark) or (
        blocks == 0 and 0 <= fragindex <= extfrag_threshold
    )
    return ZoneReport(
        node=z.node,
        zone=z.zone,
        free=z.free,
        free_pages=z.free_pages,
        managed_pages=wm.managed if wm is not None else None,
        workload=workload,
        blocks_at_target=blocks,
        unusable_milli=unusable_index_milli(z.free, order),
        fragindex_milli=fragindex,
        watermark_pages=watermark,
        exhausted=exhausted,
    )


def _numa_state(zones: list[ZoneReport], cfg: AssessmentConfig) -> NodeState:
    blocks = sum(z.blocks_at_target for z in zones)
    if blocks < cfg.fragmented_below_blocks:
        if zones and all(z.exhausted for z in zones):
            return NodeState.EXHAUSTED
        return NodeState.FRAGMENTED
    if blocks < cfg.at_risk_below_blocks:
        return NodeState.AT_RISK
    return NodeState.HEALTHY


def find_cause(
    pagetype: PageTypeInfo | None, zones: list[tuple[int, str]], order: int, page_size: int = 4096
) -> Cause:
    """Where the free memory stranded below `order` sits, by pageblock migrate type.

    Free pages in Movable pageblocks sit between movable pages (user memory, page cache) that
    compaction can migrate; in Reclaimable pageblocks between reclaimable slab (dentries,
    inodes) that dropping caches frees; in Unmovable ones between kernel memory nothing frees.
    """
    if pagetype is None:
        return Cause(
            CauseKind.UNKNOWN, (), "pagetypeinfo unavailable (it is root-only): cause unknown"
        )
    wanted = set(zones)
    stranded = dict.fromkeys(_CAUSE_TYPES, 0)
    for row in pagetype.free:
        if (row.node, row.zone) in wanted and row.migratetype in stranded:
            stranded[row.migratetype] += row.pages_below(order)
    total = sum(stranded.values())
    if total == 0:
        return Cause(CauseKind.UNKNOWN, (), "no free pages below the target order in pagetypeinfo")
    shares = tuple((t, stranded[t] / total) for t in _CAUSE_TYPES)
    top, top_share = max(shares, key=lambda s: s[1])
    kind = CauseKind(top.lower())
    remedy = {
        CauseKind.MOVABLE: "compaction can merge them",
        CauseKind.RECLAIMABLE: "dropping slab caches (dentries, inodes) can free their neighbours",
        CauseKind.UNMOVABLE: "their neighbours are kernel memory that neither compaction nor "
        "dropping caches frees (one short attempt may still help where page cache shares the "
        "blocks)",
    }[kind]
    return Cause(
        kind,
        shares,
        f"{top_share:.0%} of the free memory in blocks below order {order} "
        f"({_size(total, page_size)}) sits in {top} pageblocks: {remedy}",
    )


def assess(obs: Observation, cfg: AssessmentConfig, order: int | None = None) -> Assessment:
    """Verdict for one order (default: the configured target order)."""
    order = cfg.target_order if order is None else order
    gaps = list(obs.gaps)
    wms, zi_nodes = _matching_zoneinfo(obs, gaps)
    managed_by_node: dict[int, int] = {}
    for w in wms.values():
        managed_by_node[w.node] = managed_by_node.get(w.node, 0) + w.managed
    extfrag = obs.sysctl.get("extfrag_threshold", EXTFRAG_THRESHOLD_DEFAULT)
    max_order = max(len(z.free) for z in obs.buddy) - 1
    if order > max_order:
        gaps.append(f"order {order} is above this kernel's largest order {max_order}")

    zones: list[ZoneReport] = []
    by_node: dict[int, list[int]] = {}  # indices into zones: one pass, not one per NUMA node
    for z in obs.buddy:
        wm = wms.get((z.node, z.zone))
        workload = _workload(
            z, wm, managed_by_node.get(z.node, 0), cfg.min_zone_share, z.node in zi_nodes
        )
        by_node.setdefault(z.node, []).append(len(zones))
        zones.append(_zone_report(z, wm, workload, order, cfg, extfrag))

    numa: list[NumaReport] = []
    counted: dict[int, list[ZoneReport]] = {}
    for node in sorted(by_node):
        mine = [zones[i] for i in by_node[node] if zones[i].workload]
        if not mine:  # e.g. ppc64, where all memory is in a zone named DMA: count every zone
            for i in by_node[node]:
                if zones[i].free_pages > 0:
                    zones[i] = dataclasses.replace(zones[i], workload=True)
                    mine.append(zones[i])
        if not mine:  # a memoryless node
            continue
        counted[node] = mine
        numa.append(
            NumaReport(
                node=node,
                state=_numa_state(mine, cfg),
                blocks_at_target=sum(z.blocks_at_target for z in mine),
                free_pages=sum(z.free_pages for z in mine),
                zones=tuple(z.zone for z in mine),
            )
        )
    worst = max((n.state for n in numa), key=_SEVERITY.__getitem__, default=NodeState.HEALTHY)
    # exhausted is at-risk for the node: memory pressure (kubelet's to report), not fragmentation
    verdict = Verdict.AT_RISK if worst == NodeState.EXHAUSTED else Verdict(worst.value)
    troubled = [n for n in numa if n.state != NodeState.HEALTHY] or numa
    cause = find_cause(obs.pagetype, [(n.node, zn) for n in troubled for zn in n.zones], order)
    if verdict == Verdict.HEALTHY:
        cause = Cause(CauseKind.UNKNOWN, cause.stranded_share, "healthy: nothing to attribute")
    return Assessment(
        verdict=verdict,
        reason=REASONS[worst],
        message=_message(worst, numa, counted, order, cfg, cause, obs.page_size),
        page_size=obs.page_size,
        order=order,
        exhausted=any(n.state == NodeState.EXHAUSTED for n in numa),
        cause=cause,
        numa=tuple(numa),
        zones=tuple(zones),
        gaps=tuple(gaps),
    )


def _message(
    worst: NodeState,
    numa: list[NumaReport],
    counted: dict[int, list[ZoneReport]],
    order: int,
    cfg: AssessmentConfig,
    cause: Cause,
    page_size: int,
) -> str:
    """One line a person can act on: the numbers behind the verdict."""
    parts = []
    for n in numa:
        mine = counted[n.node]
        free = contig_info([sum(col) for col in zip(*(z.free for z in mine), strict=False)], order)
        stranded = free.free_pages - (free.free_blocks_suitable << order)
        frag = min((z.fragindex_milli for z in mine), default=0)
        parts.append(
            f"NUMA node {n.node} ({'+'.join(n.zones)}): {n.blocks_at_target} free blocks of "
            f"order>={order} ({_size(n.blocks_at_target << order, page_size)}), "
            f"{_size(stranded, page_size)} free in "
            f"smaller blocks" + (f", fragmentation index {frag / 1000:.3f}" if frag >= 0 else "")
        )
    head = {
        NodeState.HEALTHY: "Enough contiguous free memory",
        NodeState.AT_RISK: f"Few free blocks of order>={order} "
        f"(at-risk below {cfg.at_risk_below_blocks})",
        NodeState.FRAGMENTED: f"Free memory is fragmented: high-order (order>={order}) "
        f"allocations are likely to fail (fragmented below {cfg.fragmented_below_blocks} blocks)",
        NodeState.EXHAUSTED: "Free memory is exhausted (at the zone watermarks): compaction "
        "cannot help, this is memory pressure",
    }[worst]
    tail = f"; cause: {cause.kind} ({cause.explanation})" if worst == NodeState.FRAGMENTED else ""
    return f"{head}. " + "; ".join(parts) + tail
