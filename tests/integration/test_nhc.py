"""deploy/nhc: the medik8s NodeHealthCheck example is valid against NHC's CRD schema (kubeconform
-strict, a minimal schema fixture written from the CRD, its source cited inside it), and the
schema is the reason the agent has a second condition: an UnhealthyCondition has no reason."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart_tools import REPO, kubeconform

pytestmark = pytest.mark.integration

EXAMPLE = REPO / "deploy" / "nhc" / "nodehealthcheck.yaml"
SCHEMAS = REPO / "tests" / "fixtures" / "schemas" / "nhc"


def test_the_example_is_valid_against_the_crd_schema() -> None:
    results = kubeconform([EXAMPLE], SCHEMAS, [])
    assert [(r["kind"], r["status"]) for r in results] == [("NodeHealthCheck", "statusValid")]


@pytest.mark.parametrize(
    ("change", "where"),
    [
        # what a reason-based selection would need: NHC has no such field
        (lambda c: c.update(reason="RemediationExhausted"), "reason"),
        (lambda c: c.update(duration="half an hour"), "duration"),
    ],
)
def test_a_condition_nhc_cannot_express_is_refused(
    tmp_path: Path, change: Callable[[dict[str, Any]], None], where: str
) -> None:
    doc = yaml.safe_load(EXAMPLE.read_text())
    change(doc["spec"]["unhealthyConditions"][0])
    bad = tmp_path / "nhc.yaml"
    bad.write_text(yaml.safe_dump(doc))
    (result,) = kubeconform([bad], SCHEMAS, [])
    assert result["status"] == "statusInvalid" and where in result["msg"]
