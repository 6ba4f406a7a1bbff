"""The agent's configuration: one YAML file, the same for `check` and for the daemon's ConfigMap.

Every key has a documented default (docs/config.md is generated from these dataclasses' field
metadata); unknown keys and wrong types are errors naming the key path, never silently ignored.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml

from agent.base.errors import ConfigError
from agent.base.excerpt import excerpt


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
                source, path, f"must be one of {', '.join(map(str, choices))}; got {excerpt(value)}"
            )
        return value
    if origin in (typing.Union, types.UnionType):
        raise TypeError(f"unsupported config type at {path}")  # pragma: no cover
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(source, path, f"must be true or false, got {excerpt(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(source, path, f"must be an integer, got {excerpt(value)}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(source, path, f"must be a number, got {excerpt(value)}")
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            raise ConfigError(source, path, f"must be a finite number, got {excerpt(value)}")
        return number
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(source, path, f"must be a string, got {excerpt(value)}")
        return value
    raise TypeError(f"unsupported config type {hint!r} at {path}")  # pragma: no cover


def _build(cls: type[Any], data: dict[Any, Any], prefix: str, source: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in names:
            name = key if isinstance(key, str) and len(key) <= 40 else excerpt(key, 40)
            where = f"{prefix}.{name}" if prefix else str(name)
            raise ConfigError(source, where, f"unknown key (known: {', '.join(sorted(names))})")
    kwargs = {
        k: _convert(v, hints[k], f"{prefix}.{k}" if prefix else k, source) for k, v in data.items()
    }
    return cls(**kwargs)


def _is_ip(text: str) -> bool:
    """An address literal: a host name would need DNS at start and could bind elsewhere."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


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
            f"is not a valid taint key: {excerpt(r.taint_key)}",
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
        (
            _is_ip(r.metrics_address),
            "reporting.metrics_address",
            f"must be an IPv4 or IPv6 address such as 0.0.0.0, :: or 127.0.0.1; got "
            f"{excerpt(r.metrics_address)}",
        ),
        (m.cooldown_seconds >= 0, "remediation.cooldown_seconds", "must be >= 0"),
        (m.max_actions_per_hour >= 0, "remediation.max_actions_per_hour", "must be >= 0"),
        (m.max_concurrent_nodes >= 1, "remediation.max_concurrent_nodes", "must be >= 1"),
        (m.lease_seconds >= 10, "remediation.lease_seconds", "must be >= 10"),
        (m.action_timeout_seconds > 0, "remediation.action_timeout_seconds", "must be > 0"),
        (
            m.lease_seconds >= m.action_timeout_seconds,
            "remediation.lease_seconds",
            "must be >= remediation.action_timeout_seconds: a slot that expires while its "
            "action still runs lets another node start one",
        ),
        (
            m.maintenance_window == "" or bool(_WINDOW.match(m.maintenance_window)),
            "remediation.maintenance_window",
            f"must be empty or 'HH:MM-HH:MM', got {excerpt(m.maintenance_window)}",
        ),
        (
            m.maintenance_window[:5] != m.maintenance_window[6:] or m.maintenance_window == "",
            "remediation.maintenance_window",
            "starts and ends at the same minute: a window of zero length never opens "
            "(leave it empty for any time)",
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


# The config has 30 keys in two levels; the chart renders it in under 2 KiB. These bounds leave
# room for comments and refuse what only an attack needs: an alias bomb (a few hundred bytes
# expanding to gigabytes), 10 KB of nesting (a RecursionError in the composer), huge integers.
MAX_CONFIG_BYTES = 64 << 10
MAX_DEPTH = 8
MAX_INT_CHARS = 500
_MERGE_TAG = "tag:yaml.org,2002:merge"


class _Refused(Exception):
    def __init__(self, mark: yaml.Mark | None, reason: str) -> None:
        super().__init__(reason)
        self.line = mark.line + 1 if mark is not None else None
        self.reason = reason


class _Loader(yaml.SafeLoader):
    """SafeLoader without aliases, without deep nesting and without huge integers."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            raise _Refused(self._mark(), "YAML aliases (*name) are not allowed")
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _Refused(self._mark(), f"nested deeper than {MAX_DEPTH} levels")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def _mark(self) -> yaml.Mark | None:
        event: yaml.Event = self.peek_event()  # type: ignore[no-untyped-call]
        mark: yaml.Mark | None = event.start_mark  # type: ignore[assignment]
        return mark

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        if len(node.value) > MAX_INT_CHARS:
            raise _Refused(node.start_mark, f"an integer of {len(node.value)} characters")
        return super().construct_yaml_int(node)


_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_yaml_int)


def _check_keys(loader: _Loader, node: yaml.Node, path: str) -> None:
    """Duplicate keys are an error (YAML says so; PyYAML silently keeps the last), merge keys
    (<<) too: each key of the file means exactly what it says once."""
    if isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _check_keys(loader, item, f"{path}[{i}]")
    if not isinstance(node, yaml.MappingNode):
        return
    first: dict[object, int] = {}
    for key_node, value_node in node.value:
        line = key_node.start_mark.line + 1
        if key_node.tag == _MERGE_TAG:
            raise _Refused(key_node.start_mark, "YAML merge keys (<<) are not allowed")
        if not isinstance(key_node, yaml.ScalarNode):
            raise _Refused(key_node.start_mark, "keys must be plain scalars")
        key = loader.construct_object(key_node)
        name = key if isinstance(key, str) and len(key) <= 40 else excerpt(key, 40)
        where = f"{path}.{name}" if path else str(name)
        if key in first:  # a scalar: hashable
            raise ConfigError("", where, f"duplicate key (lines {first[key]} and {line})")
        first[key] = line
        _check_keys(loader, value_node, where)


def parse_config(text: str, source: str = "<config>") -> Config:
    """Parse and validate a config file's text; every failure is a ConfigError naming the
    source, the line or key, and a bounded excerpt of the offending value."""
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigError(source, "", f"{len(text)} characters: larger than {MAX_CONFIG_BYTES}")
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            data = None
        else:
            _check_keys(loader, node, "")
            data = loader.construct_document(node)
    except _Refused as exc:
        where = f"line {exc.line}: " if exc.line is not None else ""
        raise ConfigError(source, "", f"{where}{exc.reason}") from None
    except ConfigError as exc:
        raise ConfigError(source, exc.path, exc.reason) from None
    except yaml.YAMLError as exc:
        message = str(exc)
        raise ConfigError(source, "", f"not valid YAML: {message[:500]}") from None
    finally:
        loader.dispose()
    return config_from_mapping(data, source)


def config_docs() -> list[tuple[str, str, str]]:
    """(key path, default, description) for every key: the README's table is made from this."""
    rows: list[tuple[str, str, str]] = []
    for section in dataclasses.fields(Config):
        cls = typing.get_type_hints(Config)[section.name]
        for f in dataclasses.fields(cls):
            rows.append((f"{section.name}.{f.name}", repr(f.default), f.metadata.get("doc", "")))
    return rows
