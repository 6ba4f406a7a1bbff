"""What the daemon's unit tests share: a /proc tree made from real captures, a reader that counts
its observations, a config file, and pods as the API shows them."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import yaml

from agent.config.reload import ConfigFile
from agent.kernel.observation import Observation
from agent.kernel.procfs import ProcReader

PROC = Path(__file__).resolve().parents[2] / "fixtures" / "proc"
HEALTHY = "vm-6.18-x86_64"  # this kind of VM's /proc, healthy
FRAGMENTED = "seed-incident"  # the incident's buddyinfo: fragmented, the cause unknown
UNMOVABLE = "fb-prod-2node-4.0-fragmented"  # fragmented by unmovable kernel memory


class Host:
    """A /proc tree that becomes one fixture or another (every file of it), like a node's."""

    def __init__(self, root: Path, fixture: str = HEALTHY) -> None:
        self.root = root / "proc"
        self.root.mkdir(parents=True, exist_ok=True)
        self.sys = root / "sys"
        self.be(fixture)

    def be(self, fixture: str) -> None:
        for old in self.root.iterdir():
            if old.is_file():
                old.unlink()
        for src in (PROC / fixture).iterdir():
            if src.is_file() and src.name != "SOURCE.md":
                shutil.copy(src, self.root / src.name)

    def garbage(self) -> None:
        (self.root / "buddyinfo").write_text("Node 0, zone Normal 1 2 x\n")


class CountingReader(ProcReader):
    def __init__(self, host: Host) -> None:
        super().__init__(host.root, host.sys)
        self.observed = 0

    def observe(self, with_pagetypeinfo: bool = True) -> Observation:
        self.observed += 1
        return super().observe(with_pagetypeinfo)


def config_file(tmp: Path, values: dict[str, Any]) -> ConfigFile:
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(values))
    return ConfigFile(str(path))


def rewrite(cf: ConfigFile, text: str) -> None:
    """A new file under the same name (the kubelet swaps the ConfigMap's symlink)."""
    assert cf.path is not None
    tmp = Path(cf.path).with_suffix(".new")
    tmp.write_text(text)
    tmp.replace(cf.path)


def stuck_pod(name: str, node: str, owned: bool = True) -> dict[str, Any]:
    """A pod bound to `node` two hours ago, its container still in ContainerCreating."""
    meta: dict[str, Any] = {
        "name": name,
        "namespace": "default",
        "creationTimestamp": "2020-01-01T00:00:00Z",
    }
    if owned:
        meta["ownerReferences"] = [{"kind": "ReplicaSet", "name": "rs", "controller": True}]
    return {
        "metadata": meta,
        "spec": {"nodeName": node},
        "status": {
            "phase": "Pending",
            "containerStatuses": [{"state": {"waiting": {"reason": "ContainerCreating"}}}],
        },
    }
