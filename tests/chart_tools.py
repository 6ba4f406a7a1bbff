"""Helpers for the chart, manifest and image tests: helm and kubeconform runs, kubeconform schemas
made offline from a live kube-apiserver's OpenAPI, Kubernetes toleration matching, and a
stand-in kubelet that "runs" a hook pod. (The image's pinned dependencies: tests/image_lock.py.)
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from agent.kube.client import SMP, ApiError, Kube

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "charts" / "memfrag-agent"
TOOLS = REPO / ".tools" / "bin"
HELM = TOOLS / "helm"
KUBECONFORM = TOOLS / "kubeconform"
DEPLOY_MANIFEST = REPO / "deploy" / "memfrag-agent.yaml"
GENERATE_SH = REPO / "deploy" / "generate.sh"
DOCKERFILE = REPO / "Dockerfile"
AGENT_BIN = Path(sys.executable).parent / "memfrag-agent"

VAP_API = "admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy"
# The cluster an offline render assumes: helm's own default depends on how it was built (this
# one says v1.20) and lists API groups but no kinds, so capability checks need both flags.
CLUSTER_CAPABILITIES = ("--kube-version", "1.35.4", "--api-versions", VAP_API)


def run(
    argv: Sequence[str | Path], check: bool = True, **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    """Run a tool; on failure the assertion shows its command line and output."""
    result = subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, check=False, **kwargs
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(str(a) for a in argv)} exited {result.returncode}\n"
            f"stdout:\n{result.stdout[-4000:]}\nstderr:\n{result.stderr[-4000:]}"
        )
    return result


def helm(*args: str | Path, check: bool = True, kubeconfig: Path | None = None) -> str:
    env = dict(os.environ)
    if kubeconfig is not None:
        env["KUBECONFIG"] = str(kubeconfig)
    return run([HELM, *args], check=check, env=env).stdout


def render(
    values: Iterable[Path] = (),
    sets: Iterable[str] = (),
    release: str = "memfrag-agent",
    namespace: str = "memfrag-system",
    capabilities: Sequence[str] = CLUSTER_CAPABILITIES,
) -> str:
    """`helm template` of the chart (hooks and tests included, as `helm install` creates them)."""
    args: list[str | Path] = ["template", release, CHART, "--namespace", namespace, *capabilities]
    for v in values:
        args += ["--values", v]
    for s in sets:
        args += ["--set", s]
    return helm(*args)


def documents(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def exists(kube: Kube, path: str) -> bool:
    """Whether the API server has the object at `path` (404: no)."""
    try:
        kube.request("GET", path)
    except ApiError as exc:
        if exc.status == 404:
            return False
        raise
    return True


def by_kind(docs: Iterable[Mapping[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [dict(d) for d in docs if d.get("kind") == kind]


# --- kubeconform schemas from the API server's OpenAPI v2 ----------------------------------------

_QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"
_REF = "#/definitions/"


def kind_suffix(api_version: str) -> str:
    """kubeconform's {{ .KindSuffix }}: -<first label of the group>-<version>, or -<version>."""
    group, _, version = api_version.rpartition("/")
    return f"-{group.split('.')[0].lower()}-{version.lower()}" if group else f"-{version.lower()}"


def _strict(node: Any) -> Any:
    """kubectl's validation rules as JSON Schema: objects with properties reject unknown fields,
    int-or-string accepts both. Unlike upstream's schemas, null is not accepted for optional
    fields: a null in a rendered chart is a templating slip (a value that rendered empty)."""
    if isinstance(node, list):
        return [_strict(n) for n in node]
    if not isinstance(node, dict):
        return node
    if node.get("format") == "int-or-string":
        return {"oneOf": [{"type": "string"}, {"type": "integer"}]}
    out = {k: _strict(v) for k, v in node.items()}
    if "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False
    return out


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(_REF):
            yield ref[len(_REF) :]
        for v in node.values():
            yield from _refs(v)
    elif isinstance(node, list):
        for v in node:
            yield from _refs(v)


