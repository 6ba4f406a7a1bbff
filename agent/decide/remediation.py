"""Whether and when to climb the remediation ladder: a pure function of the assessment, the
ladder, the config, the agent's small state and the clock.

Never a loop: each step runs at most once per fragmented episode, the ladder only goes up, and
once every step has run without recovery nothing more runs until the node has recovered. On top of
that, a cooldown per action and a cap on actions per hour hold across episodes.

One step may run after recovery: when dropping caches recovered the node and the ladder's
compaction has not run in the episode, it runs once at the next poll, because it drops nothing
(no page cache to read back) and merges what the freed memory left: the lab measured the
reclaimable case at 0.63 of the seed fix's order-4 blocks after drop-caches=2 alone.

Two clocks: `now` is monotonic and times every duration (cooldowns, the hourly cap), so a step of
the wall clock neither lifts nor extends them; `wall` is UTC and only places the maintenance
window. Actions other agent pods ran on the node arrive with wall times (merge_history).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum

from agent.assess.pinned import PinnedMemory
from agent.assess.verdict import Assessment, CauseKind, Verdict
from agent.config.model import RemediationConfig
from agent.decide.ladder import Step
from agent.kernel.actions import ActionKind
from agent.kernel.psi import Pressure

HOUR = 3600.0


class ActionOutcome(StrEnum):
    """How one remediation action ended (the metric label, the node record's word for it)."""

    OK = "ok"  # the target-order blocks grew
    NO_EFFECT = "no_effect"  # ran, gained nothing
    FAILED = "failed"  # the write failed (not permitted, no such file, ...)
    TIMEOUT = "timeout"  # still running after action_timeout_seconds
    DRY_RUN = "dry_run"  # remediation.mode dry-run: said, not done
    SKIPPED = "skipped"  # not run: another pod holds the node, or no cluster slot


@dataclass(frozen=True)
class ActionRecord:
    step: str
    at: float  # monotonic
    result: ActionOutcome
    blocks_before: int
    blocks_after: int


@dataclass(frozen=True)
class PastAction:
    """One action on the node as the node's record keeps it for every agent pod there: wall
    time, because it crosses processes (each pod times its own on its monotonic clock)."""

    step: str
    wall: float
    result: ActionOutcome
    by: str  # the pod that ran it


@dataclass(frozen=True)
class RemedyState:
    history: tuple[ActionRecord, ...] = ()
    in_episode: bool = False
    # Steps already run in this episode, by name. Not an index: the ladder can change within an
    # episode (dropping page cache can turn an unmovable cause into a movable one), and a step
    # must still never run twice.
    tried: tuple[str, ...] = ()
    climbed: bool = False  # every step of the current ladder ran without recovery
    # The ladder's compaction, kept when a drop-caches step ran before it: if the drop recovers
    # the node, this runs once after (see the module's docstring).
    finish: Step | None = None
    # Actions other agent pods ran on this node (a rollout runs two at once): they count
    # towards the cooldowns and the hourly cap as ours do.
    others: tuple[ActionRecord, ...] = ()
    # The episode stopped on long-term pinned memory (pinned_stop): nothing more helps.
    pinned: bool = False


@dataclass(frozen=True)
class RemedyDecision:
    step: Step | None
    why: str
    state: RemedyState


def in_window(window: str, now: float) -> bool:
    """'HH:MM-HH:MM' in UTC; a window may wrap midnight; '' means always."""
    if not window:
        return True
    start, end = window.split("-")
    t = dt.datetime.fromtimestamp(now, dt.UTC)
    minute = t.hour * 60 + t.minute

    def m(s: str) -> int:
        h, mm = s.split(":")
        return int(h) * 60 + int(mm)

    a, b = m(start), m(end)
    return a <= minute < b if a <= b else minute >= a or minute < b


def merge_history(
    state: RemedyState, past: tuple[PastAction, ...], me: str, now: float, wall: float
) -> RemedyState:
    """Take the actions other pods ran on this node (the node's record, which holds them all)
    onto our monotonic clock by their age in wall time; our own we keep, timed better. An entry
    from the future (our clock stepped back since) counts as just now."""
    others = tuple(
        ActionRecord(p.step, now - max(0.0, wall - p.wall), p.result, 0, 0)
        for p in past
        if p.by != me
    )
    return replace(state, others=others)


def _at(r: ActionRecord) -> float:
    return r.at


def pinned_stop(
    a: Assessment, state: RemedyState, pinned: PinnedMemory | None, pods: Mapping[str, str]
) -> str | None:
    """Why nothing more helps a node whose compaction ran in this episode and left it
    fragmented while long-term pins can spoil most of its blocks (agent.assess.pinned); None
    otherwise. Dropping caches then only reopens holes beside the pins. An unmovable cause has
    its own one attempt and its own words."""
    if pinned is None or not pinned.blocking or a.cause.kind == CauseKind.UNMOVABLE:
        return None
    compactions = [t for t in state.tried if t.startswith(ActionKind.COMPACT)]
    if not compactions:
        return None
    return (
        f"{pinned.sentence(pods)}; one pinned page spoils a whole order-{a.order} block (these "
        f"can spoil {pinned.spoilable_share:.0%} of them) and {', '.join(compactions)} did not "
        "recover the node: nothing more the agent may do will help (dropping caches only reopens "
        "holes beside the pins); the holders must release it, or the node be drained"
    )


def decide_remediation(
    now: float,
    a: Assessment,
    steps: tuple[Step, ...],
    state: RemedyState,
    cfg: RemediationConfig,
    pressure: Pressure | None,
    *,
    wall: float,
    pinned: PinnedMemory | None = None,
    pods: Mapping[str, str] | None = None,
) -> RemedyDecision:
    keep = max(HOUR, cfg.cooldown_seconds)
    history = tuple(r for r in state.history if now - r.at < keep)
    others = tuple(r for r in state.others if now - r.at < keep)
    state = replace(state, history=history, others=others)
    if a.verdict != Verdict.FRAGMENTED:
        done = RemedyState(history=history, others=others)
        f = state.finish
        if (
            not state.in_episode
            or f is None
            or f.name in state.tried
            or a.exhausted
            or cfg.mode == "off"
        ):
            return RemedyDecision(None, "not fragmented", done)
        last = state.tried[-1] if state.tried else ""
        why = (
            f"recovered after {last}; one {f.name} merges what that freed (it drops no page cache)"
        )
        # The finish is the episode's last step: not now (a guard) means not at all.
        held = held_back(now, f, state, cfg, pressure, wall)
        if held is not None:
            return RemedyDecision(
                None, f"not fragmented; not finishing with {f.name}: {held}", done
            )
        return RemedyDecision(Step(f.action, f.arg, why), why, state)
    if not state.in_episode:
        state = replace(state, in_episode=True, tried=(), climbed=False, pinned=False)
    if cfg.mode == "off":
        return RemedyDecision(None, "remediation is off (remediation.mode)", state)
    if not steps:
        return RemedyDecision(None, "no remediation step applies", state)
    stop = pinned_stop(a, state, pinned, pods or {})
    if stop is not None:
        return RemedyDecision(None, stop, replace(state, climbed=True, pinned=True))
    if state.pinned:  # the pins went away: the rest of the ladder may help again
        state = replace(state, climbed=False, pinned=False)
    untried = [s for s in steps if s.name not in state.tried]
    if not untried:
        tried = ", ".join(s.name for s in steps)
        why = (
            f"the cause is unmovable kernel memory and one attempt ({tried}) did not recover "
            "it: nothing more the agent may do will help; draining or rebooting the node is the "
            "operator's call"
            if a.cause.kind == CauseKind.UNMOVABLE
            else f"every step ({tried}) ran without recovery in this episode; waiting for the "
            "node to recover or for an operator"
        )
        return RemedyDecision(None, why, replace(state, climbed=True))
    step = untried[0]
    held = held_back(now, step, state, cfg, pressure, wall)
    if held is not None:
        return RemedyDecision(None, held, state)
    if step.action == ActionKind.DROP_CACHES and state.finish is None:
        later = [
            s for s in untried[1:] if s.action in (ActionKind.COMPACT, ActionKind.COMPACT_NODE)
        ]
        if later:
            state = replace(state, finish=later[0])
    return RemedyDecision(step, step.why, state)


def held_back(
    now: float,
    step: Step,
    state: RemedyState,
    cfg: RemediationConfig,
    pressure: Pressure | None,
    wall: float,
) -> str | None:
    """Why `step` may not run now, whatever asked for it (the ladder or a prediction): the
    maintenance window, memory pressure, the hourly cap, the step's cooldown. None: it may."""
    if not in_window(cfg.maintenance_window, wall):
        return f"outside the maintenance window {cfg.maintenance_window} UTC"
    if pressure is not None and pressure.some_avg10 > cfg.max_psi_some_avg10:
        return (
            f"memory pressure is high (PSI some avg10 {pressure.some_avg10:.1f}% > "
            f"{cfg.max_psi_some_avg10:g}%): compaction would make it worse"
        )
    node_history = sorted((*state.history, *state.others), key=_at)
    last_hour = [r for r in node_history if now - r.at < HOUR and r.result != ActionOutcome.DRY_RUN]
    if len(last_hour) >= cfg.max_actions_per_hour:
        return f"{len(last_hour)} actions in the last hour (max {cfg.max_actions_per_hour})"
    recent = [r for r in node_history if r.step == step.name and now - r.at < cfg.cooldown_seconds]
    if recent:
        wait = int(cfg.cooldown_seconds - (now - recent[-1].at))
        return f"{step.name} is cooling down ({wait}s left)"
    return None


def decide_early(
    now: float,
    predicted: tuple[int, ...],
    compactable: tuple[int, ...],
    state: RemedyState,
    cfg: RemediationConfig,
    pressure: Pressure | None,
    *,
    wall: float,
) -> RemedyDecision:
    """remediation.act_on_prediction: compact one NUMA node that is predicted to fragment
    (`predicted`, not yet acted on in this prediction episode) while the node is idle, under
    the same window, cap and cooldown as the ladder. Idle is PSI some avg60, not avg10: a
    minute of calm, not ten seconds of it."""
    keep = max(HOUR, cfg.cooldown_seconds)
    state = replace(
        state,
        history=tuple(r for r in state.history if now - r.at < keep),
        others=tuple(r for r in state.others if now - r.at < keep),
    )
    if not cfg.act_on_prediction or not predicted:
        return RemedyDecision(None, "acting on predictions is off", state)
    if cfg.mode == "off":
        return RemedyDecision(None, "remediation is off (remediation.mode)", state)
    nodes = [n for n in predicted if n in compactable]
    if not nodes:
        return RemedyDecision(
            None,
            f"NUMA node {predicted[0]} has no per-node compact file "
            "(/sys/devices/system/node/nodeN/compact needs CONFIG_NUMA)",
            state,
        )
    limit = cfg.act_on_prediction_max_psi_some_avg60
    if pressure is None:
        return RemedyDecision(None, "no memory PSI on this kernel: cannot tell idle", state)
    if pressure.some_avg60 > limit:
        return RemedyDecision(
            None,
            f"not idle (PSI some avg60 {pressure.some_avg60:.1f}% > {limit:g}%)",
            state,
        )
    step = Step(
        ActionKind.COMPACT_NODE,
        nodes[0],
        f"NUMA node {nodes[0]} is predicted to fragment and the node is idle "
        f"(PSI some avg60 {pressure.some_avg60:.1f}%): compact it early",
    )
    held = held_back(now, step, state, cfg, pressure, wall)
    if held is not None:
        return RemedyDecision(None, held, state)
    return RemedyDecision(step, step.why, state)


def after_action(
    state: RemedyState, step: Step, now: float, result: ActionOutcome, before: int, after: int
) -> RemedyState:
    """Record an action and move up the ladder: a step never runs twice in one episode, and a
    recovered node leaves the episode at the next decision."""
    history = (*state.history, ActionRecord(step.name, now, result, before, after))
    return replace(state, history=history, tried=(*state.tried, step.name))
