"""A real local Kubernetes control plane (etcd, kube-apiserver, scheduler, controller-manager).

Used by the integration tests, the demo and the benchmarks; see `plane.ControlPlane`.
"""

from tests.cluster.plane import (
    DEFAULT_BIN_DIR,
    DEFAULT_CONTROLLERS,
    ControlPlane,
    ControlPlaneError,
)

__all__ = ["DEFAULT_BIN_DIR", "DEFAULT_CONTROLLERS", "ControlPlane", "ControlPlaneError"]