def kubeconform_schemas(openapi: Mapping[str, Any], out_dir: Path) -> dict[str, Path]:
    """Write one standalone, strict JSON schema per API kind into `out_dir`, named like
    kubeconform's `{{ .ResourceKind }}{{ .KindSuffix }}.json` (deployment-apps-v1.json).

    Standalone: each file carries the definitions it uses (draft-04 `definitions`, referenced
    as before), so recursive types stay finite. Strict: see _strict; `kind` and `apiVersion`
    are required and must be the file's own. Returns {"apps/v1/DaemonSet": path, ...}.
    """
    definitions: dict[str, Any] = {
        name: (
            {"oneOf": [{"type": "string"}, {"type": "number"}]}
            if name == _QUANTITY
            else _strict(copy.deepcopy(d))
        )
        for name, d in openapi["definitions"].items()
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for name, original in openapi["definitions"].items():
        gvks = original.get("x-kubernetes-group-version-kind") or []
        if len(gvks) != 1 or "properties" not in original:
            continue  # DeleteOptions, WatchEvent...: shared by every group, never a manifest
        group, version, kind = gvks[0]["group"], gvks[0]["version"], gvks[0]["kind"]
        api_version = f"{group}/{version}" if group else version
        schema = copy.deepcopy(definitions[name])
        schema["properties"]["apiVersion"] = {"type": "string", "enum": [api_version]}
        schema["properties"]["kind"] = {"type": "string", "enum": [kind]}
        schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind"})
        used: dict[str, Any] = {}
        todo = list(_refs(schema))
        while todo:
            ref = todo.pop()
            if ref not in used:
                used[ref] = definitions[ref]
                todo.extend(_refs(used[ref]))
        schema["definitions"] = dict(sorted(used.items()))
        schema["$schema"] = "http://json-schema.org/draft-04/schema#"
        path = out_dir / f"{kind.lower()}{kind_suffix(api_version)}.json"
        key = f"{api_version}/{kind}"
        if path in written.values():
            raise ValueError(f"two kinds map to {path.name}; kubeconform could not tell them apart")
        path.write_text(json.dumps(schema, indent=1, sort_keys=True))
        written[key] = path
    return written


def kubeconform(
    manifests: Sequence[Path], schema_dir: Path, skip_kinds: Sequence[str]
) -> list[dict[str, Any]]:
    """kubeconform -strict over `manifests` with only the local schemas; one result per resource
    (its status: statusValid, statusInvalid, statusError or statusSkipped)."""
    result = run(
        [
            KUBECONFORM,
            "-strict",
            "-summary",
            "-verbose",
            "-output",
            "json",
            "-schema-location",
            f"{schema_dir}/{{{{ .ResourceKind }}}}{{{{ .KindSuffix }}}}.json",
            "-skip",
            ",".join(skip_kinds),
            *manifests,
        ],
        check=False,
    )
    report = json.loads(result.stdout)
    resources: list[dict[str, Any]] = report["resources"] or []
    return resources


# --- tolerations -------------------------------------------------------------------------------


def tolerates(tolerations: Iterable[Mapping[str, Any]], taint: Mapping[str, str]) -> bool:
    """Whether a pod with `tolerations` tolerates `taint`, by the rules of
    k8s.io/api/core/v1.Toleration.ToleratesTaint."""
    for t in tolerations:
        effect = t.get("effect") or ""
        if effect and effect != taint["effect"]:
            continue
        key = t.get("key") or ""
        operator = t.get("operator") or "Equal"
        if key and key != taint["key"]:
            continue
        if not key and operator != "Exists":
            continue
        if operator == "Exists" or (t.get("value") or "") == taint.get("value", ""):
            return True
    return False


# --- the agent's metrics -----------------------------------------------------------------------


def exported_metric_names() -> set[str]:
    """Every sample name the agent's registry can expose (counters as _total, info as _info,
    histograms as _bucket/_sum/_count), labelled or not."""
    from agent.daemon.metrics import Metrics

    names: set[str] = set()
    for family in Metrics().registry.collect():
        suffixes = {
            "counter": ("_total",),
            "info": ("_info",),
            "histogram": ("_bucket", "_sum", "_count"),
        }.get(family.type, ("",))
        names.update(family.name + s for s in suffixes)
    return names


def metric_names_in(text: str) -> set[str]:
    return set(re.findall(r"\bmemfrag_[a-z0-9_]+\b", text))


# --- a stand-in kubelet ------------------------------------------------------------------------


def _env_for(container: Mapping[str, Any], pod: Mapping[str, Any]) -> dict[str, str]:
    fields = {
        "metadata.namespace": pod["metadata"]["namespace"],
        "metadata.name": pod["metadata"]["name"],
        "spec.nodeName": pod["spec"].get("nodeName", ""),
        "spec.serviceAccountName": pod["spec"].get("serviceAccountName", ""),
    }
    env: dict[str, str] = {}
    for e in container.get("env") or []:
        if "value" in e:
            env[e["name"]] = e["value"]
        else:
            env[e["name"]] = fields[e["valueFrom"]["fieldRef"]["fieldPath"]]
    return env


def run_pod_here(
    pod: Mapping[str, Any],
    kubeconfig: Path,
    entrypoint: Sequence[str],
    workdir: Path,
) -> list[tuple[str, subprocess.CompletedProcess[str]]]:
    """Do what a kubelet would with `pod` (a dict as the API returns it): run its init containers,
    then its containers, in order, here, with the pod's environment and `kubeconfig` (a token
    bound to this pod) instead of the in-cluster credentials. The image's commands map to this
    venv: `memfrag-agent` (the image's ENTRYPOINT) and `python`. Stops at the first failure."""
    programs = {"memfrag-agent": str(AGENT_BIN), "python": sys.executable}
    results = []
    for c in [*(pod["spec"].get("initContainers") or []), *pod["spec"]["containers"]]:
        argv = [*(c.get("command") or entrypoint), *(c.get("args") or [])]
        argv[0] = programs[argv[0]]
        env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(workdir),
            "KUBECONFIG": str(kubeconfig),
            **_env_for(c, pod),
        }
        result = subprocess.run(
            argv, capture_output=True, text=True, env=env, cwd=workdir, check=False, timeout=120
        )
        results.append((c["name"], result))
        if result.returncode != 0:
            break
    return results


