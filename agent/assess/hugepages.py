"""Hugepage and THP readiness: could the pools grow now, and do THP faults get huge pages?

Pure. The hugepage orders come from the page size and the pool sizes present: a 2 MiB page is
order 9 and a 1 GiB page order 18 with 4 KiB pages. A pool grows (`echo N > nr_hugepages`, or a
surplus page at fault time under nr_overcommit_hugepages) by taking one free buddy block of the
hugepage order per page, so what it could take *now*, per NUMA node, is the free blocks of that
order and above in the zones a hugepage may come from, above the zone's low watermark (the fast
path's limit, before any reclaim or compaction). The kernel may grant more than this number (it
reclaims and compacts for a pool), never fewer while nothing else allocates. A gigantic page
(order above the buddy allocator's largest) is cut from a contiguous range by migrating what is
in it: buddyinfo cannot foresee that, and the report says so instead of guessing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from agent.config.targets import HugepageTarget
from agent.kernel.buddyinfo import ZoneBlocks
from agent.kernel.hugepageinfo import HugePages
from agent.kernel.zoneinfo import ZoneWatermarks

# Zones a hugepage never comes from: ISA DMA is protected by lowmem_reserve from movable and
# highuser requests (counted only where it is all there is, as on ppc64); ZONE_DEVICE holds no
# free pages of the buddy allocator.
_NOT_FOR_HUGEPAGES = ("DMA", "Device")


@dataclass(frozen=True)
class NodeReadiness:
    """One pool size on one NUMA node."""

    node: int
    size_kib: int
    order: int
    allocatable: int | None  # hugepages the buddy lists could hand out now; None: cannot tell
    nr: int | None  # the node's pool, where /sys has per-node pools
    free: int | None


@dataclass(frozen=True)
class PoolReadiness:
    """One pool size, machine-wide, against its target."""

    size_kib: int
    order: int
    nr: int | None
    free: int | None
    surplus: int | None
    overcommit: int | None
    target: int | None  # the count asked for (targets), else None
    allocatable: int | None  # the sum over NUMA nodes, None for gigantic pages
    can_grow: bool | None  # to its target (or its overcommit headroom); None: nothing asked
    message: str


@dataclass(frozen=True)
class ThpRate:
    """THP page faults that got a huge page versus those that fell back to small pages."""

    faults: int
    fallbacks: int
    since_boot: bool

    @property
    def fallback_rate(self) -> float | None:
        total = self.faults + self.fallbacks
        return self.fallbacks / total if total else None


@dataclass(frozen=True)
class HugepageReadiness:
    page_size: int
    max_order: int
    pools: tuple[PoolReadiness, ...]
    nodes: tuple[NodeReadiness, ...]
    thp_enabled: str | None
    thp_defrag: str | None
    thp: ThpRate | None
    gaps: tuple[str, ...]

    @property
    def cannot_grow(self) -> tuple[PoolReadiness, ...]:
        return tuple(p for p in self.pools if p.can_grow is False)


def _log2(n: int) -> int | None:
    return n.bit_length() - 1 if n > 0 and n & (n - 1) == 0 else None


def hugepage_orders(page_size: int, sizes_kib: Sequence[int]) -> tuple[tuple[int, int], ...]:
    """(size in KiB, order) of each pool size present; without pools, the architecture's
    page-table levels: a PMD maps page_size/8 pages (order 9 with 4 KiB pages, 13 with 64 KiB)
    and, with 4 KiB pages, a PUD maps 512 PMDs (order 18, 1 GiB). Sizes that are not a
    power-of-two multiple of the page size are left out."""
    shift = _log2(page_size)
    if shift is None or shift < 10:
        return ()
    out: list[tuple[int, int]] = []
    for size in sorted(set(sizes_kib)):
        pages = size * 1024 // page_size
        order = _log2(pages) if size * 1024 % page_size == 0 else None
        if order is not None:
            out.append((size, order))
    if out or sizes_kib:
        return tuple(out)
    pmd = shift - 3
    orders = [pmd, 2 * pmd] if page_size == 4096 else [pmd]
    return tuple(((page_size << o) // 1024, o) for o in orders)


def _eligible(zones: Sequence[ZoneBlocks]) -> list[ZoneBlocks]:
    usable = [z for z in zones if z.zone not in _NOT_FOR_HUGEPAGES]
    return usable or [z for z in zones if z.zone != "Device"]


def allocatable_now(
    zones: Sequence[ZoneBlocks], watermarks: Mapping[tuple[int, str], ZoneWatermarks], order: int
) -> int:
    """Blocks of `order` the buddy lists of these zones hold, each zone's count capped at what
    stays above its low watermark (when zoneinfo names it)."""
    total = 0
    for z in _eligible(zones):
        blocks = z.blocks_at_or_above(order)
        wm = watermarks.get((z.node, z.zone))
        if wm is not None:
            blocks = min(blocks, max(0, z.free_pages - wm.low) >> order)
        total += blocks
    return total


def thp_fallback(
    after: Mapping[str, int], before: Mapping[str, int] | None = None
) -> ThpRate | None:
    """thp_fault_alloc against thp_fault_fallback between two vmstat looks (since boot with
    one). None when the kernel has no THP counters, or a counter went backwards (another boot)."""
    keys = ("thp_fault_alloc", "thp_fault_fallback")
    if any(k not in after for k in keys) or (before and any(k not in before for k in keys)):
        return None
    base = before or dict.fromkeys(keys, 0)
    faults = after[keys[0]] - base[keys[0]]
    fallbacks = after[keys[1]] - base[keys[1]]
    if faults < 0 or fallbacks < 0:
        return None
    return ThpRate(faults, fallbacks, since_boot=before is None)


def _size_name(kib: int) -> str:
    for unit, div in (("GiB", 1 << 20), ("MiB", 1 << 10)):
        if kib >= div and kib % div == 0:
            return f"{kib // div} {unit}"
    return f"{kib} KiB"


def readiness(
    buddy: Sequence[ZoneBlocks],
    zoneinfo: Sequence[ZoneWatermarks] | None,
    pools: HugePages,
    page_size: int,
    targets: Mapping[int, int] | None = None,
    vmstat_after: Mapping[str, int] | None = None,
    vmstat_before: Mapping[str, int] | None = None,
) -> HugepageReadiness:
    """Per pool size and NUMA node, what could be allocated now; per pool, whether it can grow
    to its target (`targets`: size in KiB -> count) or, without one, to its overcommit limit."""
    targets = dict(targets or {})
    gaps = list(pools.gaps)
    wms = {(w.node, w.zone): w for w in zoneinfo or ()}
    if not wms:
        gaps.append("zoneinfo: hugepage counts are not capped at the low watermark")
    max_order = max(len(z.free) for z in buddy) - 1 if buddy else 0
    sizes = [*pools.sizes_kib(), *targets]
    orders = hugepage_orders(page_size, sizes)
    for size in sorted(set(sizes) - {s for s, _ in orders}):
        gaps.append(f"hugepages-{size}kB: not a power-of-two multiple of the page size: ignored")
    by_node: dict[int, list[ZoneBlocks]] = {}
    for z in buddy:
        by_node.setdefault(z.node, []).append(z)
    nodes: list[NodeReadiness] = []
    out: list[PoolReadiness] = []
    for size, order in orders:
        gigantic = order > max_order
        mine: list[NodeReadiness] = []
        for n in sorted(by_node):
            np = pools.pool(size, n)
            mine.append(
                NodeReadiness(
                    node=n,
                    size_kib=size,
                    order=order,
                    allocatable=None if gigantic else allocatable_now(by_node[n], wms, order),
                    nr=np.nr if np else None,
                    free=np.free if np else None,
                )
            )
        nodes += mine
        total = None if gigantic else sum(r.allocatable or 0 for r in mine)
        out.append(_pool_readiness(size, order, max_order, pools, targets.get(size), total, mine))
    return HugepageReadiness(
        page_size=page_size,
        max_order=max_order,
        pools=tuple(out),
        nodes=tuple(nodes),
        thp_enabled=pools.thp_enabled,
        thp_defrag=pools.thp_defrag,
        thp=thp_fallback(vmstat_after, vmstat_before) if vmstat_after is not None else None,
        gaps=tuple(gaps),
    )


def _pool_readiness(
    size: int,
    order: int,
    max_order: int,
    pools: HugePages,
    target: int | None,
    total: int | None,
    nodes: Sequence[NodeReadiness],
) -> PoolReadiness:
    pool = pools.pool(size, None)
    name = f"hugepages-{size}kB ({_size_name(size)}, order {order})"
    per_node = ", ".join(f"NUMA node {r.node}: {r.allocatable}" for r in nodes)
    nr = pool.nr if pool else None
    held = nr or 0
    need: int | None = None
    what = ""
    if target is not None:
        need = max(0, target - held)
        what = f"holds {held} of the target {target}"
    elif pool is not None and pool.overcommit:
        need = max(0, pool.overcommit - pool.surplus)
        what = f"may add {need} surplus pages at fault time (nr_overcommit_hugepages)"
    if total is None:
        can_grow = None
        message = (
            f"{name}: above the buddy allocator's largest order {max_order}: the kernel cuts "
            "such a page from a contiguous range by migrating what is in it, which free block "
            "counts cannot foresee" + (f"; the pool {what}" if what else "")
        )
    elif need is None:
        can_grow = None if total else False
        message = (
            f"{name}: {total} could be allocated now ({per_node})"
            if total
            else f"{name}: no free block of order {order} on any NUMA node ({per_node})"
        )
    else:
        can_grow = total >= need
        message = f"{name}: the pool {what}: {total} could be allocated now ({per_node})" + (
            "" if can_grow else f": it cannot grow by {need} without reclaim or compaction"
        )
    return PoolReadiness(
        size_kib=size,
        order=order,
        nr=nr,
        free=pool.free if pool else None,
        surplus=pool.surplus if pool else None,
        overcommit=pool.overcommit if pool else None,
        target=target,
        allocatable=total,
        can_grow=can_grow,
        message=message,
    )


@dataclass(frozen=True)
class TargetReadiness:
    """One configured target (assessment.hugepage_targets) against its pool as read: how many
    pages the pool lacks and whether the free blocks could give them now."""

    size_kib: int
    numa_node: int | None  # None: the machine-wide pool
    target: int
    held: int | None  # nr_hugepages of the pool; None: no such pool on this host
    shortfall: int  # pages the pool lacks of its target
    allocatable: int | None  # None: a gigantic page, or no such NUMA node
    can_grow: bool | None  # None: cannot tell (gigantic) or nothing lacking
    message: str


def target_readiness(
    hr: HugepageReadiness, targets: Sequence[HugepageTarget]
) -> tuple[TargetReadiness, ...]:
    """Each target against the pool the kernel reports (the machine's, or the NUMA node's under
    /sys/devices/system/node), in the order given."""
    out: list[TargetReadiness] = []
    for t in targets:
        where = "" if t.numa_node is None else f" on NUMA node {t.numa_node}"
        name = f"hugepages-{t.size_kib}kB ({_size_name(t.size_kib)}){where}"
        held: int | None
        allocatable: int | None
        if t.numa_node is None:
            pool = next((p for p in hr.pools if p.size_kib == t.size_kib), None)
            held = pool.nr if pool else None
            allocatable = pool.allocatable if pool else None
        else:
            node = next(
                (n for n in hr.nodes if n.size_kib == t.size_kib and n.node == t.numa_node), None
            )
            held = node.nr if node else None
            allocatable = node.allocatable if node else None
        shortfall = max(0, t.pages - (held or 0))
        known = any(p.size_kib == t.size_kib for p in hr.pools) and (
            t.numa_node is None or any(n.node == t.numa_node for n in hr.nodes)
        )
        if not known:
            can_grow, message = False, f"{name}: no such pool on this node (target {t.pages})"
        elif shortfall == 0:
            can_grow, message = None, f"{name}: holds {held} of the target {t.pages}"
        elif allocatable is None:
            can_grow = None
            message = (
                f"{name}: holds {held or 0} of the target {t.pages}; a gigantic page is cut by "
                "migration, which free block counts cannot foresee"
            )
        else:
            can_grow = allocatable >= shortfall
            message = (
                f"{name}: holds {held or 0} of the target {t.pages}, {allocatable} could be "
                "allocated now"
                + (
                    ""
                    if can_grow
                    else f": it cannot grow by {shortfall} without reclaim or compaction"
                )
            )
        out.append(
            TargetReadiness(
                t.size_kib, t.numa_node, t.pages, held, shortfall, allocatable, can_grow, message
            )
        )
    return tuple(out)
