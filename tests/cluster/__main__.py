"""`python -m tests.cluster up|down|status [--dir out/cluster] [--node]`: a cluster for humans.

`up` returns once the plane is ready and leaves it running (detached); with `--node` it also
builds the images (cached) and starts a real node on this machine (root), with the scheduler and
the controller-manager, so `helm install` runs the agent as a pod. `down` stops everything from
the pids and node-state files. `. out/cluster/env` (or `export $(cat out/cluster/env)`) sets
KUBECONFIG.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from tests.cluster.node import teardown
from tests.cluster.plane import (
    ControlPlane,
    ControlPlaneError,
    pid_alive,
    read_pids,
    stop_from_pids,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.cluster", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--dir", type=Path, default=Path("out/cluster"), help="work directory")
    parser.add_argument("--scheduler", action="store_true", help="also start kube-scheduler")
    parser.add_argument(
        "--controller-manager", action="store_true", help="also start kube-controller-manager"
    )
    parser.add_argument(
        "--node",
        action="store_true",
        help="also a real node (kubelet, containerd, kube-proxy) running this repo's image; root",
    )
    args = parser.parse_args(argv)
    workdir: Path = args.dir.resolve()

    if args.command == "down":
        stopped = [line for line in teardown(workdir / "node") if line.startswith("stopped")]
        stopped += stop_from_pids(workdir / "plane") + stop_from_pids(workdir)
        print(f"stopped: {', '.join(stopped) or 'nothing was running'}")
        return 0

    if args.command == "status":
        pids = read_pids(workdir)
        if not pids:
            print(f"no control plane recorded in {workdir}")
            return 1
        for name, pid in pids.items():
            print(f"{name:<24} pid {pid:<8} {'running' if pid_alive(pid) else 'gone'}")
        env = workdir / "env"
        if env.exists():
            print(env.read_text(), end="")
        return 0 if all(pid_alive(p) for p in pids.values()) else 1

    if args.node:
        return up_with_node(workdir)
    if any(pid_alive(p) for p in read_pids(workdir).values()):
        print(f"a control plane is already running from {workdir}; `down` it first")
        return 1
    started = time.monotonic()
    try:
        plane = ControlPlane(workdir, detached=True).start()
        if args.scheduler:
            plane.start_scheduler()
        if args.controller_manager:
            plane.start_controller_manager()
    except ControlPlaneError as err:
        stop_from_pids(workdir)
        print(err, file=sys.stderr)
        return 1
    print(f"control plane up in {time.monotonic() - started:.1f} s at {plane.server}")
    print(f"export KUBECONFIG={plane.kubeconfig}   # also in {workdir / 'env'}")
    return 0


def up_with_node(workdir: Path) -> int:
    """The plane and a real node, detached; the images built first (cached)."""
    from tests.cluster.image import (
        AGENT_REF,
        ImageBuildError,
        build_agent_image,
        build_pause_image,
    )
    from tests.cluster.realcluster import NodeCluster

    if any(pid_alive(p) for p in read_pids(workdir / "plane").values()):
        print(f"a cluster is already running from {workdir}; `down` it first")
        return 1
    started = time.monotonic()
    repo = Path(__file__).resolve().parents[2]
    try:
        pause, pause_ref = build_pause_image(repo / "out" / "images")
        agent = build_agent_image(repo, repo / "out" / "images")
        cluster = NodeCluster(
            workdir, images=(pause, agent), pause_image=pause_ref, detached=True
        ).start()
    except (ControlPlaneError, ImageBuildError) as err:
        print(err, file=sys.stderr)
        return 1
    print(f"cluster up in {time.monotonic() - started:.1f} s: Node {cluster.name} is Ready")
    print(f"agent image: {AGENT_REF} (imagePullPolicy: Never)")
    print(f"export KUBECONFIG={cluster.kubeconfig}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
