"""A one-node cluster as users have one: the control plane, a real node, kubectl and helm.

The plane runs with ServiceAccount admission and NodeRestriction, the scheduler, and the
controller-manager with its node lifecycle controller (it lifts the not-ready taint once the
kubelet reports Ready); the node runs the images built from this repository
(tests.cluster.image). The e2e tests, `make demo` and `python -m tests.cluster up --node` use it.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from tests.cluster.node import DEFAULT_PAUSE_IMAGE, NODE_NAME, RealNode
from tests.cluster.plane import DEFAULT_BIN_DIR, ControlPlane, ControlPlaneError

# Every controller but node IPAM (the CNI's host-local range gives the addresses).
NODE_CONTROLLERS = "*,-nodeipam"


class NodeCluster:
    """`ControlPlane(for_real_node=True)` + `RealNode`, with kubectl and helm bound to it."""

    def __init__(
        self,
        workdir: Path,
        *,
        images: tuple[Path, ...] = (),
        pause_image: str = DEFAULT_PAUSE_IMAGE,
        detached: bool = False,
        bin_dir: Path = DEFAULT_BIN_DIR,
    ) -> None:
        self.workdir = Path(workdir).resolve()
        self.bin_dir = bin_dir
        self.plane = ControlPlane(
            self.workdir / "plane", bin_dir, for_real_node=True, detached=detached
        )
        self.node = RealNode(
            self.plane,
            self.workdir / "node",
            images=images,
            pause_image=pause_image,
            bin_dir=bin_dir,
        )

    @property
    def name(self) -> str:
        """The Node's name."""
        return self.node.name

    @property
    def kubeconfig(self) -> Path:
        return self.plane.kubeconfig

    def start(self) -> Self:
        try:
            self.plane.start()
            self.plane.start_scheduler()
            self.plane.start_controller_manager(NODE_CONTROLLERS)
            self.node.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """The node first (its pods' processes, mounts, network), then the plane."""
        try:
            self.node.stop()
        finally:
            self.plane.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- tools bound to this cluster ---

    def run(self, tool: str, *args: str, check: bool = True, timeout: float = 600) -> str:
        """Run kubectl or helm against this cluster; a failure names the command and output."""
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
        argv = [str(self.bin_dir / tool), *args]
        try:
            out = subprocess.run(
                argv, capture_output=True, text=True, env=env, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise ControlPlaneError(f"{' '.join(argv)}: no answer in {timeout:.0f} s") from exc
        if check and out.returncode != 0:
            raise ControlPlaneError(
                f"{' '.join(argv)} exited {out.returncode}\nstdout:\n{out.stdout[-4000:]}\n"
                f"stderr:\n{out.stderr[-4000:]}"
            )
        return out.stdout

    def kubectl(self, *args: str, check: bool = True, timeout: float = 600) -> str:
        return self.run("kubectl", *args, check=check, timeout=timeout)

    def helm(self, *args: str, check: bool = True, timeout: float = 600) -> str:
        return self.run("helm", *args, check=check, timeout=timeout)

    def get(self, *args: str) -> Any:
        """`kubectl get -o json ...`, parsed."""
        return json.loads(self.kubectl("get", "-o", "json", *args))


__all__ = ["NODE_CONTROLLERS", "NODE_NAME", "NodeCluster"]


def container_cgroup(
    pod: dict[str, Any], container: str, root: Path = Path("/sys/fs/cgroup/memory")
) -> Path | None:
    """A running container's memory cgroup directory on the real node (cgroup v1:
    .../pod<uid>/<container id>); None before it has one."""
    uid = pod["metadata"]["uid"]
    statuses = (pod["status"].get("containerStatuses") or []) + (
        pod["status"].get("initContainerStatuses") or []
    )
    for cs in statuses:
        cid = (cs.get("containerID") or "").removeprefix("containerd://")
        if cs["name"] == container and cid:
            for path in root.glob(f"**/pod{uid}/{cid}"):
                return path
    return None
