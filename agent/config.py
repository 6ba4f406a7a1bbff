"""The agent's configuration: one YAML file, the same for `check` and for the daemon's ConfigMap.

Every key has a documented default (docs/config.md is generated from these dataclasses' field
metadata); unknown keys and wrong types are errors naming the key path, never silently ignored.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml

from agent.errors import ConfigError


def _doc(default: Any, text: str) -> Any:
    return field(default=default, metadata={"doc": text})


@dataclass(frozen=True)
class AssessmentConfig:
    target_order: int = _doc(
        4,
        "Order whose free blocks decide the verdict. 4 (64 KiB) is the first order the kernel "
        "treats as costly (> PAGE_ALLOC_COSTLY_ORDER, so it fails fast instead of retrying) and "
        "the order of the seed incident; kernel-log findings at higher orders are assessed at "
        "their own order as well.",
    )
    fragmented_below_blocks: int = _doc(
        64,
        "A NUMA node is fragmented when its workload zones hold fewer free blocks of the "
        "target order (larger blocks counted as several) than this.",
    )
    at_risk_below_blocks: int = _doc(512, "Below this many target-order blocks: at-risk.")
    min_zone_share: float = _doc(
        0.10,
        "Zones managing less than this share of their NUMA node's memory (DMA, and DMA32 "
        "on large machines) are reported but do not drive the verdict.",
    )
    exhaustion_watermark: Literal["min", "low", "high"] = _doc(
        "high",
        "A zone whose free pages are at or below this watermark is short of memory, not "
        "of contiguity: reported as exhaustion (kubelet's MemoryPressure), never as fragmentation.",
    )


@dataclass(frozen=True)
class SourcesConfig:
    poll_interval_seconds: float = _doc(15.0, "How often the daemon reads buddyinfo & co.")
    pagetypeinfo_interval_seconds: float = _doc(
        300.0,
        "Minimum time between reads of /proc/pagetypeinfo (root-only, expensive); it is "
        "also read when the verdict is not healthy, at most this often.",
    )
    kmsg_enabled: bool = _doc(True, "Follow the kernel log for allocation failures.")
    kmsg_path: str = _doc("/dev/kmsg", "The kernel log device.")
    accept_user_facility: bool = _doc(
        False,
        "Also count /dev/kmsg records of non-kernel facilities. Any root process can "
        "write those, so they are ignored by default; turn on only for tests and demos.",
    )


@dataclass(frozen=True)
class ReportingConfig:
    taint_key: str = _doc("memfrag.dev/fragmented", "Key of the taint set while fragmented.")
    taint_effect: Literal["NoSchedule", "PreferNoSchedule", "none"] = _doc(
        "NoSchedule", "Effect of the taint; 'none' reports the condition without tainting."
    )
    fragmented_for_seconds: float = _doc(
        60.0, "The verdict must stay fragmented this long before the taint is set."
    )
    healthy_for_seconds: float = _doc(
        120.0, "The node must stay healthy this long before the taint and condition clear."
    )
    heartbeat_seconds: float = _doc(
        900.0, "Rewrite an unchanged condition this often (lastHeartbeatTime) and no more."
    )
    stuck_pod_seconds: float = _doc(
        300.0, "A pod on this node waiting in ContainerCreating longer than this is stuck."
    )
    max_tainted_percent: float = _doc(
        20.0,
        "Never taint when that would leave more than this share of nodes tainted by the "
        "agent; report instead.",
    )
    metrics_port: int = _doc(9808, "Port of /metrics and /healthz.")
    metrics_address: str = _doc("0.0.0.0", "Address /metrics and /healthz listen on.")


@dataclass(frozen=True)
class RemediationConfig:
    mode: Literal["off", "dry-run", "on"] = _doc(
        "dry-run", "off: never act; dry-run: log and report exactly what would run; on: act."
    )
    cooldown_seconds: float = _doc(900.0, "Minimum time between two runs of the same action.")
    max_actions_per_hour: int = _doc(4, "Per node, all actions together.")
    max_concurrent_nodes: int = _doc(1, "Cluster-wide: nodes remediating at once (Lease slots).")
    lease_seconds: float = _doc(300.0, "A remediation slot expires this long after its renewal.")
    action_timeout_seconds: float = _doc(120.0, "Give up waiting on one action after this.")
    maintenance_window: str = _doc(
        "", "Optional 'HH:MM-HH:MM' (UTC) outside which nothing runs; empty: any time."
    )
    max_psi_some_avg10: float = _doc(
        50.0,
        "Skip remediation while memory PSI some avg10 (percent) is above this; the node "
        "is thrashing and compaction would make it worse. 100 disables the guard.",
    )
    allow_drop_caches: bool = _doc(True, "Allow drop_caches steps on the ladder.")
    delete_stuck_pods: bool = _doc(
        False,
        "After recovery, delete this node's pods stuck in ContainerCreating that a "
        "controller owns, so they are recreated.",
    )
    apply_tunables: bool = _doc(
        False, "Write the recommended vm.* tunables (min_free_kbytes, watermark_scale_factor...)."
    )


@dataclass(frozen=True)
class Config:
    assessment: AssessmentConfig = field(default_factory=AssessmentConfig)
    sources: SourcesConfig = field(default_factory=SourcesConfig)
    reporting: ReportingConfig = field(default_factory=ReportingConfig)
    remediation: RemediationConfig = field(default_factory=RemediationConfig)


_WINDOW = re.compile(r"^([01][0-9]|2[0-3]):[0-5][0-9]-([01][0-9]|2[0-3]):[0-5][0-9]$")
_TAINT_KEY = re.compile(
    r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)


def _convert(value: Any, hint: Any, path: str, source: str) -> Any:
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise ConfigError(source, path, f"must be a mapping, got {type(value).__name__}")
        return _build(hint, value, path, source)
    origin = typing.get_origin(hint)
    if origin is Literal:
        choices = typing.get_args(hint)
        if value not in choices:
            raise ConfigError(
                source, path, f"must be one of {', '.join(map(str, choices))}; got {value!r}"
            )
        return value
    if origin in (typing.Union, types.UnionType):
        raise TypeError(f"unsupported config type at {path}")  # pragma: no cover
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(source, path, f"must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(source, path, f"must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(source, path, f"must be a number, got {value!r}")
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            raise ConfigError(source, path, f"must be a finite number, got {str(value)[:40]}")
        return number
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(source, path, f"must be a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {hint!r} at {path}")  # pragma: no cover


def _build(cls: type[Any], data: dict[Any, Any], prefix: str, source: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in names:
            where = f"{prefix}.{key}" if prefix else str(key)
            raise ConfigError(source, where, f"unknown key (known: {', '.join(sorted(names))})")
    kwargs = {
        k: _convert(v, hints[k], f"{prefix}.{k}" if prefix else k, source) for k, v in data.items()
    }
    return cls(**kwargs)


def _check_ranges(cfg: Config, source: str) -> None:
    a, s, r, m = cfg.assessment, cfg.sources, cfg.reporting, cfg.remediation
    checks: list[tuple[bool, str, str]] = [
        (1 <= a.target_order <= 12, "assessment.target_order", "must be between 1 and 12"),
        (a.fragmented_below_blocks >= 1, "assessment.fragmented_below_blocks", "must be >= 1"),
        (
            a.at_risk_below_blocks >= a.fragmented_below_blocks,
            "assessment.at_risk_below_blocks",
            "must be >= assessment.fragmented_below_blocks",
        ),
        (0.0 <= a.min_zone_share <= 1.0, "assessment.min_zone_share", "must be between 0 and 1"),
        (s.poll_interval_seconds >= 1, "sources.poll_interval_seconds", "must be >= 1"),
        (
            s.pagetypeinfo_interval_seconds >= s.poll_interval_seconds,
            "sources.pagetypeinfo_interval_seconds",
            "must be >= sources.poll_interval_seconds",
        ),
        (
            bool(_TAINT_KEY.match(r.taint_key)) and len(r.taint_key) <= 316,
            "reporting.taint_key",
            f"is not a valid taint key: {r.taint_key!r}",
        ),
        (
            not re.match(r"^([^/]*\.)?(kubernetes\.io|k8s\.io)/", r.taint_key),
            "reporting.taint_key",
            "kubernetes.io and k8s.io prefixes are reserved; use the agent's own prefix",
        ),
        (r.fragmented_for_seconds >= 0, "reporting.fragmented_for_seconds", "must be >= 0"),
        (r.healthy_for_seconds >= 0, "reporting.healthy_for_seconds", "must be >= 0"),
        (r.heartbeat_seconds >= 10, "reporting.heartbeat_seconds", "must be >= 10"),
        (r.stuck_pod_seconds >= 0, "reporting.stuck_pod_seconds", "must be >= 0"),
        (0 <= r.max_tainted_percent <= 100, "reporting.max_tainted_percent", "must be 0..100"),
        (0 <= r.metrics_port <= 65535, "reporting.metrics_port", "must be 0..65535"),
        (m.cooldown_seconds >= 0, "remediation.cooldown_seconds", "must be >= 0"),
        (m.max_actions_per_hour >= 0, "remediation.max_actions_per_hour", "must be >= 0"),
        (m.max_concurrent_nodes >= 1, "remediation.max_concurrent_nodes", "must be >= 1"),
        (m.lease_seconds >= 10, "remediation.lease_seconds", "must be >= 10"),
        (m.action_timeout_seconds > 0, "remediation.action_timeout_seconds", "must be > 0"),
        (
            m.maintenance_window == "" or bool(_WINDOW.match(m.maintenance_window)),
            "remediation.maintenance_window",
            f"must be empty or 'HH:MM-HH:MM', got {m.maintenance_window!r}",
        ),
        (0 <= m.max_psi_some_avg10 <= 100, "remediation.max_psi_some_avg10", "must be 0..100"),
    ]
    for ok, path, reason in checks:
        if not ok:
            raise ConfigError(source, path, reason)


def config_from_mapping(data: Any, source: str = "<config>") -> Config:
    """Validate a parsed YAML document; None (an empty file) means all defaults."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(source, "", f"top level must be a mapping, got {type(data).__name__}")
    cfg: Config = _build(Config, data, "", source)
    _check_ranges(cfg, source)
    return cfg


def parse_config(text: str, source: str = "<config>") -> Config:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(source, "", f"not valid YAML: {exc}") from exc
    return config_from_mapping(data, source)


def config_docs() -> list[tuple[str, str, str]]:
    """(key path, default, description) for every key: the README's table is made from this."""
    rows: list[tuple[str, str, str]] = []
    for section in dataclasses.fields(Config):
        cls = typing.get_type_hints(Config)[section.name]
        for f in dataclasses.fields(cls):
            rows.append((f"{section.name}.{f.name}", repr(f.default), f.metadata.get("doc", "")))
    return rows
