"""agent.config: defaults, documentation, strict validation naming the key path."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.config import (
    AssessmentConfig,
    Config,
    RemediationConfig,
    ReportingConfig,
    SourcesConfig,
    config_docs,
    config_from_mapping,
    parse_config,
)
from agent.errors import ConfigError

DEFAULTS: dict[str, Any] = {
    "assessment.target_order": 4,
    "assessment.fragmented_below_blocks": 64,
    "assessment.at_risk_below_blocks": 512,
    "assessment.min_zone_share": 0.10,
    "assessment.exhaustion_watermark": "high",
    "sources.poll_interval_seconds": 15.0,
    "sources.pagetypeinfo_interval_seconds": 300.0,
    "sources.kmsg_enabled": True,
    "sources.kmsg_path": "/dev/kmsg",
    "sources.accept_user_facility": False,
    "reporting.taint_key": "memfrag.dev/fragmented",
    "reporting.taint_effect": "NoSchedule",
    "reporting.fragmented_for_seconds": 60.0,
    "reporting.healthy_for_seconds": 120.0,
    "reporting.heartbeat_seconds": 900.0,
    "reporting.stuck_pod_seconds": 300.0,
    "reporting.max_tainted_percent": 20.0,
    "reporting.metrics_port": 9808,
    "reporting.metrics_address": "0.0.0.0",
    "remediation.mode": "dry-run",
    "remediation.cooldown_seconds": 900.0,
    "remediation.max_actions_per_hour": 4,
    "remediation.max_concurrent_nodes": 1,
    "remediation.lease_seconds": 300.0,
    "remediation.action_timeout_seconds": 120.0,
    "remediation.maintenance_window": "",
    "remediation.max_psi_some_avg10": 50.0,
    "remediation.allow_drop_caches": True,
    "remediation.delete_stuck_pods": False,
    "remediation.apply_tunables": False,
}


def _get(cfg: Config, path: str) -> Any:
    section, key = path.split(".")
    return getattr(getattr(cfg, section), key)


def _error(data: Any) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        config_from_mapping(data, "cfg.yaml")
    return info.value


# --- defaults and docs --------------------------------------------------------------------------


def test_defaults() -> None:
    cfg = Config()
    for path, value in DEFAULTS.items():
        got = _get(cfg, path)
        assert (got, type(got)) == (value, type(value)), path


@pytest.mark.parametrize("doc", [None, "", "# only a comment\n", "{}", "assessment:\n"])
def test_empty_documents_mean_defaults(doc: str | None) -> None:
    if doc is None:
        assert config_from_mapping(None) == Config()
    else:
        assert parse_config(doc) == Config()


def test_config_docs_cover_every_key() -> None:
    rows = config_docs()
    assert [path for path, _, _ in rows] == list(DEFAULTS)
    for path, default, doc in rows:
        assert doc.strip(), f"{path} has no description"
        assert default == repr(DEFAULTS[path]), path
    assert len(rows) == 30


def test_every_field_has_doc_metadata() -> None:
    for cls in (AssessmentConfig, SourcesConfig, ReportingConfig, RemediationConfig):
        for f in dataclasses.fields(cls):
            assert isinstance(f.metadata.get("doc"), str)
            assert len(f.metadata["doc"]) > 10, f"{cls.__name__}.{f.name}"


def test_values_are_taken() -> None:
    cfg = parse_config(
        """
assessment:
  target_order: 5
  fragmented_below_blocks: 10
  at_risk_below_blocks: 10
  min_zone_share: 0
  exhaustion_watermark: low
sources:
  poll_interval_seconds: 2
  pagetypeinfo_interval_seconds: 2.5
  kmsg_enabled: false
reporting:
  taint_key: example.com/frag
  taint_effect: none
  metrics_port: 0
remediation:
  mode: "on"
  maintenance_window: "22:00-04:30"
  max_psi_some_avg10: 100
