"""The pinned-memory scan runs only while it can matter: fragmented, after a step ran."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

from agent.daemon.pinned import PinnedWatch
from agent.decide.remediation import RemedyState
from agent.kernel.cgroups import CgroupReader
from agent.kernel.pinscan import PinScanner
from tests.unit.decide.test_cycle import HEALTHY
from tests.unit.decide.test_pinned import A

PIN = Path(__file__).parents[2] / "fixtures" / "proc" / "io-uring-pin-6.18-x86_64"
VMSTAT = {"nr_foll_pin_acquired": 5946, "nr_foll_pin_released": 0}


def watch() -> PinnedWatch:
    return PinnedWatch(PinScanner(PIN), CgroupReader(PIN / "no-cgroups", PIN))


def test_not_read_before_a_step_ran_nor_on_a_healthy_node() -> None:
    w = watch()
    assert w.read(A, VMSTAT, RemedyState(in_episode=True)) is None
    assert w.read(HEALTHY, VMSTAT, RemedyState(in_episode=True, tried=("compact",))) is None
    assert w.read(None, VMSTAT, RemedyState(in_episode=True, tried=("compact",))) is None
    assert w.reads == 0


def test_read_after_a_step_names_the_holder() -> None:
    w = watch()
    p = w.read(A, VMSTAT, dataclasses.replace(RemedyState(in_episode=True), tried=("compact",)))
    assert w.reads == 1 and p is not None and p.blocking
    assert [(h.pid, h.comm, h.pod_uid) for h in p.holders] == [(4242, "python3", None)]


def test_a_holder_in_a_pod_cgroup_is_named_by_its_pod(tmp_path: Path) -> None:
    uid = "6f1c2a4e-0b7d-4c1e-9a55-2f6d3e8b9c10"
    shutil.copytree(PIN / "4242", tmp_path / "4242")
    (tmp_path / "4242" / "cgroup").write_text(
        f"0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod"
        f"{uid.replace('-', '_')}.slice/cri-containerd-abc.scope\n"
    )
    w = PinnedWatch(PinScanner(tmp_path), CgroupReader(tmp_path / "no-cgroups", tmp_path))
    p = w.read(A, VMSTAT, RemedyState(in_episode=True, tried=("compact",)))
    assert p is not None and p.holders[0].pod_uid == uid
    assert "python3 (pid 4242, pod lab/pinner): 0.2 MiB" in p.sentence({uid: "lab/pinner"})
