"""agent.config.model and agent.config.load: defaults, documentation, strict validation naming the
key path, the hardened loader, the mounted file's reloads."""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.base.errors import ConfigError
from agent.config.load import parse_config
from agent.config.model import (
    AssessmentConfig,
    Config,
    RemediationConfig,
    ReportingConfig,
    SourcesConfig,
    config_docs,
    config_from_mapping,
)
from agent.config.reload import ConfigFile, Reload

DEFAULTS: dict[str, Any] = {
    "assessment.target_order": 4,
    "assessment.fragmented_below_blocks": 64,
    "assessment.at_risk_below_blocks": 512,
    "assessment.min_zone_share": 0.10,
    "assessment.exhaustion_watermark": "high",
    "assessment.prediction_enabled": True,
    "assessment.prediction_window_seconds": 3600.0,
    "assessment.prediction_horizon_seconds": 21600.0,
    "assessment.hugepage_targets": "",
    "assessment.thp_fallback_high_per_minute": 100.0,
    "assessment.vmstat_window_seconds": 600.0,
    "sources.poll_interval_seconds": 15.0,
    "sources.pagetypeinfo_interval_seconds": 300.0,
    "sources.kmsg_enabled": True,
    "sources.kmsg_path": "/dev/kmsg",
    "sources.accept_user_facility": False,
    "sources.tracing_enabled": False,
    "sources.tracing_alloc_failures": "at-risk",
    "reporting.taint_key": "memfrag.dev/fragmented",
    "reporting.taint_effect": "NoSchedule",
    "reporting.fragmented_for_seconds": 60.0,
    "reporting.healthy_for_seconds": 120.0,
    "reporting.heartbeat_seconds": 900.0,
    "reporting.stuck_pod_seconds": 300.0,
    "reporting.max_tainted_percent": 20.0,
    "reporting.kernel_memory_pods": 3,
    "reporting.metrics_port": 9808,
    "reporting.metrics_address": "0.0.0.0",
    "reporting.contiguity_label": False,
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
    "remediation.tunables_trial_seconds": 1800.0,
    "remediation.act_on_prediction": False,
    "remediation.act_on_prediction_max_psi_some_avg60": 5.0,
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
    assert len(rows) == 43


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
        "kmsg_path, pagetypeinfo_interval_seconds, poll_interval_seconds, tracing_alloc_failures, "
        "tracing_enabled)"
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
            {"sources": {"tracing_alloc_failures": "at_risk"}},
            "sources.tracing_alloc_failures",
            "must be one of at-risk, always",
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
    ({"assessment": {"target_order": 14}}, "assessment.target_order"),
    ({"assessment": {"target_order": 1}}, None),
    # arm64 with 64 KiB pages: orders 0..13 (the old bound, 12, refused its largest)
    ({"assessment": {"target_order": 13}}, None),
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
    # `$` is the end of the text, as in the chart's schema (Python's also matched before a final
    # newline: the API server would have refused every taint write)
    ({"reporting": {"taint_key": "example.com/frag\n"}}, "reporting.taint_key"),
    ({"remediation": {"maintenance_window": "22:00-04:00\n"}}, "remediation.maintenance_window"),
    # an empty device path: refused by the chart, and now by the agent too
    ({"sources": {"kmsg_path": ""}}, "sources.kmsg_path"),
    ({"reporting": {"metrics_address": "fe80::1%eth0"}}, "reporting.metrics_address"),
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
    # a window of zero length would never open: refused, naming the key
    ({"remediation": {"maintenance_window": "10:00-10:00"}}, "remediation.maintenance_window"),
    ({"remediation": {"maintenance_window": "10:00-10:01"}}, None),
    # a slot that expires while its action runs lets another node act at the same time
    ({"remediation": {"lease_seconds": 60}}, "remediation.lease_seconds"),
    (
        {"remediation": {"lease_seconds": 60, "action_timeout_seconds": 61}},
        "remediation.lease_seconds",
    ),
    ({"remediation": {"lease_seconds": 60, "action_timeout_seconds": 60}}, None),
    # metrics_address: an IP literal (it was a traceback at start)
    ({"reporting": {"metrics_address": "999.1.1.1"}}, "reporting.metrics_address"),
    ({"reporting": {"metrics_address": "localhost"}}, "reporting.metrics_address"),
    ({"reporting": {"metrics_address": ""}}, "reporting.metrics_address"),
    ({"reporting": {"metrics_address": "0.0.0.0:9808"}}, "reporting.metrics_address"),
    ({"reporting": {"metrics_address": "::"}}, None),
    ({"reporting": {"metrics_address": "127.0.0.1"}}, None),
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
            "remediation.lease_seconds",
        }
    else:
        for section, keys in data.items():
            for key, value in keys.items():
                assert _get(cfg, f"{section}.{key}") == value


