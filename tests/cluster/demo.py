"""`make demo`: the agent against a real local control plane and this machine's real /proc and
/dev/kmsg, start to finish, then everything it started is stopped.

This machine is not fragmented, so after the first (honest, healthy) assessment the demo raises
`assessment.fragmented_below_blocks` through the hot-reloaded config above what this machine
has: the real /proc then reads as fragmented. It says so when it does it, and puts the real
threshold back to show the recovery. The kernel-log line of the seed incident is written into
/dev/kmsg only with --inject-kmsg (it needs root; the agent accepts user-facility lines only
because the demo's config says so).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

from agent.kube import Kube
from tests.cluster.plane import ControlPlane, ControlPlaneError
from tests.integration.harness import (
    AGENT,
    KUBECTL,
    NAMESPACE,
    AgentProcess,
    FakeHost,
    apply_chart_rbac,
    wait_for,
)

SEED_LINE = "<4>mysqld: page allocation failure. order:4, mode:0x10c0d0\n"


class RealHost(FakeHost):
    """This machine's real /proc in the FakeHost's place: never written to."""

    def __init__(self) -> None:
        self.root = Path("/proc")

    def _put(self, fixture: str) -> None:
        raise RuntimeError("the demo never writes to the real /proc")


def say(text: str) -> None:
    print(f"\n\033[1m==> {text}\033[0m", flush=True)


def describe(kubeconfig: Path, node: str) -> None:
    out = subprocess.run(
        [str(KUBECTL), "--kubeconfig", str(kubeconfig), "describe", "node", node],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    keep, show = [], False
    for line in out.splitlines():
        if line.startswith(("Taints:", "Conditions:", "Events:")):
            show = True
        elif line and not line.startswith(" ") and show:
            show = line.startswith(("Taints:", "Conditions:", "Events:"))
        if show or line.startswith("Taints:"):
            keep.append(line)
    print("\n".join(keep), flush=True)


def condition(admin: Kube, node: str) -> dict[str, str]:
    for c in admin.request("GET", f"/api/v1/nodes/{node}")["status"].get("conditions") or []:
        if c["type"] == "MemoryFragmented":
            return {k: str(v) for k, v in c.items()}
    return {}


def tainted(admin: Kube, node: str) -> bool:
    taints = admin.request("GET", f"/api/v1/nodes/{node}")["spec"].get("taints") or []
    return any(t["key"] == "memfrag.dev/fragmented" for t in taints)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="make demo", description=__doc__)
    p.add_argument(
        "--inject-kmsg",
        action="store_true",
        help="write the seed incident's kernel-log line into /dev/kmsg (root)",
    )
    p.add_argument("--dir", type=Path, default=Path("out/demo"))
    args = p.parse_args(argv)
    workdir = args.dir.resolve()
    shutil.rmtree(workdir, ignore_errors=True)  # a fresh etcd each run: no state from the last
    workdir.mkdir(parents=True)
    node = socket.gethostname().lower()

    say("memfrag-agent check on this machine's real /proc")
    check = subprocess.run([str(AGENT), "check"], capture_output=True, text=True, check=False)
    print(check.stdout, end="")
    real = json.loads(
        subprocess.run(
            [str(AGENT), "check", "--output", "json"], capture_output=True, text=True, check=False
        ).stdout
    )
    blocks = min(n["blocks_at_order"] for n in real["numa_nodes"])

    say("starting a local control plane (etcd, kube-apiserver, kube-scheduler) from .tools/bin")
    try:
        plane = ControlPlane(workdir / "plane").start()
    except ControlPlaneError as exc:
        print(f"make demo: {exc}", file=sys.stderr)
        return 1
    agent: AgentProcess | None = None
    try:
        plane.start_scheduler()
        say(f"registering this machine as Node {node!r}; applying the chart's RBAC")
        plane.register_node(node)
        apply_chart_rbac(plane.kubeconfig)
        sa = plane.service_account_kubeconfig(NAMESPACE, "memfrag-agent", workdir / "agent.kc")
        admin = Kube.from_environment(str(plane.kubeconfig))

        say("running `memfrag-agent run` as the chart's ServiceAccount on the real /proc")
        agent = AgentProcess(
            workdir / "agent",
            node,
            sa,
            RealHost(),
            {
                "sources": {
                    "poll_interval_seconds": 3,
                    "pagetypeinfo_interval_seconds": 30,
                    "kmsg_path": "/dev/kmsg",
                    "accept_user_facility": args.inject_kmsg,
                },
                "reporting": {
                    "fragmented_for_seconds": 5,
                    "healthy_for_seconds": 10,
                    "max_tainted_percent": 100,
                },
                "remediation": {"mode": "dry-run"},
            },
        )
        agent.start()
        wait_for(lambda: condition(admin, node).get("status") == "False", "the first report")
        describe(plane.kubeconfig, node)

        if args.inject_kmsg:
            say(
                "writing the seed incident's line into /dev/kmsg (as root; user facility): "
                + SEED_LINE.strip()[3:]
            )
            with open("/dev/kmsg", "w") as kmsg:
                kmsg.write(SEED_LINE)
            wait_for(
                lambda: (
                    agent is not None
                    and agent.metrics().get(
                        'memfrag_kernel_log_findings_total{kind="page_allocation_failure",order="4"}'
                    )
                ),
                "the agent to read it",
            )
            print(
                "the agent read it and assessed at once; the memory itself is healthy, so the "
                "condition stays False and an Event records the failure"
            )
        else:
            say("skipping the /dev/kmsg line (run with --inject-kmsg to write it)")

        say(
            f"SIMULATING fragmentation: this machine has {blocks} free order-4 blocks; raising "
            f"assessment.fragmented_below_blocks to {blocks * 2 + 1} via the hot-reloaded config"
        )
        agent.config.setdefault("assessment", {}).update(
            {"fragmented_below_blocks": blocks * 2 + 1, "at_risk_below_blocks": blocks * 2 + 1}
        )
        agent.write_config()
        wait_for(lambda: tainted(admin, node), "the condition and, after 5 s, the taint", 60)
        describe(plane.kubeconfig, node)

        say("restoring the real thresholds: recovery clears the taint after 10 s healthy")
        agent.config["assessment"] = {}
        agent.write_config()
        wait_for(lambda: not tainted(admin, node), "the taint to clear", 60)
        describe(plane.kubeconfig, node)
        say("metrics (excerpt) from the agent's /metrics")
        for k, v in sorted(agent.metrics().items()):
            if k.startswith(
                (
                    "memfrag_verdict",
                    "memfrag_kernel_log",
                    "memfrag_condition",
                    "memfrag_tainted",
                    "memfrag_remediation_actions",
                )
            ):
                print(f"  {k} {v:g}")
        say("done: stopping the agent and the control plane")
        return 0
    finally:
        if agent is not None:
            agent.stop(signal.SIGTERM)
        plane.stop()
        print(f"logs kept in {workdir}", flush=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
