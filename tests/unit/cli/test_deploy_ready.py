"""The readiness gate's examples in deploy/: what they run is a valid `ready` command, and only
the one that prepares is privileged."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from agent.cli.main import build_parser
from agent.config.model import ReportingConfig

DEPLOY = Path(__file__).resolve().parents[3] / "deploy"


def _containers(path: Path, key: str) -> list[dict[str, Any]]:
    doc = yaml.safe_load(path.read_text())
    spec = doc["spec"]["template"]["spec"] if doc["kind"] == "Job" else doc["spec"]
    return list(spec[key])


def test_init_container_gates_without_privilege() -> None:
    (init,) = _containers(DEPLOY / "ready-initcontainer.yaml", "initContainers")
    args = build_parser().parse_args(init["args"])
    assert (args.command, args.order, args.blocks, args.prepare) == ("ready", 9, 512, False)
    sc = init["securityContext"]
    assert "privileged" not in sc and sc["allowPrivilegeEscalation"] is False


def test_job_prepares_privileged_and_tolerates_the_agents_taint() -> None:
    (job,) = _containers(DEPLOY / "ready-job.yaml", "containers")
    args = build_parser().parse_args(job["args"])
    assert (args.command, args.prepare) == ("ready", True)
    assert job["securityContext"] == {"privileged": True}
    spec = yaml.safe_load((DEPLOY / "ready-job.yaml").read_text())["spec"]["template"]["spec"]
    assert {t["key"] for t in spec["tolerations"]} == {ReportingConfig().taint_key}
