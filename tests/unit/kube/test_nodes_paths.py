"""The one taint read-modify-write (agent.kube.nodes), as the daemon and `cleanup` use it, against
the in-memory API: other tools' taints kept, 409 re-read, retryable errors retried, final ones
raised; and the paths written once."""

from __future__ import annotations

import pytest

from agent.assess.verdict import Reason
from agent.decide.nodeview import Condition, ConditionStatus, node_view
from agent.kube import paths
from agent.kube.admin import cleanup
from agent.kube.errors import ApiError
from agent.kube.leases import NodeRecord, NodeState
from agent.kube.nodes import (
    TAINT_ATTEMPTS,
    delete_condition,
    write_condition,
    write_label,
    write_taint,
)
from tests.unit.kube.fakekube import FakeKube

KEY = "memfrag.dev/fragmented"
OTHER = {"key": "other.dev/x", "effect": "NoSchedule"}


def taints(kube: FakeKube, name: str = "n1") -> list[dict[str, str]]:
    return list(kube.objects[paths.node(name)]["spec"].get("taints") or [])


def test_paths() -> None:
    assert paths.node("n1") == "/api/v1/nodes/n1"
    assert paths.node_status("n1") == "/api/v1/nodes/n1/status"
    assert paths.pod("default", "p") == "/api/v1/namespaces/default/pods/p"
    assert paths.event("ns", "e") == "/api/v1/namespaces/ns/events/e"
    assert paths.lease("ns", "l") == "/apis/coordination.k8s.io/v1/namespaces/ns/leases/l"


def test_our_taint_goes_on_and_off_and_another_tools_stays() -> None:
    kube = FakeKube()
    kube.add_node("n1", taints=[OTHER, {"key": KEY, "effect": "NoExecute"}])
    w = write_taint(kube, "n1", KEY, "NoSchedule", {"NoSchedule"})
    assert w.changed and {"key": KEY, "value": "true", "effect": "NoSchedule"} in taints(kube)
    assert OTHER in taints(kube) and {"key": KEY, "effect": "NoExecute"} in taints(kube)
    assert not write_taint(kube, "n1", KEY, "NoSchedule", {"NoSchedule"}).changed
    off = write_taint(kube, "n1", KEY, None, {"NoSchedule"})
    assert off.removed == ("NoSchedule",)
    assert taints(kube) == [OTHER, {"key": KEY, "effect": "NoExecute"}]


def test_a_stale_node_is_read_again_on_409() -> None:
    kube = FakeKube()
    stale = kube.add_node("n1")
    kube.add_node("n1", taints=[OTHER])  # someone wrote since `stale` was read
    w = write_taint(kube, "n1", KEY, "NoSchedule", {"NoSchedule"}, stale)
    assert w.changed and OTHER in taints(kube)
    assert kube.count("PATCH") == 2 and kube.count("GET") == 1


def test_retryable_errors_are_retried_and_final_ones_raised() -> None:
    kube = FakeKube()
    kube.add_node("n1")
    kube.fail("PATCH", "/nodes/n1", 503, times=2)
    slept: list[float] = []
    assert write_taint(kube, "n1", KEY, "NoSchedule", (), sleep=slept.append).changed
    assert len(slept) == 2
    kube.fail("PATCH", "/nodes/n1", 403)
    with pytest.raises(ApiError) as err:
        write_taint(kube, "n1", KEY, None, {"NoSchedule"})
    assert err.value.status == 403


def test_endless_conflicts_end_in_an_error_not_a_loop() -> None:
    kube = FakeKube()
    kube.add_node("n1")
    kube.fail("PATCH", "/nodes/n1", 409, times=TAINT_ATTEMPTS)
    with pytest.raises(ApiError) as err:
        write_taint(kube, "n1", KEY, "NoSchedule", ())
    assert err.value.status == 409


def test_condition_written_and_deleted_by_type() -> None:
    kube = FakeKube()
    kube.add_node("n1")
    c = Condition(
        ConditionStatus.TRUE, Reason.FREE_MEMORY_FRAGMENTED, "m", "2026-01-01T00:00:00Z", "x"
    )
    assert node_view(write_condition(kube, "n1", c)).condition == c
    delete_condition(kube, "n1")
    assert node_view(kube.objects[paths.node("n1")]).condition is None


def test_cleanup_removes_ours_by_the_record_and_the_flag_only() -> None:
    kube = FakeKube()
    kube.add_node("n1", taints=[OTHER, {"key": KEY, "effect": "PreferNoSchedule"}])
    kube.add_node("n2", taints=[{"key": KEY, "effect": "NoExecute"}])
    write_condition(
        kube, "n1", Condition(ConditionStatus.TRUE, Reason.FREE_MEMORY_FRAGMENTED, "m", "t", "t")
    )
    rec = NodeRecord(kube, "ns", "n1", "pod-a")
    rec.update(lambda s: NodeState(s.actions, ("PreferNoSchedule",)))
    write_label(kube, "n1", "memfrag.dev/contiguity", "low")
    kube.objects[paths.node("n2")]["metadata"]["labels"] = {"team": "a"}
    done = cleanup(kube, "ns", KEY, ["NoSchedule"])
    assert "node/n1: removed label memfrag.dev/contiguity" in done
    assert kube.objects[paths.node("n1")]["metadata"]["labels"] == {}
    assert kube.objects[paths.node("n2")]["metadata"]["labels"] == {"team": "a"}
    assert taints(kube, "n1") == [OTHER]
    assert taints(kube, "n2") == [{"key": KEY, "effect": "NoExecute"}]  # another tool's
    assert "node/n1: removed taint memfrag.dev/fragmented:PreferNoSchedule" in done
    assert "node/n1: removed condition MemoryFragmented" in done
    assert f"lease/{rec.name}: deleted" in done
