"""The chart's monitoring, checked with promtool (Debian's `prometheus` package, installed by
`make tools`): the rendered PrometheusRule passes `promtool check rules`; every alert has a
`promtool test rules` case where it fires and one where it does not
(tests/monitoring/alerts.test.yaml), a `for:`, a severity and a runbook page in the repository;
the monitors and rule knobs render as prometheus-operator reads them; the dashboard's queries
parse and filter by cluster, job and namespace; and a real agent's /metrics passes
`promtool check metrics`, its labelled counters at 0 from the start."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart_tools import CHART, HELM, REPO, by_kind, documents, render, run
from tests.cluster import ControlPlane
from tests.cluster.agentprocess import AgentProcess
from tests.cluster.fakehost import FakeHost

pytestmark = pytest.mark.integration

RUNBOOKS = REPO / "docs" / "runbooks"
UNIT_TESTS = REPO / "tests" / "monitoring" / "alerts.test.yaml"
DASHBOARD = CHART / "dashboards" / "memfrag.json"
SCHEMA = json.loads((CHART / "values.schema.json").read_text())
# Every alert the chart has: the names prometheusRule.disabled accepts.
ALERTS = SCHEMA["properties"]["prometheusRule"]["properties"]["disabled"]["items"]["enum"]
RULES_ON = "prometheusRule.enabled=true"
DURATION = re.compile(r"^([0-9]+[smhdwy])+$")


def promtool(*args: str | Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    path = shutil.which("promtool")
    assert path, "promtool is missing: `make tools` installs it (Debian package prometheus)"
    return subprocess.run(
        [path, *map(str, args)],
        check=False,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


def rules_of(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    (rule,) = by_kind(docs, "PrometheusRule")
    return [r for g in rule["spec"]["groups"] for r in g["rules"]]


def alerts_of(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["alert"]: r for r in rules_of(docs) if "alert" in r}


def write_rules(docs: list[dict[str, Any]], path: Path, description: bool = True) -> Path:
    """The PrometheusRule's groups as a Prometheus rule file."""
    (rule,) = by_kind(docs, "PrometheusRule")
    groups = rule["spec"]["groups"]
    if not description:
        for g in groups:
            for r in g["rules"]:
                r.get("annotations", {}).pop("description", None)
    path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False, width=1000))
    return path


# --- the rules -----------------------------------------------------------------------------------

RULE_VARIANTS = {
    "defaults": [],
    "monitoring": [CHART / "ci" / "monitoring-values.yaml"],
    "podmonitor": [CHART / "ci" / "podmonitor-values.yaml"],
}


