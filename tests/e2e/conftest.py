"""Fixtures for the end-to-end tests: the images built from this repository and a real node.

Where this host cannot run the node (not root, no cgroups, packages missing) the tests skip with
the exact reason; as root on this kind of machine nothing is skipped.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.cluster.node import node_unavailable_reason
from tests.cluster.realcluster import NodeCluster

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Images:
    """Archives to import into the node's containerd, and the names they carry."""

    agent: Path
    agent_ref: str
    pause: Path
    pause_ref: str


def require_node() -> None:
    reason = node_unavailable_reason()
    if reason:
        pytest.skip(f"real node: {reason}")


@pytest.fixture(scope="session")
def images() -> Images:
    """The agent image from the Dockerfile and the pause image, built with buildah (cached)."""
    require_node()
    from tests.cluster.image import AGENT_REF, build_agent_image, build_pause_image

    out = REPO / "out" / "images"
    pause, pause_ref = build_pause_image(out)
    agent = build_agent_image(REPO, out)
    return Images(agent=agent, agent_ref=AGENT_REF, pause=pause, pause_ref=pause_ref)


@pytest.fixture(scope="session")
def cluster(images: Images, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeCluster]:
    """The plane plus one real node running the images; torn down at the end of the session."""
    with NodeCluster(
        tmp_path_factory.mktemp("real-node"),
        images=(images.pause, images.agent),
        pause_image=images.pause_ref,
    ) as c:
        yield c
