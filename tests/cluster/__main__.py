"""`python -m tests.cluster up|down|status [--dir out/cluster]`: a plane for humans and the demo.

`up` returns once the plane is ready and leaves it running (detached); `down` stops it from the
pids file. `. out/cluster/env` (or `export $(cat out/cluster/env)`) sets KUBECONFIG.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

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
    args = parser.parse_args(argv)
    workdir: Path = args.dir.resolve()

    if args.command == "down":
        stopped = stop_from_pids(workdir)
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


if __name__ == "__main__":
    sys.exit(main())
