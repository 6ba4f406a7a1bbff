"""remediation.act_on_prediction: a NUMA node predicted to fragment is compacted alone when the
node is idle, through the ladder's guards, once per prediction episode (agent.decide.remediation
decide_early, agent.decide.cycle)."""

from __future__ import annotations

import dataclasses

from agent.config.model import Config
from agent.decide.cycle import TickState, decide_tick
from agent.decide.remediation import ActionOutcome, RemedyState, after_action, decide_early
from agent.kernel.actions import ActionKind
from agent.kernel.psi import Pressure
from tests.unit.decide.test_cycle import HEALTHY, SOON, cfg, facts

WALL = 1_700_000_000.0


def psi(avg60: float, avg10: float = 0.0) -> Pressure:
    return Pressure(avg10, avg60, 0.0, 0, None, None, None, None)


def early(c: Config | None = None, threshold: float = 5.0) -> Config:
    c = c or cfg()
    return dataclasses.replace(
        c,
        remediation=dataclasses.replace(
            c.remediation, act_on_prediction=True, act_on_prediction_max_psi_some_avg60=threshold
        ),
    )


def test_off_by_default_nothing_runs_on_a_prediction() -> None:
    d = decide_tick(
        facts(HEALTHY, None, predictions=(SOON,), compactable=(0,), pressure=psi(0.0)),
        TickState(),
        cfg(),
    )
    assert d.run is None and not d.early


def test_predicted_and_idle_compacts_that_numa_node_once_per_episode() -> None:
    c = early()
    f = facts(HEALTHY, None, predictions=(SOON,), compactable=(0, 1), pressure=psi(1.0))
    d = decide_tick(f, TickState(), c)
    assert d.run is not None and d.early
    assert (d.run.action, d.run.arg) == (ActionKind.COMPACT_NODE, SOON.node)
    assert d.why is not None and "predicted to fragment" in d.why and "avg60 1.0%" in d.why
    assert d.state.acted_early == (SOON.node,)
    # the next tick of the same prediction episode does not compact again
    again = decide_tick(dataclasses.replace(f, now=200.0), d.state, c)
    assert again.run is None
    # a quiet window ends the episode: a new prediction may act again (cooldown permitting)
    window = c.assessment.prediction_window_seconds
    quiet = decide_tick(facts(HEALTHY, None, now=100.0 + 2 * window), again.state, c)
    assert quiet.state.acted_early == ()
    news = decide_tick(dataclasses.replace(f, now=101.0 + 2 * window), quiet.state, c)
    assert news.run is not None and news.early


def test_not_idle_no_psi_or_no_per_node_file_does_not_act() -> None:
    c = early().remediation
    busy = decide_early(100.0, (0,), (0,), RemedyState(), c, psi(12.5), wall=WALL)
    assert busy.step is None and "not idle (PSI some avg60 12.5% > 5%)" in busy.why
    nopsi = decide_early(100.0, (0,), (0,), RemedyState(), c, None, wall=WALL)
    assert nopsi.step is None and "cannot tell idle" in nopsi.why
    nofile = decide_early(100.0, (0,), (), RemedyState(), c, psi(0.0), wall=WALL)
    assert nofile.step is None and "no per-node compact file" in nofile.why
    off = dataclasses.replace(c, mode="off")
    assert decide_early(100.0, (0,), (0,), RemedyState(), off, psi(0.0), wall=WALL).step is None


def test_the_ladders_guards_hold_cooldown_cap_and_window() -> None:
    c = early().remediation
    first = decide_early(100.0, (0,), (0,), RemedyState(), c, psi(0.0), wall=WALL)
    assert first.step is not None
    done = after_action(first.state, first.step, 100.0, ActionOutcome.OK, 10, 50)
    cooling = decide_early(200.0, (0,), (0,), done, c, psi(0.0), wall=WALL)
    assert cooling.step is None and "cooling down" in cooling.why
    capped = dataclasses.replace(c, max_actions_per_hour=1, cooldown_seconds=0)
    assert (
        "actions in the last hour"
        in decide_early(200.0, (0,), (0,), done, capped, psi(0.0), wall=WALL).why
    )
    # 1_700_000_000 is 22:13 UTC
    closed = dataclasses.replace(c, maintenance_window="01:00-02:00")
    held = decide_early(100.0, (0,), (0,), RemedyState(), closed, psi(0.0), wall=WALL)
    assert held.step is None and "maintenance window" in held.why