""",
        "cm.yaml",
    )
    assert cfg.assessment == AssessmentConfig(5, 10, 10, 0.0, "low")
    assert cfg.sources.poll_interval_seconds == 2.0
    assert isinstance(cfg.sources.poll_interval_seconds, float)
    assert cfg.sources.pagetypeinfo_interval_seconds == 2.5
    assert cfg.sources.kmsg_enabled is False
    assert (cfg.reporting.taint_key, cfg.reporting.taint_effect) == ("example.com/frag", "none")
    assert cfg.reporting.metrics_port == 0
    assert (cfg.remediation.mode, cfg.remediation.maintenance_window) == ("on", "22:00-04:30")
    assert cfg.remediation.max_psi_some_avg10 == 100.0
    assert cfg.reporting.heartbeat_seconds == 900.0  # untouched keys keep their defaults


# --- unknown keys and wrong types name the path -------------------------------------------------


@pytest.mark.parametrize(
    ("data", "path"),
    [
        ({"reporting": {"taintt_key": "x"}}, "reporting.taintt_key"),
        ({"reportin": {}}, "reportin"),
        ({"assessment": {"order": 4}}, "assessment.order"),
        ({"remediation": {"mode": "on", "modes": "on"}}, "remediation.modes"),
        ({1: 2}, "1"),
    ],
)
def test_unknown_keys_name_the_path(data: dict[Any, Any], path: str) -> None:
    err = _error(data)
    assert err.path == path
    assert str(err).startswith(f"cfg.yaml: {path}: unknown key (known: ")


def test_unknown_key_lists_the_known_ones() -> None:
    err = _error({"sources": {"kmsg": True}})
    assert str(err) == (
        "cfg.yaml: sources.kmsg: unknown key (known: accept_user_facility, kmsg_enabled, "
        "kmsg_path, pagetypeinfo_interval_seconds, poll_interval_seconds)"
    )


@pytest.mark.parametrize(
    ("data", "path", "reason"),
    [
        ({"assessment": {"target_order": True}}, "assessment.target_order", "must be an integer"),
        ({"assessment": {"target_order": 4.0}}, "assessment.target_order", "must be an integer"),
        ({"assessment": {"target_order": "4"}}, "assessment.target_order", "must be an integer"),
        (
            {"sources": {"poll_interval_seconds": "15"}},
            "sources.poll_interval_seconds",
            "must be a number",
        ),
        (
            {"sources": {"poll_interval_seconds": False}},
            "sources.poll_interval_seconds",
            "must be a number",
        ),
        (
            {"reporting": {"healthy_for_seconds": math.inf}},
            "reporting.healthy_for_seconds",
            "must be a finite number",
        ),
        (
            {"reporting": {"healthy_for_seconds": math.nan}},
            "reporting.healthy_for_seconds",
            "must be a finite number",
        ),
        ({"reporting": [1, 2]}, "reporting", "must be a mapping, got list"),
        ({"reporting": "x"}, "reporting", "must be a mapping, got str"),
        ({"sources": {"kmsg_enabled": "true"}}, "sources.kmsg_enabled", "must be true or false"),
        ({"sources": {"kmsg_enabled": 1}}, "sources.kmsg_enabled", "must be true or false"),
        ({"sources": {"kmsg_path": 7}}, "sources.kmsg_path", "must be a string"),
        (
            {"reporting": {"taint_effect": "NoExecute"}},
            "reporting.taint_effect",
            "must be one of NoSchedule, PreferNoSchedule, none",
        ),
        (
            {"remediation": {"mode": True}},
            "remediation.mode",
            "must be one of off, dry-run, on",
        ),
        (
            {"assessment": {"exhaustion_watermark": ["high"]}},
            "assessment.exhaustion_watermark",
            "must be one of min, low, high",
        ),
    ],
)
def test_wrong_types_name_the_path(data: dict[str, Any], path: str, reason: str) -> None:
    err = _error(data)
    assert err.path == path
    assert str(err).startswith(f"cfg.yaml: {path}: {reason}"), str(err)


def test_top_level_must_be_a_mapping() -> None:
    for data in ([1], "x", 3):
        err = _error(data)
        assert err.path == ""
        assert str(err).startswith("cfg.yaml: top level must be a mapping, got ")


def test_yaml_off_is_not_a_mode() -> None:
    """YAML 1.1 reads a bare `off` as false: the error says what the value became."""
    with pytest.raises(ConfigError) as info:
        parse_config("remediation:\n  mode: off\n", "cm.yaml")
    assert (
        str(info.value) == "cm.yaml: remediation.mode: must be one of off, dry-run, on; got False"
    )


# --- range checks -------------------------------------------------------------------------------

RANGE_CASES: list[tuple[dict[str, Any], str | None]] = [
    ({"assessment": {"target_order": 0}}, "assessment.target_order"),
    ({"assessment": {"target_order": 13}}, "assessment.target_order"),
    ({"assessment": {"target_order": 1}}, None),
    ({"assessment": {"target_order": 12}}, None),
    ({"assessment": {"fragmented_below_blocks": 0}}, "assessment.fragmented_below_blocks"),
    ({"assessment": {"at_risk_below_blocks": 63}}, "assessment.at_risk_below_blocks"),
    ({"assessment": {"at_risk_below_blocks": 64}}, None),
    (
        {"assessment": {"fragmented_below_blocks": 1000, "at_risk_below_blocks": 999}},
        "assessment.at_risk_below_blocks",
    ),
    ({"assessment": {"min_zone_share": 1.5}}, "assessment.min_zone_share"),
    ({"assessment": {"min_zone_share": -0.1}}, "assessment.min_zone_share"),
    ({"sources": {"poll_interval_seconds": 0.5}}, "sources.poll_interval_seconds"),
    (
        {"sources": {"poll_interval_seconds": 400}},
        "sources.pagetypeinfo_interval_seconds",
    ),
    ({"reporting": {"taint_key": "kubernetes.io/fragmented"}}, "reporting.taint_key"),
    ({"reporting": {"taint_key": "node.kubernetes.io/fragmented"}}, "reporting.taint_key"),
    ({"reporting": {"taint_key": "k8s.io/fragmented"}}, "reporting.taint_key"),
    ({"reporting": {"taint_key": "bad key"}}, "reporting.taint_key"),
    ({"reporting": {"taint_key": ""}}, "reporting.taint_key"),
    ({"reporting": {"taint_key": "example.com/"}}, "reporting.taint_key"),
    ({"reporting": {"taint_key": "example.com/frag"}}, None),
    ({"reporting": {"taint_key": "notkubernetes.io/frag"}}, None),
    ({"reporting": {"taint_key": "fragmented"}}, None),
    ({"reporting": {"fragmented_for_seconds": -1}}, "reporting.fragmented_for_seconds"),
    ({"reporting": {"healthy_for_seconds": -1}}, "reporting.healthy_for_seconds"),
    ({"reporting": {"heartbeat_seconds": 9}}, "reporting.heartbeat_seconds"),
    ({"reporting": {"stuck_pod_seconds": -1}}, "reporting.stuck_pod_seconds"),
    ({"reporting": {"max_tainted_percent": 101}}, "reporting.max_tainted_percent"),
    ({"reporting": {"metrics_port": 65536}}, "reporting.metrics_port"),
    ({"reporting": {"metrics_port": -1}}, "reporting.metrics_port"),
    ({"remediation": {"cooldown_seconds": -1}}, "remediation.cooldown_seconds"),
    ({"remediation": {"max_actions_per_hour": -1}}, "remediation.max_actions_per_hour"),
    ({"remediation": {"max_concurrent_nodes": 0}}, "remediation.max_concurrent_nodes"),
    ({"remediation": {"lease_seconds": 9.5}}, "remediation.lease_seconds"),
    ({"remediation": {"action_timeout_seconds": 0}}, "remediation.action_timeout_seconds"),
    ({"remediation": {"maintenance_window": "25:00-01:00"}}, "remediation.maintenance_window"),
    ({"remediation": {"maintenance_window": "22:00"}}, "remediation.maintenance_window"),
    ({"remediation": {"maintenance_window": "23:59-00:00"}}, None),
    ({"remediation": {"max_psi_some_avg10": 100.5}}, "remediation.max_psi_some_avg10"),
]


@pytest.mark.parametrize(("data", "path"), RANGE_CASES)
def test_range_checks(data: dict[str, Any], path: str | None) -> None:
    if path is None:
        config_from_mapping(data)
    else:
        assert _error(data).path == path


def test_reserved_taint_prefix_message() -> None:
    err = _error({"reporting": {"taint_key": "kubernetes.io/fragmented"}})
    assert str(err) == (
        "cfg.yaml: reporting.taint_key: kubernetes.io and k8s.io prefixes are reserved; use the "
        "agent's own prefix"
    )


# --- YAML -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["assessment: [\n", "a: b: c\n", "reporting:\n\t- x\n", "{"])
def test_invalid_yaml(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "cm.yaml")
    assert info.value.path == ""
    assert str(info.value).startswith("cm.yaml: not valid YAML: ")


def test_yaml_key_path_in_error() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("reporting:\n  taintt_key: memfrag.dev/x\n", "/etc/memfrag/config.yaml")
    assert info.value.path == "reporting.taintt_key"
    assert str(info.value).startswith("/etc/memfrag/config.yaml: reporting.taintt_key: unknown")


def test_huge_integer_for_a_float_key_is_a_config_error() -> None:
    """YAML integers are unbounded: 1e400 written out is an int that no float can hold."""
    with pytest.raises(ConfigError) as info:
        parse_config("sources:\n  poll_interval_seconds: 1" + "0" * 400 + "\n", "cm.yaml")
    assert info.value.path == "sources.poll_interval_seconds"


# --- property: any structure gives a Config or a ConfigError -------------------------------------

KNOWN_KEYS = sorted({p.split(".")[1] for p in DEFAULTS} | {p.split(".")[0] for p in DEFAULTS})
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(-(10**400), 10**400)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
    | st.sampled_from(
        [
            "high",
            "low",
            "none",
            "on",
            "dry-run",
            "NoSchedule",
            "example.com/x",
            "kubernetes.io/x",
            "22:00-04:00",
            0,
            1,
            4,
            64,
            512,
            65535,
            0.5,
            10**400,
        ]
    )
)
# mostly known names, so that generated documents get past the unknown-key check and reach the
# type and range checks
KEYS = st.one_of(
    st.sampled_from(KNOWN_KEYS),
    st.sampled_from(KNOWN_KEYS),
    st.sampled_from(KNOWN_KEYS),
    st.text(max_size=12),
    st.integers(),
    st.booleans(),
)
ANY = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(KEYS, children, max_size=6),
    max_leaves=30,
)


@settings(
    max_examples=600,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(data=ANY)
def test_any_structure_gives_config_or_config_error(data: Any) -> None:
    try:
        cfg = config_from_mapping(data, "fuzz")
    except ConfigError as exc:
        assert exc.source == "fuzz"
        assert str(exc).startswith("fuzz: ")
    else:
        assert isinstance(cfg, Config)


SECTION_VALUES = st.fixed_dictionaries(
    {},
    optional={
        section: st.dictionaries(
            st.sampled_from([p.split(".")[1] for p in DEFAULTS if p.startswith(section + ".")]),
            SCALARS,
            max_size=6,
        )
        for section in ("assessment", "sources", "reporting", "remediation")
    },
)


@settings(max_examples=600, deadline=None, database=None, derandomize=True)
@given(data=SECTION_VALUES)
def test_known_keys_with_any_values(data: dict[str, dict[str, Any]]) -> None:
    """Only known keys: a valid result holds exactly the given values, else the error names
    one of the given keys."""
    try:
        cfg = config_from_mapping(data, "fuzz")
    except ConfigError as exc:
        given_paths = {f"{s}.{k}" for s, keys in data.items() for k in keys}
        assert exc.path in given_paths | {
            # cross-field checks name the dependent key even when only the other one was given
            "assessment.at_risk_below_blocks",
            "sources.pagetypeinfo_interval_seconds",
        }
    else:
        for section, keys in data.items():
            for key, value in keys.items():
                assert _get(cfg, f"{section}.{key}") == value
