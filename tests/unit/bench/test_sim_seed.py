"""The simulated fleet's steady state: a Node seeded as a long-running agent left it must give
that agent's first tick nothing to write, or every heartbeat restarts with the rollout."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agent.assess.verdict import assess
from agent.base.times import rfc3339
from agent.config.model import Config
from agent.decide.cycle import Facts, TickState, decide_tick
from agent.decide.nodeview import SUMMARY_ANNOTATION, node_view
from agent.kernel.procfs import ProcReader
from bench.sim import steady_report
from tests.cluster.fakehost import FakeHost

WALL = 1_800_000_000.0


def _node(conditions: list[dict[str, str]], summary: str, beat_age: float) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "sim-0",
            "uid": "u",
            "resourceVersion": "7",
            "annotations": {SUMMARY_ANNOTATION: summary},
        },
        "status": {
            "conditions": [
                dict(
                    c,
                    lastTransitionTime=rfc3339(WALL - 86400),
                    lastHeartbeatTime=rfc3339(WALL - beat_age),
                )
                for c in conditions
            ]
        },
    }


def _first_tick(tmp_path: Path, node_of: Any) -> Any:
    cfg = Config()
    a = assess(ProcReader(FakeHost(tmp_path / "proc").root).observe(False), cfg.assessment)
    conditions, summary = steady_report(a, cfg, WALL)
    view = node_view(node_of(conditions, summary))
    return decide_tick(Facts(now=5.0, wall=WALL, assessment=a, view=view), TickState(), cfg)


def test_a_seeded_healthy_node_gives_the_first_tick_nothing_to_write(tmp_path: Path) -> None:
    d = _first_tick(tmp_path, lambda c, s: _node(c, s, beat_age=300))
    assert d.report is not None
    assert d.report.condition is None and d.report.unremediable is None
    assert d.report.summary is None


def test_the_seed_carries_both_of_the_agents_conditions(tmp_path: Path) -> None:
    # Seeded with MemoryFragmented alone (the bench before), the first tick wrote.
    d = _first_tick(tmp_path, lambda c, s: _node(c[:1], s, beat_age=300))
    assert d.report is not None and d.report.condition is not None


def test_a_seeded_heartbeat_older_than_the_period_is_due(tmp_path: Path) -> None:
    d = _first_tick(
        tmp_path, lambda c, s: _node(c, s, beat_age=Config().reporting.heartbeat_seconds + 1)
    )
    assert d.report is not None and d.report.condition is not None


def test_the_agents_own_request_count_is_read_by_method() -> None:
    from bench.run import agent_requests

    m = {
        'memfrag_api_requests_total{method="PATCH"}': 2.0,
        'memfrag_api_requests_total{method="WATCH"}': 3.0,
        'memfrag_api_requests_created{method="PATCH"}': 1.7e9,
        "memfrag_api_up": 1.0,
    }
    assert agent_requests(m) == {"PATCH": 2, "WATCH": 3}