@pytest.mark.parametrize("variant", RULE_VARIANTS)
def test_promtool_check_rules(variant: str, tmp_path: Path) -> None:
    docs = documents(render(RULE_VARIANTS[variant], sets=(RULES_ON,)))
    result = promtool("check", "rules", write_rules(docs, tmp_path / "rules.yaml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules_of(docs))} rules found" in result.stdout


def test_promtool_check_rules_can_fail(tmp_path: Path) -> None:
    """promtool parses the expressions and templates: a broken one is refused."""
    docs = documents(render(sets=(RULES_ON,)))
    (rule,) = by_kind(docs, "PrometheusRule")
    rule["spec"]["groups"][0]["rules"][0]["expr"] = "max by (node) (memfrag_condition_true"
    rule["spec"]["groups"][0]["rules"][1]["annotations"]["summary"] = "{{ $labels.node "
    result = promtool("check", "rules", write_rules(docs, tmp_path / "rules.yaml"))
    assert result.returncode != 0
    assert "unclosed left parenthesis" in result.stderr + result.stdout


def test_every_alert_fires_and_stays_quiet_in_promtool_unit_tests(tmp_path: Path) -> None:
    docs = documents(render(sets=(RULES_ON,)))
    write_rules(docs, tmp_path / "rules.yaml", description=False)
    shutil.copy(UNIT_TESTS, tmp_path / UNIT_TESTS.name)
    result = promtool("test", "rules", tmp_path / UNIT_TESTS.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
    # Each alert: an evaluation where it fires and one where it does not.
    fires: set[str] = set()
    quiet: set[str] = set()
    for case in yaml.safe_load(UNIT_TESTS.read_text())["tests"]:
        for check in case["alert_rule_test"]:
            (fires if check["exp_alerts"] else quiet).add(check["alertname"])
    assert set(alerts_of(docs)) == set(ALERTS)
    assert fires == quiet == set(ALERTS)


def test_the_unit_tests_fail_when_an_alert_changes(tmp_path: Path) -> None:
    """A rule that would not fire (a threshold moved) or a severity changed fails the tests."""
    docs = documents(render(sets=(RULES_ON,)))
    (rule,) = by_kind(docs, "PrometheusRule")
    for r in rule["spec"]["groups"][0]["rules"]:
        if r["alert"] == "MemfragPodsStuck":
            r["labels"]["severity"] = "warning"
        if r["alert"] == "MemfragRemediationFailing":
            r["expr"] = r["expr"].replace("> 0", "> 1")
    write_rules(docs, tmp_path / "rules.yaml", description=False)
    shutil.copy(UNIT_TESTS, tmp_path / UNIT_TESTS.name)
    result = promtool("test", "rules", tmp_path / UNIT_TESTS.name)
    assert result.returncode != 0
    failed = set(re.findall(r"alertname: (\w+)", result.stdout + result.stderr))
    assert failed == {"MemfragPodsStuck", "MemfragRemediationFailing"}


def test_alerts_have_for_severity_and_a_runbook() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())["prometheusRule"]
    alerts = alerts_of(documents(render(sets=(RULES_ON,))))
    pages = {p.stem for p in RUNBOOKS.glob("*.md")} - {"README"}
    assert pages == set(alerts) == set(ALERTS)
    index = (RUNBOOKS / "README.md").read_text()
    for name, rule in alerts.items():
        assert DURATION.match(rule["for"]), (name, rule["for"])
        severity = rule["labels"]["severity"]
        assert severity == ("critical" if name == "MemfragPodsStuck" else "warning"), name
        assert rule["annotations"]["runbook_url"] == f"{values['runbookBaseUrl']}/{name}.md"
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        page = (RUNBOOKS / f"{name}.md").read_text()
        assert page.startswith(f"# {name}\n"), name
        assert f"**Severity:** {severity}." in page, name
        for section in ("## What it means", "## What to check", "## What to do"):
            assert section in page, f"{name}.md has no {section!r}"
        assert f"| {name} | {severity} | [{name}.md]({name}.md) |" in index, name


def test_rule_knobs() -> None:
    def exprs(*sets: str, values: tuple[Path, ...] = ()) -> list[str]:
        docs = documents(render(values, sets=(RULES_ON, *sets)))
        return [r["expr"] for name, r in alerts_of(docs).items() if name in ALERTS]

    def selects(job: str, namespace: str, found: list[str]) -> bool:
        return all(f'job="{job}", namespace="{namespace}"' in e for e in found)

    # The job prometheus-operator gives: the Service's name, its jobLabel's value, the
    # PodMonitor's namespace/name or its pod label's value; or the one set by hand.
    assert selects("memfrag-agent", "memfrag-system", exprs())
    assert selects("scraped-by-hand", "memfrag-system", exprs("prometheusRule.job=scraped-by-hand"))
    assert selects("ops", "memfrag-system", exprs("serviceMonitor.enabled=true",
                   "serviceMonitor.jobLabel=team", "commonLabels.team=ops"))  # fmt: skip
    assert selects(
        "memfrag-system/memfrag-agent", "memfrag-system", exprs("podMonitor.enabled=true")
    )
    assert selects("mon/memfrag-agent", "memfrag-system",
                   exprs("podMonitor.enabled=true", "podMonitor.namespace=mon"))  # fmt: skip
    assert selects(
        "memfrag", "memfrag-system", exprs(values=(CHART / "ci" / "podmonitor-values.yaml",))
    )
    assert selects("memfrag-agent", "elsewhere", exprs("namespaceOverride=elsewhere"))
    result = run(
        [HELM, "template", "x", CHART, "--set", RULES_ON,
         "--set", "serviceMonitor.enabled=true", "--set", "serviceMonitor.jobLabel=nope"],
        check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "serviceMonitor.jobLabel nope is not a label of the Service" in result.stderr

    docs = documents(render([CHART / "ci" / "podmonitor-values.yaml"]))
    rules = rules_of(docs)
    extra = yaml.safe_load((CHART / "ci" / "podmonitor-values.yaml").read_text())
    assert rules[-2:] == extra["prometheusRule"]["additionalRules"]
    docs = documents(render(sets=(RULES_ON, "prometheusRule.disabled={MemfragAgentDown}",
                                  "prometheusRule.alertLabels.team=platform")))  # fmt: skip
    alerts = alerts_of(docs)
    assert set(alerts) == set(ALERTS) - {"MemfragAgentDown"}
    assert all(a["labels"]["team"] == "platform" for a in alerts.values())


# --- the monitors --------------------------------------------------------------------------------

NODE_RELABEL = {
    "sourceLabels": ["__meta_kubernetes_pod_node_name"],
    "targetLabel": "node",
    "action": "replace",
}


@pytest.mark.parametrize(
    ("variant", "kind", "endpoints"),
    [
        ("monitoring", "ServiceMonitor", "endpoints"),
        ("podmonitor", "PodMonitor", "podMetricsEndpoints"),
    ],
)
def test_monitors(variant: str, kind: str, endpoints: str) -> None:
    path = CHART / "ci" / f"{variant}-values.yaml"
    knobs = yaml.safe_load(path.read_text())[
        "serviceMonitor" if kind == "ServiceMonitor" else "podMonitor"
    ]
    docs = documents(render([path]))
    (monitor,) = by_kind(docs, kind)
    assert not by_kind(docs, "PodMonitor" if kind == "ServiceMonitor" else "ServiceMonitor")
    assert monitor["metadata"]["namespace"] == knobs["namespace"]
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["memfrag-system"]}
    assert monitor["spec"]["jobLabel"] == knobs["jobLabel"]
    (ds,) = by_kind(docs, "DaemonSet")
    assert monitor["spec"]["selector"]["matchLabels"] == ds["spec"]["selector"]["matchLabels"]
    (endpoint,) = monitor["spec"][endpoints]
    assert endpoint["port"] == "metrics" and endpoint["path"] == "/metrics"
    assert endpoint["relabelings"] == [NODE_RELABEL, *knobs["relabelings"]]
    assert endpoint["metricRelabelings"] == knobs["metricRelabelings"]
    if kind == "PodMonitor":
        pod_labels = ds["spec"]["template"]["metadata"]["labels"]
        assert knobs["jobLabel"] in pod_labels  # the job the alerts select exists
    else:
        (svc,) = by_kind(docs, "Service")
        assert knobs["jobLabel"] in svc["metadata"]["labels"]


def test_one_monitor_at_a_time() -> None:
    result = run(
        [HELM, "template", "x", CHART,
         "--set", "serviceMonitor.enabled=true", "--set", "podMonitor.enabled=true"],
        check=False,
    )  # fmt: skip
    assert result.returncode != 0 and "choose one" in result.stderr


# --- the dashboard -------------------------------------------------------------------------------

FILTERS = ('cluster=~"$cluster"', 'job=~"$job"', 'namespace=~"$namespace"', 'node=~"$node"')


def dashboard_queries() -> Iterator[tuple[str, str]]:
    board = json.loads(DASHBOARD.read_text())
    for panel in board["panels"]:
        for t in panel.get("targets", []):
            yield panel["title"], t["expr"]
    for a in board["annotations"]["list"]:
        yield f"annotation {a['name']}", a["expr"]


def test_dashboard_filters_and_annotations(tmp_path: Path) -> None:
    board = json.loads(DASHBOARD.read_text())
    variables = [v["name"] for v in board["templating"]["list"]]
    assert variables == ["datasource", "cluster", "job", "namespace", "node"]
    for v in board["templating"]["list"][1:]:
        assert v["includeAll"] and v["allValue"] == ".*", v["name"]  # a missing label matches
    annotations = {a["name"]: a for a in board["annotations"]["list"]}
    assert {"Remediations", "Taints", "Taints removed"} <= set(annotations)
    assert "memfrag_remediation_actions_total" in annotations["Remediations"]["expr"]
    assert "memfrag_tainted" in annotations["Taints"]["expr"]
    # Every metric a query reads is filtered by the four variables.
    for title, expr in dashboard_queries():
        selectors = re.findall(r"\bmemfrag_[a-z0-9_]+\{([^}]*)\}", expr)
        assert selectors and len(selectors) == len(re.findall(r"\bmemfrag_[a-z0-9_]+", expr)), title
        for s in selectors:
            assert all(f in s for f in FILTERS), (title, s)
    # ...and every query parses: promtool checks them as recording rules, variables filled in.
    substitutions = {"$__rate_interval": "5m", "$__interval": "1m", "$cluster": ".*",
                     "$job": ".*", "$namespace": ".*", "$node": ".*"}  # fmt: skip
    rules = []
    for i, (title, expr) in enumerate(dashboard_queries()):
        query = expr
        for k, v in substitutions.items():
            query = query.replace(k, v)
        assert "$" not in query, title
        rules.append({"record": f"dashboard:query_{i}", "expr": query})
    path = tmp_path / "dashboard-rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = promtool("check", "rules", path)
    assert result.returncode == 0, result.stdout + result.stderr


# --- a real agent's /metrics ---------------------------------------------------------------------


@pytest.fixture
def agent(
    control_plane: ControlPlane,
    agent_kubeconfig: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[AgentProcess]:
    monkeypatch.setenv("MEMFRAG_REVISION", "0123abcd")  # as the image sets it (Dockerfile)
    control_plane.register_node("metrics-node")
    a = AgentProcess(
        tmp_path / "agent", "metrics-node", agent_kubeconfig, FakeHost(tmp_path / "proc")
    )
    yield a.start()
    a.stop(signal.SIGKILL)


def test_a_real_agents_metrics_pass_promtool_check_metrics(agent: AgentProcess) -> None:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{agent.port}/metrics", timeout=5) as r:
        text = r.read().decode()
    result = promtool("check", "metrics", stdin=text)
    assert result.returncode == 0 and not result.stdout + result.stderr, (
        result.stdout + result.stderr
    )
    # ...which does complain about a badly named metric.
    bad = promtool(
        "check", "metrics", stdin="# HELP x_count a\n# TYPE x_count counter\nx_count 1\n"
    )
    assert bad.returncode != 0 and "_total" in bad.stdout + bad.stderr

    samples = agent.metrics()
    base = 'action="compact",result="failed"'
    assert samples[f"memfrag_remediation_actions_total{{{base}}}"] == 0
    assert (
        samples['memfrag_kernel_log_findings_total{kind="page_allocation_failure",order="4"}'] == 0
    )
    assert samples['memfrag_api_errors_total{operation="taint"}'] == 0
    assert samples['memfrag_config_reloads_total{result="invalid"}'] == 0
    assert samples["process_resident_memory_bytes"] > 0
    assert any(k.startswith("python_info{") for k in samples)
    assert any(k.startswith("python_gc_collections_total{") for k in samples)
    (build,) = [k for k in samples if k.startswith("memfrag_build_info{")]
    assert 'revision="0123abcd"' in build
