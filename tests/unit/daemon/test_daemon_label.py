"""The contiguity label in the Agent over the in-memory API: written when the bucket changes and
not on every tick, removed when turned off."""

from __future__ import annotations

from pathlib import Path

from agent.kube import paths
from tests.unit.daemon.parts import FRAGMENTED, HEALTHY, rewrite
from tests.unit.daemon.test_daemon_loop import World

LABEL = "memfrag.dev/contiguity"


def label(w: World) -> str | None:
    return (w.node()["metadata"].get("labels") or {}).get(LABEL)


def label_patches(w: World) -> int:
    assert w.kube is not None
    return sum(1 for m, p in w.kube.calls if m == "PATCH" and p == paths.node("n1"))


def test_the_label_follows_the_bucket_with_one_write_per_change(tmp_path: Path) -> None:
    w = World(tmp_path, {"reporting": {"contiguity_label": True}})
    w.tick()
    assert label(w) == "high"
    writes = label_patches(w)
    for _ in range(5):
        w.tick(15)
    assert label_patches(w) == writes  # unchanged: no write per tick
    w.host.be(FRAGMENTED)
    w.tick(15)
    assert label(w) == "none"
    w.host.be(HEALTHY)
    w.tick(15)
    assert label(w) == "high"


def test_off_by_default_and_removed_when_turned_off(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.tick()
    assert label(w) is None and label_patches(w) == 0
    on = World(tmp_path / "on", {"reporting": {"contiguity_label": True}})
    on.tick()
    assert label(on) == "high"
    rewrite(on.config, "reporting:\n  metrics_port: 0\n  metrics_address: 127.0.0.1\n")
    on.agent.reload_config()
    on.tick(15)
    assert label(on) is None
