"""When the per-allocation failure counter (kmem:mm_page_alloc) is armed: pure.

That tracepoint fires, and runs its in-kernel filter, for every page the node allocates: ~6 %
of an allocation-heavy loop's time on the development VM. A healthy node's allocations do not
fail, so under `sources.tracing_alloc_failures: at-risk` the counter is armed only while the
node is at risk, from what the agent already knows each tick (the verdict, a margin over the
free blocks it calls healthy, vmstat's compaction stalls and THP fallbacks rising) and, between
ticks, from the slow-path tracepoints (kswapd woken, direct reclaim or compaction, compaction
deferred at the traced order), which cost nothing on the fast path. It arms at once and disarms
only after DISARM_AFTER_SECONDS without any sign, so it never flaps.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from agent.assess.verdict import Assessment, Verdict
from agent.assess.vmrates import VmstatRates
from agent.kernel.trace import DirectCompaction, SlowPath, TraceEvent

# Armed while any NUMA node's free blocks at the target order are below this many times the
# count it calls healthy (assessment.at_risk_below_blocks): before the verdict turns at-risk.
MARGIN = 2
# Disarmed after this long without a sign: as long as the window the condition's sentence
# covers, so a disarm never hides failures the window still shows.
DISARM_AFTER_SECONDS = 600.0
# vmstat counters whose increase since the last tick is a sign (high-order allocations only:
# compaction runs for order > 0; allocstall is left out, order-0 reclaim is exhaustion).
RISING = ("compact_stall", "compact_fail")
THP_FALLBACK, THP_FALLBACK_CHARGE = "thp_fault_fallback", "thp_fault_fallback_charge"


class ArmPolicy(enum.StrEnum):
    """sources.tracing_alloc_failures."""

    AT_RISK = "at-risk"
    ALWAYS = "always"


class Risk(enum.StrEnum):
    """Why the counter is armed (the log's `why`)."""

    ALWAYS = "always"  # the policy
    UNASSESSED = "unassessed"  # the node could not be assessed: nothing says it is healthy
    VERDICT = "verdict"  # the verdict is not healthy
    EXHAUSTED = "exhausted"  # a zone is at its watermark
    FEW_BLOCKS = "few-blocks"  # free blocks below MARGIN x assessment.at_risk_below_blocks
    COMPACTION = "compaction-stalls"  # compact_stall / compact_fail rose since the last tick
    THP_FALLBACK = "thp-fallback"  # THP faults fell back (not for a cgroup's charge)
    SLOW_PATH = "slow-path"  # a slow-path tracepoint fired at the traced order
    FAILURES = "failures"  # the armed counter itself counted failures


@dataclass(frozen=True)
class ArmState:
    armed: bool = False
    since: float | None = None  # when it last changed (monotonic)
    last_risk: float | None = None  # the last time a sign was seen
    why: Risk | None = None  # what armed it


def risks(
    assessment: Assessment | None, recent: VmstatRates | None, at_risk_below_blocks: int
) -> tuple[Risk, ...]:
    """The signs in one tick's assessment and in vmstat's rates over the last poll (`recent`:
    the two newest samples; None before there are two)."""
    if assessment is None:
        return (Risk.UNASSESSED,)
    out = []
    if assessment.verdict != Verdict.HEALTHY:
        out.append(Risk.VERDICT)
    if assessment.exhausted:
        out.append(Risk.EXHAUSTED)
    if any(n.blocks_at_target < MARGIN * at_risk_below_blocks for n in assessment.numa):
        out.append(Risk.FEW_BLOCKS)
    if recent is not None:
        if any((recent.per_minute(c) or 0.0) > 0 for c in RISING):
            out.append(Risk.COMPACTION)
        fallback = (recent.per_minute(THP_FALLBACK) or 0.0) - (
            recent.per_minute(THP_FALLBACK_CHARGE) or 0.0
        )
        if fallback > 0:
            out.append(Risk.THP_FALLBACK)
    return tuple(out)


def triggers(event: TraceEvent, min_order: int) -> bool:
    """A slow-path event at the traced order or above: arms the counter at once (a direct
    compaction's try_to_compact_pages is traced at every order, for the pairing)."""
    return isinstance(event, SlowPath | DirectCompaction) and event.order >= min_order


def step(
    state: ArmState,
    now: float,
    policy: ArmPolicy,
    signs: tuple[Risk, ...],
    disarm_after: float = DISARM_AFTER_SECONDS,
) -> ArmState:
    """The next state: armed at once on a sign (or by the policy), disarmed once no sign was
    seen for `disarm_after` seconds."""
    if policy is ArmPolicy.ALWAYS:
        signs = (Risk.ALWAYS,)
    if signs:
        if state.armed:
            return ArmState(True, state.since, now, state.why)
        return ArmState(True, now, now, signs[0])
    if state.armed and (state.last_risk is None or now - state.last_risk >= disarm_after):
        return ArmState(False, now, state.last_risk, None)
    return state
