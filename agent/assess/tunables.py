"""Prevention: the vm.* tunables that keep high-order blocks available, reviewed against values
recommended for the node's size, with the reasoning. Applying them is opt-in."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

# The knobs the review may recommend, and so the only ones a trial may write (a name read back
# from the node's record is checked against this: never a path from an annotation).
KNOBS = (
    "min_free_kbytes",
    "watermark_scale_factor",
    "compaction_proactiveness",
    "extfrag_threshold",
)


@dataclass(frozen=True)
class Recommendation:
    name: str  # file under /proc/sys/vm
    current: int
    recommended: int
    why: str


def recommend(sysctl: Mapping[str, int], mem_total_kb: int | None) -> tuple[Recommendation, ...]:
    """Only raises (or, for extfrag_threshold, restores) values; never lowers a reserve an
    operator chose."""
    out: list[Recommendation] = []
    cur = sysctl.get("min_free_kbytes")
    if cur is not None and mem_total_kb:
        want = min(mem_total_kb // 100, 1 << 20)  # 1 % of RAM, at most 1 GiB
        if cur < want:
            out.append(
                Recommendation(
                    "min_free_kbytes",
                    cur,
                    want,
                    "a larger free reserve (1 % of RAM, capped at 1 GiB) gives kswapd and "
                    "kcompactd room to keep high-order blocks before allocations stall",
                )
            )
    cur = sysctl.get("watermark_scale_factor")
    if cur is not None and cur < 100:
        out.append(
            Recommendation(
                "watermark_scale_factor",
                cur,
                100,
                "wider gaps between the min/low/high watermarks (1 % of memory) wake kswapd "
                "earlier, so free memory is rebuilt in larger blocks",
            )
        )
    cur = sysctl.get("compaction_proactiveness")
    if cur is not None and cur < 20:
        out.append(
            Recommendation(
                "compaction_proactiveness",
                cur,
                20,
                "0 turns the kernel's proactive background compaction off; 20 is the kernel "
                "default",
            )
        )
    cur = sysctl.get("extfrag_threshold")
    if cur is not None and cur > 500:
        out.append(
            Recommendation(
                "extfrag_threshold",
                cur,
                500,
                "above the default 500 the kernel reclaims (drops cache) instead of compacting for "
                "costly orders",
            )
        )
    return tuple(out)