def report_pod_finished(kube: Kube, pod: Mapping[str, Any], exit_codes: Mapping[str, int]) -> None:
    """Write the status a kubelet writes when the pod's containers have exited."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def status(c: Mapping[str, Any]) -> dict[str, Any]:
        code = exit_codes.get(c["name"], 1)
        return {
            "name": c["name"],
            "image": c["image"],
            "imageID": "",
            "ready": False,
            "restartCount": 0,
            "started": False,
            "state": {
                "terminated": {
                    "exitCode": code,
                    "reason": "Completed" if code == 0 else "Error",
                    "startedAt": now,
                    "finishedAt": now,
                }
            },
        }

    spec = pod["spec"]
    ok = all(exit_codes.get(c["name"], 1) == 0 for c in spec["containers"])
    body = {
        "status": {
            "phase": "Succeeded" if ok else "Failed",
            "startTime": now,
            "initContainerStatuses": [status(c) for c in spec.get("initContainers") or []],
            "containerStatuses": [status(c) for c in spec["containers"]],
        }
    }
    meta = pod["metadata"]
    kube.request(
        "PATCH",
        f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/status",
        body=body,
        content_type=SMP,
    )


class PodReaper:
    """The other half of a kubelet's job: a pod being deleted (deletionTimestamp set) is gone for
    good once its containers stopped, which here is at once. Without it a bound pod, whose
    graceful deletion waits for its kubelet, would stay Terminating forever."""

    def __init__(self, kube: Kube, namespace: str) -> None:
        self.kube, self.path = kube, f"/api/v1/namespaces/{namespace}/pods"
        self.reaped: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="pod-reaper", daemon=True)

    def __enter__(self) -> PodReaper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _loop(self) -> None:
        while not self._stop.wait(0.2):
            try:
                for p in self.kube.request("GET", self.path)["items"]:
                    if p["metadata"].get("deletionTimestamp"):
                        name = p["metadata"]["name"]
                        self.kube.request(
                            "DELETE", f"{self.path}/{name}", body={"gracePeriodSeconds": 0}
                        )
                        self.reaped.append(name)
            except ApiError:
                continue  # gone meanwhile: look again


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    logical = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not logical and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            logical += line[:-1] + " "
            continue
        logical += line
        word, _, rest = logical.partition(" ")
        out.append((word.upper(), rest.strip()))
        logical = ""
    return out
