"""Whether long-term pinned memory can be what keeps a fragmented node fragmented.

Only pages are known, not where they sit. One pinned page spoils a whole block of the target
order, so `pinned pages x 2^order` is the memory the pins can spoil at most; when that covers
most of the workload zones, the pins alone can explain why compaction finds no block to empty.
The decision (agent.decide.remediation) takes it as the cause only after compaction ran and the
node stayed fragmented: a VM's or an RDMA job's large contiguous pin spoils few blocks, and then
compaction still recovers the node."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from agent.assess.verdict import Assessment
from agent.kernel.pininfo import PinHolder, foll_pinned_pages

BLOCKING_SHARE = 0.5  # the pins can spoil at least half the workload zones' target blocks
HOLDERS_SHOWN = 3


@dataclass(frozen=True)
class PinnedMemory:
    pinned_bytes: int  # the larger of vmstat's FOLL_PIN count and the holders' VmPin sum
    holders: tuple[PinHolder, ...]  # largest first
    spoilable_share: float  # pinned pages x 2^order / workload zones' managed pages
    source: str  # "vmstat" or "VmPin"

    @property
    def blocking(self) -> bool:
        return self.spoilable_share >= BLOCKING_SHARE

    def sentence(self, pods: Mapping[str, str] | None = None) -> str:
        """'N MiB long-term pinned, by comm (pid N): M MiB, ...', each holder's pod where it
        runs in one (by name when `pods` knows its UID)."""
        pods = pods or {}
        shown = self.holders[:HOLDERS_SHOWN]
        rest = len(self.holders) - len(shown)

        def one(h: PinHolder) -> str:
            where = f"pid {h.pid}"
            if h.pod_uid is not None:
                where += f", pod {pods.get(h.pod_uid, h.pod_uid)}"
            return f"{h.comm[:16]} ({where}): {_mib(h.pinned_bytes)}"

        by = ", ".join(one(h) for h in shown)
        out = f"{_mib(self.pinned_bytes)} long-term pinned"
        if by:
            out += f", by {by}" + (f" and {rest} more process(es)" if rest else "")
        else:
            out += " (no process's VmPin shows it: a driver's or the kernel's own pins)"
        return out


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


def pinned_memory(
    a: Assessment, vmstat: Mapping[str, int] | None, holders: tuple[PinHolder, ...]
) -> PinnedMemory | None:
    """The node's long-term pinned memory against its workload zones; None when nothing is
    pinned or the zones' sizes are unknown (no zoneinfo)."""
    # Both are lower bounds: vmstat misses nothing pinned with FOLL_PIN but counted fewer pages
    # than VmPin on 6.18 (tests/fixtures/proc/io-uring-pin-6.18-x86_64); VmPin only the
    # processes read so far. The larger one.
    foll = foll_pinned_pages(vmstat) or 0
    vmpin = sum(h.pinned_bytes for h in holders) // a.page_size
    pages, source = (foll, "vmstat") if foll >= vmpin else (vmpin, "VmPin")
    managed = sum(z.managed_pages or 0 for z in a.zones if z.workload)
    if pages <= 0 or managed <= 0:
        return None
    share = min(1.0, pages * (1 << a.order) / managed)
    return PinnedMemory(pages * a.page_size, holders, round(share, 3), source)
