"""The import-linter contracts in pyproject.toml can fail: each one is broken by one planted
import in a copy of the tree, and all of them hold on the real tree (a contract that names a
module wrongly, or that import-linter cannot see, would pass silently)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
CONTRACTS: dict[str, str] = {
    c["id"]: c["name"]
    for c in tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"][
        "contracts"
    ]
}

# contract id -> (file in the copy, the one import planted at its end)
VIOLATIONS: dict[str, tuple[str, str]] = {
    "rooms": ("agent/base/errors.py", "import agent.config.model"),
    "kubernetes": ("agent/kube/informer.py", "import kubernetes"),
    "pure": ("agent/decide/report.py", "import threading"),
    "harness": ("tests/cluster/waiting.py", "import tests.integration.harness"),
}
# More ways the same contracts must fail, each in its own copy. A planted import breaks only
# its own contract: an upward one that also reached a thread would break two.
MORE: list[tuple[str, str, str]] = [
    ("rooms", "agent/config/model.py", "import agent.kernel.numbers"),  # kernel | config
    ("rooms", "agent/kernel/limits.py", "import agent.config.model"),
    ("rooms", "agent/assess/pods.py", "import agent.decide.ladder"),
    ("rooms", "agent/daemon/metrics.py", "import agent.cli.render"),
    ("pure", "agent/kernel/buddyinfo.py", "import agent.kernel.writes"),
    ("pure", "agent/assess/indices.py", "import urllib.request"),
    ("pure", "agent/kernel/kmsg.py", "import subprocess"),
    ("harness", "bench/sim.py", "from tests.integration.harness import Clock"),
]
CASES = [(cid, path, line) for cid, (path, line) in VIOLATIONS.items()] + MORE


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """`lint-imports` with the project's contracts over the tree at `root` (found first on the
    path: the working directory, then PYTHONPATH)."""
    env = dict(os.environ, PYTHONPATH=str(root))
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--config", str(REPO / "pyproject.toml")],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def verdicts(out: str) -> dict[str, str]:
    """contract name -> KEPT or BROKEN, from lint-imports' summary (names may wrap)."""
    flat = " ".join(out.split())
    found = {}
    for name in CONTRACTS.values():
        for verdict in ("KEPT", "BROKEN"):
            if f"{name} {verdict}" in flat:
                found[name] = verdict
    return found


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Python sources of the root packages, copied (no fixtures, caches or tools)."""
    root = tmp_path_factory.mktemp("tree")
    ignore = shutil.ignore_patterns("__pycache__", "fixtures", "*.pyc")
    for top in ("agent", "bench", "tests"):
        shutil.copytree(REPO / top, root / top, ignore=ignore)
    return root


def test_every_contract_has_a_violation() -> None:
    assert set(VIOLATIONS) == set(CONTRACTS)


def test_the_real_tree_keeps_every_contract() -> None:
    result = lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert verdicts(result.stdout) == dict.fromkeys(CONTRACTS.values(), "KEPT")


def test_the_copy_keeps_every_contract(pristine: Path) -> None:
    """The copy alone is clean, so each failure below is its planted import's."""
    result = lint_imports(pristine)
    assert result.returncode == 0, result.stdout + result.stderr
    assert verdicts(result.stdout) == dict.fromkeys(CONTRACTS.values(), "KEPT")


@pytest.mark.parametrize(("contract", "path", "line"), CASES, ids=[f"{c[0]}:{c[1]}" for c in CASES])
def test_one_planted_import_breaks_its_contract(
    pristine: Path, tmp_path: Path, contract: str, path: str, line: str
) -> None:
    root = tmp_path / "tree"
    shutil.copytree(pristine, root)
    with (root / path).open("a") as fh:
        fh.write(f"\n{line}  # planted by the test\n")
    result = lint_imports(root)
    assert result.returncode != 0, result.stdout
    expected = dict.fromkeys(CONTRACTS.values(), "KEPT") | {CONTRACTS[contract]: "BROKEN"}
    assert verdicts(result.stdout) == expected, result.stdout
    module = path.removesuffix(".py").replace("/", ".")
    assert module in result.stdout, result.stdout
