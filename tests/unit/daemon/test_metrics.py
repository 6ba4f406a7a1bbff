"""The agent's registry as Prometheus first sees it: every labelled counter already at 0 for each
label value the agent can give it (so the first failure is an increase), process_* and python_*
beside memfrag_*, and the build's revision."""

from __future__ import annotations

import pytest
from prometheus_client import generate_latest

from agent.daemon.metrics import Metrics
from agent.kernel.kmsg import KINDS


def samples(m: Metrics) -> dict[str, float]:
    out = {}
    for line in generate_latest(m.registry).decode().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def test_labelled_counters_start_at_zero_for_every_known_label_value() -> None:
    s = samples(Metrics(numa_nodes=(0, 1)))
    actions = ["compact", "compact-node=0", "compact-node=1", "drop-caches=1", "drop-caches=2"]
    for action in actions:
        for result in ("ok", "no_effect", "failed", "timeout", "dry_run", "skipped"):
            key = f'memfrag_remediation_actions_total{{action="{action}",result="{result}"}}'
            assert s[key] == 0, key
    for kind in KINDS:
        for order in [*map(str, range(16)), "unknown"]:
            assert s[f'memfrag_kernel_log_findings_total{{kind="{kind}",order="{order}"}}'] == 0
    for op in ("condition", "event", "lease", "pod-delete", "taint"):
        assert s[f'memfrag_api_errors_total{{operation="{op}"}}'] == 0
    for result in ("ok", "invalid"):
        assert s[f'memfrag_config_reloads_total{{result="{result}"}}'] == 0
    # Without NUMA nodes named, no per-node compaction series: only what the agent can report.
    assert not [k for k in samples(Metrics()) if "compact-node" in k]


def test_a_first_failure_is_an_increase_of_an_existing_series() -> None:
    m = Metrics()
    key = 'memfrag_remediation_actions_total{action="compact",result="failed"}'
    before = samples(m)[key]
    m.actions.labels("compact", "failed").inc()
    assert (before, samples(m)[key]) == (0, 1)


def test_process_and_python_metrics_are_in_the_agents_registry() -> None:
    s = samples(Metrics())
    assert s["process_resident_memory_bytes"] > 0
    assert s["process_open_fds"] > 0
    assert any(k.startswith("python_info{") for k in s)
    assert any(k.startswith('python_gc_collections_total{generation="0"}') for k in s)


@pytest.mark.parametrize(("env", "revision"), [("4f2c1e0", "4f2c1e0"), ("", "unknown")])
def test_build_info_carries_the_revision(
    monkeypatch: pytest.MonkeyPatch, env: str, revision: str
) -> None:
    monkeypatch.setenv("MEMFRAG_REVISION", env)
    (build,) = [k for k in samples(Metrics()) if k.startswith("memfrag_build_info{")]
    assert f'revision="{revision}"' in build