# --- hostile documents (issue 13, item 4): a clear, bounded ConfigError, fast ------------------

MAX_MESSAGE = 400


def _bomb(levels: int) -> str:
    """A billion-laughs document under a typed key: each level repeats the previous nine times.
    Nine levels are the 397-byte bomb whose repr took 1.6 GB; six keep the old failure cheap."""
    anchors = ["&l0 [" + ",".join(["lol"] * 9) + "]"]
    anchors += [f"&l{i} [" + ",".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return f"assessment:\n  target_order: [{', '.join(anchors)}]\n"


def _refused(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "cm.yaml")
    assert len(str(info.value)) < MAX_MESSAGE, str(info.value)[:MAX_MESSAGE]
    return info.value


@pytest.mark.parametrize("levels", [6, 9])
def test_an_alias_bomb_is_refused_without_expanding_it(levels: int) -> None:
    err = _refused(_bomb(levels))
    assert str(err) == "cm.yaml: line 2: YAML aliases (*name) are not allowed"


def test_deep_nesting_is_refused_not_a_recursion_error() -> None:
    err = _refused("reporting:\n  taint_key: " + "[" * 10000 + "]" * 10000 + "\n")
    assert str(err) == "cm.yaml: line 2: nested deeper than 8 levels"


def test_deep_block_nesting_is_refused() -> None:
    text = "".join(" " * i + f"k{i}:\n" for i in range(100))
    assert str(_refused(text)) == "cm.yaml: line 8: nested deeper than 8 levels"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "reporting:\n  taint_key: a.io/x\n  taint_key: b.io/y\n",
            "cm.yaml: reporting.taint_key: duplicate key (lines 2 and 3)",
        ),
        (
            "remediation:\n  mode: dry-run\nremediation:\n  mode: 'on'\n",
            "cm.yaml: remediation: duplicate key (lines 1 and 3)",
        ),
        (
            "reporting:\n  <<: {taint_key: a.io/b}\n",
            "cm.yaml: line 2: YAML merge keys (<<) are not allowed",
        ),
        ("? [a, b]\n: 1\n", "cm.yaml: line 1: keys must be plain scalars"),
        (
            "sources:\n  poll_interval_seconds: " + "9" * 5000 + "\n",
            "cm.yaml: line 2: an integer of 5000 characters",
        ),
        ("#" * (64 << 10) + "x", f"cm.yaml: {(64 << 10) + 1} characters: larger than {64 << 10}"),
    ],
)
def test_hostile_documents(text: str, message: str) -> None:
    assert str(_refused(text)) == message


def test_duplicate_keys_in_the_same_line_of_flow_style() -> None:
    assert str(_refused("reporting: {taint_key: a.io/x, taint_key: a.io/y}\n")) == (
        "cm.yaml: reporting.taint_key: duplicate key (lines 1 and 1)"
    )


