"""The chart's own ServiceAccount and RBAC applied to a control plane, so an agent run outside
the chart gets exactly what the chart grants."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.chart_tools import CHART, HELM, TOOLS

KUBECTL = TOOLS / "kubectl"
NAMESPACE = "memfrag-system"


def apply_chart_rbac(
    kubeconfig: Path, release: str = "memfrag-agent", sets: tuple[str, ...] = ()
) -> None:
    """Apply the chart's own ServiceAccount and RBAC (with `--set` values): the agent gets
    exactly what the chart grants, no more."""
    rendered = subprocess.run(
        [
            str(HELM),
            "template",
            release,
            str(CHART),
            "--namespace",
            NAMESPACE,
            "--kube-version",
            "v1.35.4",
            "--show-only",
            "templates/serviceaccount.yaml",
            "--show-only",
            "templates/rbac.yaml",
            *(arg for s in sets for arg in ("--set", s)),
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    kubectl = [str(KUBECTL), "--kubeconfig", str(kubeconfig)]
    subprocess.run(
        [*kubectl, "create", "namespace", NAMESPACE], capture_output=True, text=True, check=False
    )
    subprocess.run(
        [*kubectl, "apply", "-f", "-"], input=rendered, check=True, capture_output=True, text=True
    )
