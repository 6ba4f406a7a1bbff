"""Fixtures for tests against a real local control plane (see tests/cluster)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client as k8s_client

from agent.kube.client import Kube
from tests.cluster import ControlPlane
from tests.cluster.plane import api_client_for
from tests.cluster.rbac import NAMESPACE, apply_chart_rbac


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """One etcd + kube-apiserver for the whole session: starting one costs a few seconds.

    Missing binaries fail (naming them and `make tools`) instead of skipping: no real test is
    skipped by default. Tests that need the scheduler or controller-manager start them
    (idempotently); everything is stopped at the end of the session.
    """
    with ControlPlane(tmp_path_factory.mktemp("control-plane")) as plane:
        yield plane


@pytest.fixture
def kube_api(control_plane: ControlPlane) -> Iterator[k8s_client.ApiClient]:
    """A kubernetes ApiClient authenticated as the cluster admin (system:masters).

    Built with kubernetes.config.new_client_from_config from the admin kubeconfig.
    """
    with api_client_for(control_plane.kubeconfig) as api:
        yield api


@pytest.fixture(scope="session")
def admin(control_plane: ControlPlane) -> Kube:
    """Raw JSON access as the cluster admin, through the agent's own transport."""
    return Kube.from_environment(str(control_plane.kubeconfig))


@pytest.fixture(scope="session")
def agent_kubeconfig(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Credentials of the chart's ServiceAccount, with exactly the chart's RBAC applied."""
    apply_chart_rbac(control_plane.kubeconfig)
    path = tmp_path_factory.mktemp("sa") / "agent.kubeconfig"
    return control_plane.service_account_kubeconfig(NAMESPACE, "memfrag-agent", path)