@pytest.mark.parametrize(
    "value",
    [
        "x" * 1_000_000,
        10**5000,  # no str() at all past Python's int-conversion limit
        [[[[[[[[[[["deep"]]]]]]]]]]],
        {"k": list(range(100_000))},
        b"\x00" * 10_000,
    ],
    ids=["long-string", "huge-int", "nested-list", "big-mapping", "bytes"],
)
def test_messages_built_from_values_are_bounded(value: Any) -> None:
    for data in (
        {"reporting": {"taint_effect": value}},
        {"assessment": {"target_order": value}},
        {"sources": {"poll_interval_seconds": value}},
        {"sources": {"kmsg_enabled": value}},
        {"sources": {"kmsg_path": value}} if not isinstance(value, str) else {},
        {"reporting": {"taint_key": value}} if isinstance(value, str) else {},
    ):
        if not data:
            continue
        err = _error(data)
        assert len(str(err)) < MAX_MESSAGE, str(err)[:MAX_MESSAGE]


def test_a_huge_unknown_key_is_named_briefly() -> None:
    err = _error({"reporting": {"k" * 100_000: 1}})
    assert err.path.startswith("reporting.'kkkk") and len(str(err)) < MAX_MESSAGE


def test_a_nested_list_of_any_depth_gives_a_config_error() -> None:
    deep: list[Any] = []
    for _ in range(100_000):
        deep = [deep]
    assert _error({"assessment": {"target_order": deep}}).path == "assessment.target_order"


# --- the mounted file: reloads never crash, start refuses clearly -------------------------------


def _rewrite(path: Path, text: str) -> None:
    """A new file in place, as kubelet's ..data swap gives (new inode)."""
    tmp = path.with_suffix(".new")
    tmp.write_text(text)
    os.replace(tmp, path)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (_bomb(9), "line 2: YAML aliases (*name) are not allowed"),
        ("reporting:\n  taint_key: " + "[" * 10000 + "]" * 10000 + "\n", "nested deeper"),
        ("reporting:\n  taint_key: a.io/x\n  taint_key: a.io/y\n", "duplicate key"),
        ("remediation:\n  maintenance_window: '03:00-03:00'\n", "zero length"),
    ],
    ids=["alias-bomb", "deep-nesting", "duplicate-key", "empty-window"],
)
def test_a_hostile_reload_keeps_the_last_good_config(
    tmp_path: Path, text: str, reason: str
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("reporting:\n  taint_key: example.com/frag\n")
    cf = ConfigFile(str(path))
    good = cf.config
    _rewrite(path, text)
    r = cf.reload_if_changed()
    assert r.changed and r.error is not None
    assert r.error.startswith(f"{path}: ") and reason in r.error
    assert r.error.endswith("; keeping the last good config") and len(r.error) < MAX_MESSAGE
    assert cf.config is good
    assert cf.reload_if_changed() == Reload(False)  # said once, not every poll


def test_a_reload_catches_what_nobody_foresaw(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("")
    cf = ConfigFile(str(path))

    def boom(text: str, source: str) -> Config:
        raise RuntimeError("x" * 100_000)

    monkeypatch.setattr("agent.config.load.parse_config", boom)
    _rewrite(path, "sources: {}\n")
    r = cf.reload_if_changed()
    assert r.error is not None and r.error.startswith(f"{path}: cannot load: RuntimeError: xxx")
    assert len(r.error) < MAX_MESSAGE
    assert cf.config == Config()


@pytest.mark.timeout(60)
def test_a_fifo_config_is_refused_not_waited_on(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    os.mkfifo(path)
    with pytest.raises(ConfigError) as info:
        ConfigFile(str(path))
    assert str(info.value) == f"{path}: cannot read config: a FIFO, not a regular file"


def test_the_mounted_symlink_is_followed(tmp_path: Path) -> None:
    """kubelet mounts config.yaml -> ..data/config.yaml: a config may be a symlink."""
    (tmp_path / "..data").mkdir()
    (tmp_path / "..data" / "config.yaml").write_text("remediation:\n  mode: 'on'\n")
    (tmp_path / "config.yaml").symlink_to(tmp_path / "..data" / "config.yaml")
    assert ConfigFile(str(tmp_path / "config.yaml")).config.remediation.mode == "on"


def test_start_refuses_a_hostile_config_with_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(_bomb(9))
    with pytest.raises(ConfigError) as info:
        ConfigFile(str(path))
    assert str(info.value) == f"{path}: line 2: YAML aliases (*name) are not allowed"
