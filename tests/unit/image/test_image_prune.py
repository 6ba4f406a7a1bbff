"""deploy/image_prune.py: what the image leaves out is never imported, and nothing else goes."""

from __future__ import annotations

import importlib.metadata
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from deploy.image_prune import (
    LEFT_OUT,
    PROBE,
    PruneError,
    left_out,
    main,
    prune,
    unexpected_pip_check,
)
from tests.image_lock import norm, runtime_closure

KEPT = [
    "kubernetes/__init__.py",
    "kubernetes/client/__init__.py",
    "kubernetes/client/api_client.py",
    "kubernetes/client/models/__init__.py",
    "kubernetes/config/kube_config.py",
    "kubernetes/dynamic/client.py",
    "pydantic/main.py",
]
GONE = [
    "kubernetes/aio/__init__.py",
    "kubernetes/aio/client/api/core_v1_api.py",
    "kubernetes/client/api/__init__.py",
    "kubernetes/client/api/core_v1_api.py",
    "kubernetes/client/models/v1_pod.py",
    "kubernetes/config/kube_config_test.py",
    "kubernetes/leaderelection/resourcelock/leaselock_test.py",
    "kubernetes/dynamic/test_client.py",
]


def test_rules_keep_what_the_client_needs() -> None:
    assert [p for p in KEPT if left_out(p)] == []
    assert [p for p in GONE if not left_out(p)] == []


def _tree(root: Path, paths: list[str]) -> None:
    for rel in paths:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("x = 1\n")


def test_prune_deletes_only_the_rules_files(tmp_path: Path) -> None:
    _tree(tmp_path, KEPT + GONE)
    removed = prune(tmp_path)
    assert set(removed) == {pattern for pattern, _ in LEFT_OUT} and all(removed.values())
    left = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert left == sorted(KEPT)
    assert not (tmp_path / "kubernetes" / "aio").exists(), "emptied directories go too"


def test_prune_fails_when_a_rule_matches_nothing(tmp_path: Path) -> None:
    _tree(tmp_path, [p for p in KEPT + GONE if not p.startswith("kubernetes/aio/")])
    with pytest.raises(PruneError, match=r"nothing matches \['kubernetes/aio/\.\*'\]"):
        prune(tmp_path)


def test_pip_check_may_only_miss_the_uninstalled_requirements() -> None:
    expected = (
        "kubernetes 37.0.2 requires aiohttp, which is not installed.\n"
        "kubernetes 37.0.2 requires aiohttp-retry, which is not installed.\n"
    )
    assert unexpected_pip_check(expected) == []
    assert unexpected_pip_check("No broken requirements found.\n") == []
    other = [
        "kubernetes 37.0.2 requires pydantic, which is not installed.",
        "requests 2.34.2 has requirement urllib3<3, but you have urllib3 3.0.",
    ]
    assert unexpected_pip_check(expected + "\n".join(other)) == other


def test_main_names_a_venv_without_site_packages(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([str(tmp_path)]) == 1
    assert f"{tmp_path}: expected one lib/python3*/site-packages" in capsys.readouterr().err
    assert main([]) == 2


def test_the_agent_imports_nothing_the_image_leaves_out() -> None:
    """PROBE in a fresh interpreter of this venv (unpruned): nothing it loads is left out."""
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True
    ).stdout
    files: dict[str, str] = json.loads(out.splitlines()[-1])
    site = Path(str(importlib.metadata.distribution("kubernetes").locate_file("")))
    loaded = {
        Path(f).resolve().relative_to(site.resolve()).as_posix()
        for f in files.values()
        if Path(f).resolve().is_relative_to(site.resolve())
    }
    assert "kubernetes/client/rest.py" in loaded, "the probe did load the client"
    assert sorted(p for p in loaded if left_out(p)) == []
    left_out_dists = set(runtime_closure(cut=())) - set(runtime_closure())
    tops = importlib.metadata.packages_distributions()
    left_out_modules = {t for t, dists in tops.items() if left_out_dists & {norm(d) for d in dists}}
    assert "aiohttp" in left_out_modules and "yarl" in left_out_modules
    assert sorted({n.split(".")[0] for n in files} & left_out_modules) == []


def test_the_charts_own_scripts_use_the_agents_client() -> None:
    """Python the chart runs in the image (the cleanup hook's stop-agents) may not reach for
    the generated client either: it uses agent.kube.client, the one importer of kubernetes."""
    repo = Path(__file__).resolve().parents[3]
    found = [
        f"{path.relative_to(repo)}:{n}"
        for top in ("charts", "deploy")
        for path in sorted((repo / top).rglob("*.yaml"))
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if re.match(r"\s*(from kubernetes\b|import kubernetes\b)", line)
    ]
    assert found == []
    hook = (repo / "charts/memfrag-agent/templates/cleanup-hook.yaml").read_text()
    assert "from agent.kube.client import ApiError, Kube" in hook
