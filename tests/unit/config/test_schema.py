"""agent.config.schema: the chart's `config` schema and the README's table are the model's, as
generated; every range is refused by the model just outside and allowed on the bound."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from agent.base.errors import ConfigError
from agent.config import schema
from agent.config.model import CROSS_FIELD_RULES, HIGHEST_ORDER, LOWEST_ORDER, config_from_mapping
from tests.unit.config.edges import STRINGS, Edge, edges

REPO = Path(__file__).resolve().parents[3]
CHART_SCHEMA = REPO / schema.CHART_SCHEMA
README = REPO / schema.README


def test_the_committed_chart_schema_is_the_generated_one() -> None:
    text = CHART_SCHEMA.read_text()
    assert json.loads(text)["properties"]["config"] == schema.config_schema()
    assert schema.chart_schema_text(text) == text, "run `make schema`"


def test_the_readme_table_is_the_generated_one() -> None:
    assert schema.config_table() in README.read_text(), "run `make schema`"


def test_generation_rewrites_only_the_config_part(tmp_path: Path) -> None:
    """A stale file gets its `config` back and keeps every other key, in its place: another
    change to the chart's own knobs merges cleanly."""
    original = json.loads(CHART_SCHEMA.read_text())
    stale = json.loads(CHART_SCHEMA.read_text())
    stale["properties"]["config"]["properties"]["assessment"]["properties"]["target_order"] = {}
    stale["properties"]["logLevel"]["description"] = "someone else's edit"
    path = tmp_path / "values.schema.json"
    path.write_text(json.dumps(stale, indent=2) + "\n")
    readme = tmp_path / "README.md"
    shutil.copy(README, readme)
    assert schema.main(["--chart-schema", str(path), "--readme", str(readme)]) == 0
    got = json.loads(path.read_text())
    assert got["properties"]["config"] == original["properties"]["config"]
    assert got["properties"]["logLevel"]["description"] == "someone else's edit"
    assert list(got["properties"]) == list(original["properties"])
    assert readme.read_text() == README.read_text()


def test_a_stale_readme_table_is_replaced_whole(tmp_path: Path) -> None:
    text = README.read_text()
    stale = text.replace("| `sources.kmsg_path` |", "| `sources.kmsg_device` |")
    assert stale != text
    assert schema.readme_text(stale) == text
    with pytest.raises(ValueError, match="no config table"):
        schema.readme_text("# no table\n")


def test_what_the_schema_cannot_check_is_described() -> None:
    """What the schema cannot check is named in its description."""
    props = schema.config_schema()["properties"]
    for rule in CROSS_FIELD_RULES:
        section, key = rule.key.split(".")
        assert rule.other in props[section]["properties"][key]["description"], rule.key
    window = props["remediation"]["properties"]["maintenance_window"]["description"]
    assert "zero length" in window
    assert "containerPort" in props["reporting"]["properties"]["metrics_port"]["description"]


def test_the_order_range_is_one_constant() -> None:
    props = schema.config_schema()["properties"]["assessment"]["properties"]
    assert (props["target_order"]["minimum"], props["target_order"]["maximum"]) == (
        LOWEST_ORDER,
        HIGHEST_ORDER,
    )


def test_every_ranged_key_has_edges() -> None:
    ranged = {p for p, k in _schema_keys().items() if set(k) - {"type", "enum", "description"}}
    assert {e.path for e in edges()} == ranged
    assert set(STRINGS) <= ranged


def _schema_keys() -> dict[str, dict[str, Any]]:
    out = {}
    for section, sub in schema.config_schema()["properties"].items():
        for key, k in sub["properties"].items():
            out[f"{section}.{key}"] = k
    return out


@pytest.mark.parametrize("edge", edges(), ids=lambda e: f"{e.path}={e.value!r}"[:60])
def test_the_model_refuses_just_outside_and_allows_the_bound(edge: Edge) -> None:
    if edge.model_refuses:
        with pytest.raises(ConfigError) as info:
            config_from_mapping(edge.document(), "edge")
        assert info.value.path == edge.path
    else:
        config_from_mapping(edge.document(), "edge")


ADDRESS = "must be an IPv4 or IPv6 address such as 0.0.0.0, :: or 127.0.0.1"
RANGE_MESSAGES = [
    ({"assessment": {"target_order": 0}}, "must be between 1 and 13"),
    ({"assessment": {"min_zone_share": 2}}, "must be between 0 and 1"),
    ({"assessment": {"fragmented_below_blocks": 0}}, "must be >= 1"),
    ({"assessment": {"at_risk_below_blocks": 63}}, "must be >= assessment.fragmented_below_blocks"),
    ({"sources": {"kmsg_path": ""}}, "must not be empty"),
    ({"reporting": {"heartbeat_seconds": 9}}, "must be >= 10"),
    ({"reporting": {"metrics_port": 65536}}, "must be between 0 and 65535"),
    ({"reporting": {"max_tainted_percent": -1}}, "must be between 0 and 100"),
    ({"reporting": {"taint_key": "a b"}}, "is not a valid taint key: 'a b'"),
    ({"reporting": {"metrics_address": "::1%lo"}}, f"{ADDRESS}; got '::1%lo'"),
    ({"reporting": {"metrics_address": "1.2.3"}}, f"{ADDRESS}; got '1.2.3'"),
    ({"remediation": {"action_timeout_seconds": 0}}, "must be > 0"),
    ({"remediation": {"maintenance_window": "2am"}}, "must be empty or 'HH:MM-HH:MM', got '2am'"),
    ({"remediation": {"max_psi_some_avg10": 101}}, "must be between 0 and 100"),
    (
        {"remediation": {"lease_seconds": 60}},
        "must be >= remediation.action_timeout_seconds: a slot that expires while its action "
        "still runs lets another node start one",
    ),
]


@pytest.mark.parametrize(("data", "reason"), RANGE_MESSAGES)
def test_range_messages(data: dict[str, Any], reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_mapping(data, "cfg.yaml")
    assert info.value.reason == reason
