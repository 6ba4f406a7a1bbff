"""The agent's configuration model: one YAML file, the same for `check` and the daemon's ConfigMap.

Every key is a field of the dataclasses below whose metadata says, once, what it means (`doc`) and
which values it allows (`allowed`, an `Allowed`): the validation here and the chart's values
schema (agent.config.schema) both read it, and so do the README's table and `config_docs`. What a
JSON schema cannot say is explicit: rules between two keys are CROSS_FIELD_RULES, rules on one
value (an IP literal, a window of zero length) are the field's `Allowed.rules`; the agent checks
them and the schema's descriptions name them. Unknown keys and wrong types are errors naming the
key path, never silently ignored.
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import math
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from agent.base.errors import ConfigError
from agent.base.excerpt import excerpt
from agent.config.targets import targets_error

# The orders a target may take: assessment.target_order and the CLI's --order.
# From 1: order 0 is a single page, which no fragmentation can take away (a failed order-0
# allocation is plain exhaustion). Up to 13: the largest MAX_PAGE_ORDER a mainline kernel has on
# the architectures Kubernetes nodes run: 10 on x86-64 and s390x, 10, 11 or 13 on arm64 with 4, 16
# or 64 KiB pages (13: its 512 MiB transparent huge page), 12 at most on ppc64. A kernel's own
# largest order is smaller and read from its buddyinfo: above it the assessment says so.
LOWEST_ORDER = 1
HIGHEST_ORDER = 13

Number = int | float


@dataclass(frozen=True)
class Rule:
    """A check of one value that a JSON schema cannot express: the agent applies it (after the
    schema's own keywords), the schema's description names it."""

    ok: Callable[[Any], bool]
    reason: str  # the error; {value} becomes a bounded excerpt of the value
    doc: str  # what it requires, for the descriptions


@dataclass(frozen=True)
class Allowed:
    """The values one key allows, stated once: validated by `config_from_mapping`, written into
    the chart's schema as the JSON Schema keywords of the same names."""

    minimum: Number | None = None
    maximum: Number | None = None
    exclusive_minimum: Number | None = None
    min_length: int | None = None
    max_length: int | None = None
    pattern: str | None = None  # JSON Schema semantics: searched, `$` is the end of the text
    invalid: str = ""  # the error when a length or the pattern fails; {value}: an excerpt
    says: str = ""  # the pattern in words, for the descriptions
    not_pattern: str | None = None  # the value must not contain a match (schema: not.pattern)
    reserved: str = ""  # the error when not_pattern matches
    rules: tuple[Rule, ...] = ()
    chart_minimum: Number | None = None  # stricter in the chart only, for `chart_why`
    chart_why: str = ""


def _key(default: Any, doc: str, allowed: Allowed | None = None) -> Any:
    return field(default=default, metadata={"doc": doc, "allowed": allowed or Allowed()})


def _is_ip(text: str) -> bool:
    """An address literal: a host name would need DNS at start and could bind elsewhere."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


_ADDRESS = "must be an IPv4 or IPv6 address such as 0.0.0.0, :: or 127.0.0.1; got {value}"
_SECONDS = Allowed(minimum=0)
_TARGET = r"[0-9]{1,9}[kKmMgG](i?B)?=[0-9]{1,9}(@[0-9]{1,4})?"


@dataclass(frozen=True)
class AssessmentConfig:
    target_order: int = _key(
        4,
        "Order whose free blocks decide the verdict. 4 (64 KiB) is the first order the kernel "
        "treats as costly (> PAGE_ALLOC_COSTLY_ORDER, so it fails fast instead of retrying) and "
        "the order of the seed incident; kernel-log findings at higher orders are assessed at "
        "their own order as well.",
        Allowed(minimum=LOWEST_ORDER, maximum=HIGHEST_ORDER),
    )
    fragmented_below_blocks: int = _key(
        64,
        "A NUMA node is fragmented when its workload zones hold fewer free blocks of the "
        "target order (larger blocks counted as several) than this.",
        Allowed(minimum=1),
    )
    at_risk_below_blocks: int = _key(
        512, "Below this many target-order blocks: at-risk.", Allowed(minimum=1)
    )
    min_zone_share: float = _key(
        0.10,
        "Zones managing less than this share of their NUMA node's memory (DMA, and DMA32 "
        "on large machines) are reported but do not drive the verdict.",
        Allowed(minimum=0, maximum=1),
    )
    exhaustion_watermark: Literal["min", "low", "high"] = _key(
        "high",
        "A zone whose free pages are at or below this watermark is short of memory, not "
        "of contiguity: reported as exhaustion (kubelet's MemoryPressure), never as fragmentation.",
    )
    prediction_enabled: bool = _key(
        True,
        "Predict, per NUMA node, when the free blocks at the target order will cross "
        "fragmented_below_blocks (a robust trend over prediction_window_seconds). It only "
        "reports (reason FragmentationPredicted while the condition stays False, an Event, "
        "memfrag_predicted_seconds_to_fragmented): it never taints and never acts.",
    )
    prediction_window_seconds: float = _key(
        3600.0,
        "The trend is read over this much of the recent past (after the last upward jump: a "
        "compaction or freed memory). A trend needs 8 samples spanning 10 minutes (half the "
        "window, if shorter): keep it well above sources.poll_interval_seconds.",
        Allowed(minimum=600, maximum=86400),
    )
    prediction_horizon_seconds: float = _key(
        21600.0,
        "Report a prediction only when the trend crosses the fragmented line within this.",
        Allowed(minimum=60, maximum=604800),
    )
    hugepage_targets: str = _key(
        "",
        "Hugepage pools this node is expected to hold, as comma-separated SIZE=COUNT[@NUMA_NODE] "
        "(e.g. '2M=1024,1G=4@0'; without @ the machine-wide pool): the condition's message "
        "names a pool that holds fewer pages than its target and cannot grow to it from the "
        "free blocks now; memfrag_hugepages_target and memfrag_hugepages_shortfall. Empty: "
        "none (pools with nr_overcommit_hugepages headroom are still checked).",
        Allowed(
            max_length=400,
            pattern=rf"^$|^{_TARGET}(,{_TARGET})*$",
            invalid="must be comma-separated SIZE=COUNT[@NUMA_NODE] such as 2M=1024,1G=4@0; "
            "got {value}",
            says="comma-separated SIZE=COUNT[@NUMA_NODE], e.g. 2M=1024,1G=4@0",
            rules=(
                Rule(
                    lambda v: targets_error(v) is None,
                    "gives one pool twice (or more than 16 pools): {value}",
                    "each pool (size and NUMA node) at most once, 16 pools at most",
                ),
            ),
        ),
    )
    thp_fallback_high_per_minute: float = _key(
        100.0,
        "Transparent huge page faults that fell back to small pages (thp_fault_fallback per "
        "minute over vmstat_window_seconds, memfrag_vmstat_rate_per_minute) above which the "
        "condition's message says so.",
        Allowed(exclusive_minimum=0),
    )
    vmstat_window_seconds: float = _key(
        600.0,
        "The /proc/vmstat rates (compact_stall, compact_fail, allocstall, thp_fault_fallback, "
        "...) are per minute over this much of the recent past, sampled every poll: in "
        "memfrag_vmstat_rate_per_minute, and in the condition's message while not healthy.",
        Allowed(minimum=60, maximum=86400),
    )


@dataclass(frozen=True)
class SourcesConfig:
    poll_interval_seconds: float = _key(
        15.0, "How often the daemon reads buddyinfo & co.", Allowed(minimum=1)
    )
    pagetypeinfo_interval_seconds: float = _key(
        300.0,
        "Minimum time between reads of /proc/pagetypeinfo (root-only, expensive); it is "
        "also read when the verdict is not healthy, at most this often, and at a fragmented "
        "episode's first tick (the cause picks the remediation ladder).",
        Allowed(minimum=1),
    )
    kmsg_enabled: bool = _key(True, "Follow the kernel log for allocation failures.")
    kmsg_path: str = _key("/dev/kmsg", "The kernel log device.", Allowed(min_length=1))
    accept_user_facility: bool = _key(
        False,
        "Also count /dev/kmsg records of non-kernel facilities. Any root process can "
        "write those, so they are ignored by default; turn on only for tests and demos.",
    )
    tracing_enabled: bool = _key(
        False,
        "Count every failed allocation at or above assessment.target_order, pageblock steals "
        "and compactions from kernel tracepoints (our own ftrace instance; needs tracefs, the "
        "chart mounts it only when on). Read at start: a change takes a restart (a reload that "
        "changes assessment.target_order restarts the instance with the new filter).",
    )
    tracing_alloc_failures: Literal["at-risk", "always"] = _key(
        "at-risk",
        "With tracing on, when the per-allocation tracepoint (kmem:mm_page_alloc, which "
        "fires for every page allocated) counts failures: 'at-risk' arms it only while the "
        "node is at risk (the verdict not healthy, free target-order blocks below twice "
        "assessment.at_risk_below_blocks, compaction stalls or THP fallbacks rising, or a "
        "slow-path tracepoint at the order) and disarms it after 10 minutes without a sign; "
        "'always' keeps it on (~6 % of an allocation-heavy loop's time). Takes effect at the "
        "next poll.",
    )


@dataclass(frozen=True)
class ReportingConfig:
    taint_key: str = _key(
        "memfrag.dev/fragmented",
        "Key of the taint set while fragmented.",
        Allowed(
            max_length=316,
            pattern=r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$",
            invalid="is not a valid taint key: {value}",
            says="a taint key ([prefix/]name), not under kubernetes.io or k8s.io",
            not_pattern=r"^([^/]*\.)?(kubernetes\.io|k8s\.io)/",
            reserved="kubernetes.io and k8s.io prefixes are reserved; use the agent's own prefix",
        ),
    )
    taint_effect: Literal["NoSchedule", "PreferNoSchedule", "none"] = _key(
        "NoSchedule", "Effect of the taint; 'none' reports the condition without tainting."
    )
    fragmented_for_seconds: float = _key(
        60.0, "The verdict must stay fragmented this long before the taint is set.", _SECONDS
    )
    healthy_for_seconds: float = _key(
        120.0,
        "The node must stay healthy this long before the taint and condition clear.",
        _SECONDS,
    )
    heartbeat_seconds: float = _key(
        900.0,
        "Rewrite an unchanged condition this often (lastHeartbeatTime) and no more.",
        Allowed(minimum=10),
    )
    stuck_pod_seconds: float = _key(
        300.0,
        "A pod on this node waiting in ContainerCreating longer than this is stuck.",
        _SECONDS,
    )
    max_tainted_percent: float = _key(
        20.0,
        "Never taint when that would leave more than this share of nodes tainted by the "
        "agent; report instead.",
        Allowed(minimum=0, maximum=100),
    )
    kernel_memory_pods: int = _key(
        3,
        "When the cause is unmovable kernel memory, name this many pods holding the most of it "
        "(cgroup v2 memory.stat slab_unreclaimable, kernel_stack, pagetables, sock, percpu; v1 "
        "memory.kmem and memory.kmem.tcp) in the condition's message, and give each an "
        "UnmovableKernelMemory Event in its namespace once per episode. 0: off (the chart "
        "then grants no Event writes outside default).",
        Allowed(minimum=0, maximum=20),
    )
    metrics_port: int = _key(
        9808,
        "Port of /metrics and /healthz; 0 takes a free port (tests).",
        Allowed(
            minimum=0,
            maximum=65535,
            chart_minimum=1,
            chart_why="it is also the pod's containerPort",
        ),
    )
    metrics_address: str = _key(
        "0.0.0.0",
        "Address /metrics and /healthz listen on.",
        Allowed(
            pattern=r"^[0-9A-Fa-f:.]+$",
            invalid=_ADDRESS,
            says="an IPv4 or IPv6 address literal",
            rules=(
                Rule(
                    _is_ip,
                    _ADDRESS,
                    "a valid IPv4 or IPv6 address (the pattern is only a first sieve)",
                ),
            ),
        ),
    )
    contiguity_label: bool = _key(
        False,
        "Label the Node memfrag.dev/contiguity=high|medium|low|none (free blocks at the target "
        "order against at_risk_below_blocks and fragmented_below_blocks, the emptiest NUMA node "
        "counting), so that pods needing contiguous memory can select nodes before the taint "
        "fires; written only when the bucket changes, with hysteresis. Needs the chart's "
        "nodes patch permission (granted already for the taint).",
    )


@dataclass(frozen=True)
class RemediationConfig:
    mode: Literal["off", "dry-run", "on"] = _key(
        "dry-run",
        "off: never act; dry-run: log and report exactly what would run; on: act. Quote 'on' "
        "and 'off': unquoted, YAML reads them as true and false.",
    )
    cooldown_seconds: float = _key(
        900.0, "Minimum time between two runs of the same action.", _SECONDS
    )
    max_actions_per_hour: int = _key(4, "Per node, all actions together.", Allowed(minimum=0))
    max_concurrent_nodes: int = _key(
        1, "Cluster-wide: nodes remediating at once (Lease slots).", Allowed(minimum=1)
    )
    lease_seconds: float = _key(
        300.0, "A remediation slot expires this long after its renewal.", Allowed(minimum=10)
    )
    action_timeout_seconds: float = _key(
        120.0, "Give up waiting on one action after this.", Allowed(exclusive_minimum=0)
    )
    maintenance_window: str = _key(
        "",
        "Optional 'HH:MM-HH:MM' (UTC) outside which nothing runs; empty: any time.",
        Allowed(
            pattern=r"^$|^([01][0-9]|2[0-3]):[0-5][0-9]-([01][0-9]|2[0-3]):[0-5][0-9]$",
            invalid="must be empty or 'HH:MM-HH:MM', got {value}",
            says="empty or HH:MM-HH:MM",
            rules=(
                Rule(
                    lambda w: w == "" or w[:5] != w[6:],
                    "starts and ends at the same minute: a window of zero length never opens "
                    "(leave it empty for any time)",
                    "not of zero length (start and end differ)",
                ),
            ),
        ),
    )
    max_psi_some_avg10: float = _key(
        50.0,
        "Skip remediation while memory PSI some avg10 (percent) is above this; the node "
        "is thrashing and compaction would make it worse. 100 disables the guard.",
        Allowed(minimum=0, maximum=100),
    )
    allow_drop_caches: bool = _key(True, "Allow drop_caches steps on the ladder.")
    delete_stuck_pods: bool = _key(
        False,
        "After recovery, delete this node's pods stuck in ContainerCreating that a "
        "controller owns, so they are recreated.",
    )
    apply_tunables: bool = _key(
        False,
        "With mode 'on', try the vm.* tunables the review recommends (min_free_kbytes, "
        "watermark_scale_factor, compaction_proactiveness, extfrag_threshold), one at a time: "
        "measure tunables_trial_seconds before and as long after the change (blocks at the "
        "target order, compact_stall and kswapd runs per minute), keep the new value only if it "
        "helped, roll it back otherwise; each outcome an Event. At most max_concurrent_nodes "
        "nodes try at once (Lease slots); the original value is kept in the node's record "
        "(its Lease) and restored on stop or after a crash.",
    )
    tunables_trial_seconds: float = _key(
        1800.0,
        "Length of each of the two windows of a tunable trial (before and after the change).",
        Allowed(minimum=60, maximum=86400),
    )
    act_on_prediction: bool = _key(
        False,
        "When a NUMA node is predicted to fragment within the horizon "
        "(assessment.prediction_*) and the node is idle (PSI memory some avg60 at most "
        "act_on_prediction_max_psi_some_avg60), compact that NUMA node only, through the "
        "normal remediation path (mode, window, cooldown, hourly cap, Lease slots, Events); "
        "once per prediction episode.",
    )
    act_on_prediction_max_psi_some_avg60: float = _key(
        5.0,
        "The node counts as idle for act_on_prediction at or below this memory PSI some avg60 "
        "(percent); a kernel without PSI is never idle.",
        Allowed(minimum=0, maximum=100),
    )


@dataclass(frozen=True)
class Config:
    assessment: AssessmentConfig = field(default_factory=AssessmentConfig)
    sources: SourcesConfig = field(default_factory=SourcesConfig)
    reporting: ReportingConfig = field(default_factory=ReportingConfig)
    remediation: RemediationConfig = field(default_factory=RemediationConfig)


@dataclass(frozen=True)
class AtLeast:
    """A rule between two keys, which a JSON schema cannot state: `key` must be >= `other`. The
    error names `key`, even when only `other` was set."""

    key: str
    other: str
    why: str = ""

    @property
    def reason(self) -> str:
        return f"must be >= {self.other}" + (f": {self.why}" if self.why else "")


CROSS_FIELD_RULES = (
    AtLeast("assessment.at_risk_below_blocks", "assessment.fragmented_below_blocks"),
    AtLeast("sources.pagetypeinfo_interval_seconds", "sources.poll_interval_seconds"),
    AtLeast(
        "remediation.lease_seconds",
        "remediation.action_timeout_seconds",
        "a slot that expires while its action still runs lets another node start one",
    ),
)


def sections() -> list[tuple[str, type[Any]]]:
    """(name, dataclass) of each section, in file order."""
    hints = typing.get_type_hints(Config)
    return [(f.name, hints[f.name]) for f in dataclasses.fields(Config)]


def keys() -> list[tuple[str, dataclasses.Field[Any], Any]]:
    """(key path, field, type hint) of every key, in file order."""
    out = []
    for name, cls in sections():
        hints = typing.get_type_hints(cls)
        out += [(f"{name}.{f.name}", f, hints[f.name]) for f in dataclasses.fields(cls)]
    return out


def allowed(f: dataclasses.Field[Any]) -> Allowed:
    result: Allowed = f.metadata["allowed"]
    return result


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


@functools.cache
def compiled(pattern: str) -> re.Pattern[str]:
    """A schema pattern as JSON Schema (ECMA-262) and helm's validator (Go) read it: searched
    anywhere, and `$` the end of the text, not also before a final newline as in Python (our
    patterns use `$` only as that anchor)."""
    return re.compile(re.sub(r"(?<!\\)\$", r"\\Z", pattern))


def _bounds_reason(a: Allowed, v: Number) -> str | None:
    lo, hi = a.minimum, a.maximum
    if lo is not None and hi is not None and not lo <= v <= hi:
        return f"must be between {lo} and {hi}"
    if lo is not None and hi is None and v < lo:
        return f"must be >= {lo}"
    if hi is not None and lo is None and v > hi:
        return f"must be <= {hi}"
    if a.exclusive_minimum is not None and not v > a.exclusive_minimum:
        return f"must be > {a.exclusive_minimum}"
    return None


def _text_reason(a: Allowed, v: str) -> str | None:
    short = a.min_length is not None and len(v) < a.min_length
    long = a.max_length is not None and len(v) > a.max_length
    unlike = not (short or long) and a.pattern is not None and not compiled(a.pattern).search(v)
    if (short or long or unlike) and a.invalid:
        return a.invalid.format(value=excerpt(v))
    if short:
        return (
            "must not be empty"
            if a.min_length == 1
            else f"must be at least {a.min_length} characters"
        )
    if long:
        return f"must be at most {a.max_length} characters, got {len(v)}"
    if unlike:
        return f"must match {a.pattern}, got {excerpt(v)}"
    if a.not_pattern is not None and compiled(a.not_pattern).search(v):
        return a.reserved
    return None


def refusal(a: Allowed, value: Any) -> str | None:
    """Why `value` (already of the key's type) is not allowed, or None."""
    if isinstance(value, str):
        reason = _text_reason(a, value)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        reason = _bounds_reason(a, value)
    else:
        reason = None
    if reason is None:
        for rule in a.rules:
            if not rule.ok(value):
                return rule.reason.format(value=excerpt(value))
    return reason


def value_at(cfg: Config, path: str) -> Any:
    section, key = path.split(".")
    return getattr(getattr(cfg, section), key)


def _check_ranges(cfg: Config, source: str) -> None:
    for path, f, _ in keys():
        reason = refusal(allowed(f), value_at(cfg, path))
        if reason is not None:
            raise ConfigError(source, path, reason)
    for rule in CROSS_FIELD_RULES:
        if not value_at(cfg, rule.key) >= value_at(cfg, rule.other):
            raise ConfigError(source, rule.key, rule.reason)


def config_from_mapping(data: Any, source: str = "<config>") -> Config:
    """Validate a parsed YAML document; None (an empty file) means all defaults."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(source, "", f"top level must be a mapping, got {type(data).__name__}")
    cfg: Config = _build(Config, data, "", source)
    _check_ranges(cfg, source)
    return cfg


def config_docs() -> list[tuple[str, str, str]]:
    """(key path, default, description) for every key: the README's table is made from this."""
    return [(path, repr(f.default), f.metadata["doc"]) for path, f, _ in keys()]
