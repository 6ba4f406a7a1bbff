"""`make demo`: the agent as users run it, `helm install` onto a real node, start to finish.

This machine becomes a one-node cluster (the local control plane, kubelet, containerd, kube-proxy:
tests.cluster.realcluster), the image is built from the Dockerfile (buildah, cached), and the
chart is installed into kube-system. The agent in its pod reads this machine's real /proc and
/dev/kmsg. This machine is not fragmented, so after the first (honest, healthy) report the demo
raises `assessment.fragmented_below_blocks` through the hot-reloaded ConfigMap (`helm upgrade`)
above what this machine has: the real /proc then reads as fragmented. It says so when it does it,
and puts the real threshold back to show the recovery. With --inject-kmsg the seed incident's
kernel-log line is written into /dev/kmsg (the agent accepts user-facility lines only because
the demo's values say so). `helm uninstall` then runs the cleanup hook, and everything stops.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.chart_tools import AGENT_BIN
from tests.cluster.image import AGENT_REF, ImageBuildError, build_agent_image, build_pause_image
from tests.cluster.node import node_unavailable_reason
from tests.cluster.plane import ControlPlaneError
from tests.cluster.realcluster import NodeCluster
from tests.cluster.scrape import scrape
from tests.cluster.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "memfrag-agent"
NAMESPACE = "kube-system"
RELEASE = "memfrag-agent"
SEED_LINE = "<4>mysqld: page allocation failure. order:4, mode:0x10c0d0\n"
TAINT = "memfrag.dev/fragmented"


def say(text: str) -> None:
    print(f"\n\033[1m==> {text}\033[0m", flush=True)


def show(cluster: NodeCluster, *args: str) -> None:
    print(f"$ kubectl {' '.join(args)}", flush=True)
    print(cluster.kubectl(*args), end="", flush=True)


def describe(cluster: NodeCluster) -> None:
    """The parts of `kubectl describe node` the agent writes: taints, conditions, events."""
    out = cluster.kubectl("describe", "node", cluster.name)
    keep, show_block = [], False
    for line in out.splitlines():
        if line.startswith(("Taints:", "Conditions:", "Events:")):
            show_block = True
        elif line and not line.startswith(" ") and show_block:
            show_block = False
        if show_block:
            keep.append(line)
    print(f"$ kubectl describe node {cluster.name}   # excerpt", flush=True)
    print("\n".join(keep), flush=True)


def condition(cluster: NodeCluster) -> dict[str, Any]:
    for c in cluster.get("node", cluster.name)["status"].get("conditions") or []:
        if c["type"] == "MemoryFragmented":
            return dict(c)
    return {}


def tainted(cluster: NodeCluster) -> bool:
    taints = cluster.get("node", cluster.name)["spec"].get("taints") or []
    return any(t["key"] == TAINT for t in taints)


def agent_metrics(cluster: NodeCluster) -> dict[str, float]:
    selector = "app.kubernetes.io/name=memfrag-agent,app.kubernetes.io/component=agent"
    (pod,) = cluster.get("pods", "-n", NAMESPACE, "-l", selector)["items"]
    port = pod["spec"]["containers"][0]["ports"][0]["containerPort"]
    return scrape(f"http://{pod['status']['podIP']}:{port}/metrics")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="make demo", description=__doc__)
    p.add_argument(
        "--inject-kmsg",
        action="store_true",
        help="write the seed incident's kernel-log line into /dev/kmsg (root)",
    )
    p.add_argument("--dir", type=Path, default=Path("out/demo"))
    args = p.parse_args(argv)
    reason = node_unavailable_reason()
    if reason:
        print(f"make demo: {reason}", file=sys.stderr)
        return 1
    workdir = args.dir.resolve()
    shutil.rmtree(workdir, ignore_errors=True)  # a fresh cluster each run: no state from the last
    workdir.mkdir(parents=True)

    say("memfrag-agent check on this machine's real /proc")
    check = subprocess.run([str(AGENT_BIN), "check"], capture_output=True, text=True, check=False)
    print(check.stdout, end="")
    real = json.loads(
        subprocess.run(
            [str(AGENT_BIN), "check", "--output", "json"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
    )
    blocks = min(n["blocks_at_order"] for n in real["numa_nodes"])

    say("building the images: the agent from the Dockerfile, and pause (buildah; cached)")
    try:
        pause, pause_ref = build_pause_image(REPO / "out" / "images")
        agent = build_agent_image(REPO, REPO / "out" / "images")
    except ImageBuildError as exc:
        print(f"make demo: {exc}", file=sys.stderr)
        return 1
    say("starting a one-node cluster on this machine: etcd, kube-apiserver, scheduler, "
        "controller-manager, kubelet, containerd, kube-proxy")  # fmt: skip
    cluster = NodeCluster(workdir, images=(pause, agent), pause_image=pause_ref)
    try:
        cluster.start()
    except ControlPlaneError as exc:
        print(f"make demo: {exc}", file=sys.stderr)
        return 1
    try:
        show(cluster, "get", "nodes", "-o", "wide")
        name, _, tag = AGENT_REF.rpartition(":")
        values = {
            "image": {"repository": name, "tag": tag, "pullPolicy": "Never"},
            "config": {
                "sources": {
                    "poll_interval_seconds": 3,
                    "pagetypeinfo_interval_seconds": 30,
                    "accept_user_facility": args.inject_kmsg,
                },
                "reporting": {
                    "fragmented_for_seconds": 5,
                    "healthy_for_seconds": 10,
                    "max_tainted_percent": 100,
                },
                "remediation": {"mode": "dry-run"},
            },
        }
        values_file = workdir / "demo-values.yaml"
        values_file.write_text(yaml.safe_dump(values))
        say(f"helm install {RELEASE} charts/memfrag-agent --namespace {NAMESPACE} "
            f"--values {values_file.name}")  # fmt: skip
        print(cluster.helm("install", RELEASE, str(CHART), "--namespace", NAMESPACE,
                           "--values", str(values_file)), end="")  # fmt: skip
        show(cluster, "rollout", "status", f"daemonset/{RELEASE}", "-n", NAMESPACE,
             "--timeout", "300s")  # fmt: skip
        show(cluster, "get", "pods", "-n", NAMESPACE, "-o", "wide")
        wait_for(lambda: condition(cluster).get("status") == "False", "the first report", 60)
        describe(cluster)

        if args.inject_kmsg:
            say("writing the seed incident's line into /dev/kmsg (as root; user facility): "
                + SEED_LINE.strip()[3:])  # fmt: skip
            with open("/dev/kmsg", "w") as kmsg:
                kmsg.write(SEED_LINE)
            key = 'memfrag_kernel_log_findings_total{kind="page_allocation_failure",order="4"}'
            wait_for(lambda: agent_metrics(cluster).get(key), "the agent in its pod to read it")
            print(
                "the agent in its pod read it and assessed at once; the memory itself is "
                "healthy, so the condition stays False and an Event records the failure"
            )
        else:
            say("skipping the /dev/kmsg line (run with --inject-kmsg to write it)")

        threshold = blocks * 2 + 1
        say(
            f"SIMULATING fragmentation: this machine has {blocks} free order-4 blocks; raising "
            f"assessment.fragmented_below_blocks to {threshold} (helm upgrade; hot-reloaded)"
        )
        cluster.helm("upgrade", RELEASE, str(CHART), "--namespace", NAMESPACE, "--reuse-values",
                     "--set", f"config.assessment.fragmented_below_blocks={threshold}",
                     "--set", f"config.assessment.at_risk_below_blocks={threshold}")  # fmt: skip
        wait_for(lambda: tainted(cluster), "the condition and, after 5 s, the taint", 120)
        describe(cluster)

        say("restoring the real thresholds: recovery clears the taint after 10 s healthy")
        cluster.helm("upgrade", RELEASE, str(CHART), "--namespace", NAMESPACE,
                     "--values", str(values_file))  # fmt: skip
        wait_for(lambda: not tainted(cluster), "the taint to clear", 120)
        describe(cluster)
        say("metrics (excerpt) from the agent pod's /metrics")
        for k, v in sorted(agent_metrics(cluster).items()):
            if k.startswith(("memfrag_verdict", "memfrag_kernel_log", "memfrag_condition",
                             "memfrag_tainted", "memfrag_remediation_actions")):  # fmt: skip
                print(f"  {k} {v:g}")
        say(f"helm uninstall {RELEASE} (the pre-delete hook removes the condition and taint)")
        print(cluster.helm("uninstall", RELEASE, "--namespace", NAMESPACE, "--wait",
                           "--timeout", "300s"), end="")  # fmt: skip
        print(f"MemoryFragmented condition after uninstall: {condition(cluster) or 'none'}")
        say("done: stopping the node and the control plane")
        return 0
    except ControlPlaneError as exc:
        print(f"make demo: {exc}", file=sys.stderr)
        return 1
    finally:
        cluster.stop()
        print(f"logs kept in {workdir}", flush=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
