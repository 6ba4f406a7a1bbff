"""deploy/nhc's NodeHealthCheck escalates on the agent's own word only: the condition it selects
is the one agent.decide sets when nothing the agent may do helps, True, for long enough."""

from __future__ import annotations

from pathlib import Path

import yaml

from agent.decide.nodeview import CONDITION_TYPE, UNREMEDIABLE_TYPE

EXAMPLE = Path(__file__).resolve().parents[3] / "deploy" / "nhc" / "nodehealthcheck.yaml"
MINUTES = {"m": 1.0, "h": 60.0, "s": 1 / 60}


def test_the_example_selects_the_unremediable_condition_only() -> None:
    doc = yaml.safe_load(EXAMPLE.read_text())
    conds = doc["spec"]["unhealthyConditions"]
    ours = [c for c in conds if c["type"] in (CONDITION_TYPE, UNREMEDIABLE_TYPE)]
    assert [(c["type"], c["status"]) for c in ours] == [(UNREMEDIABLE_TYPE, "True")]
    d = ours[0]["duration"]
    assert float(d[:-1]) * MINUTES[d[-1]] >= 15  # a reboot after a moment's verdict: never
    (remedy,) = doc["spec"]["escalatingRemediations"]
    assert remedy["remediationTemplate"]["kind"] == "SelfNodeRemediationTemplate"
