"""agent.decide.ladder (what helps which cause) and agent.assess.pods (pods stuck in
ContainerCreating)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent.assess.pods import is_stuck, owned_by_controller, stuck_pods
from agent.assess.verdict import (
    Assessment,
    Cause,
    CauseKind,
    NodeState,
    NumaReport,
    Reason,
    Verdict,
    assess,
)
from agent.base.times import rfc3339
from agent.config.model import AssessmentConfig
from agent.decide.ladder import Step, ladder
from agent.kernel.actions import ActionKind
from agent.kernel.procfs import ProcReader

PROC = Path(__file__).resolve().parents[2] / "fixtures" / "proc"


def assessment(
    verdict: Verdict,
    cause: CauseKind,
    states: tuple[NodeState, ...] = (NodeState.FRAGMENTED,),
) -> Assessment:
    numa = tuple(
        NumaReport(node=i, state=s, blocks_at_target=0, free_pages=1000, zones=("Normal",))
        for i, s in enumerate(states)
    )
    return Assessment(
        verdict=verdict,
        reason=Reason.FREE_MEMORY_FRAGMENTED,
        message="",
        order=4,
        exhausted=False,
        cause=Cause(cause, (), ""),
        numa=numa,
        zones=(),
        gaps=(),
    )


def names(steps: tuple[Step, ...]) -> list[str]:
    return [s.name for s in steps]


# --- ladder --------------------------------------------------------------------------------------


def test_movable_compacts_first_then_drops_caches() -> None:
    steps = ladder(assessment(Verdict.FRAGMENTED, CauseKind.MOVABLE), ())
    assert names(steps) == ["compact", "drop-caches=1", "drop-caches=2"]
    assert [(s.action, s.arg) for s in steps] == [
        ("compact", None),
        ("drop-caches", 1),
        ("drop-caches", 2),
    ]
    assert all(s.why for s in steps)


def test_unknown_cause_climbs_like_movable() -> None:
    steps = ladder(assessment(Verdict.FRAGMENTED, CauseKind.UNKNOWN), ())
    assert names(steps) == ["compact", "drop-caches=1", "drop-caches=2"]


def test_reclaimable_drops_slab_first() -> None:
    steps = ladder(assessment(Verdict.FRAGMENTED, CauseKind.RECLAIMABLE), ())
    assert names(steps) == ["drop-caches=2", "compact"]


def test_unmovable_gets_one_short_attempt() -> None:
    steps = ladder(assessment(Verdict.FRAGMENTED, CauseKind.UNMOVABLE), (0,))
    assert names(steps) == ["drop-caches=1", "compact"]
    assert all(s.why.startswith("one attempt") for s in steps)
    no_drop = ladder(
        assessment(Verdict.FRAGMENTED, CauseKind.UNMOVABLE), (0,), allow_drop_caches=False
    )
    assert names(no_drop) == ["compact"]


@pytest.mark.parametrize("verdict", ["healthy", "at-risk"])
def test_nothing_unless_fragmented(verdict: Verdict) -> None:
    assert ladder(assessment(verdict, CauseKind.MOVABLE, (NodeState.HEALTHY,)), (0,)) == ()
    assert ladder(assessment(verdict, CauseKind.RECLAIMABLE, (NodeState.AT_RISK,)), (0,)) == ()


def test_only_numa_node_1_fragmented_compacts_that_node_first() -> None:
    one_of_two = (NodeState.HEALTHY, NodeState.FRAGMENTED)
    a = assessment(Verdict.FRAGMENTED, CauseKind.MOVABLE, one_of_two)
    assert a.fragmented_numa_nodes == (1,)
    steps = ladder(a, (0, 1))
    assert names(steps) == ["compact-node=1", "compact", "drop-caches=1", "drop-caches=2"]
    assert steps[0] == Step(
        ActionKind.COMPACT_NODE, 1, "only NUMA node 1 is fragmented: compact it alone"
    )
    # reclaimable: slab first, then the node, then everything
    r = ladder(
        assessment(
            Verdict.FRAGMENTED, CauseKind.RECLAIMABLE, (NodeState.HEALTHY, NodeState.FRAGMENTED)
        ),
        (0, 1),
    )
    assert names(r) == ["drop-caches=2", "compact-node=1", "compact"]


def test_per_node_compaction_needs_the_sysfs_file_and_a_healthy_node() -> None:
    one_of_two = (NodeState.HEALTHY, NodeState.FRAGMENTED)
    a = assessment(Verdict.FRAGMENTED, CauseKind.MOVABLE, one_of_two)
    assert names(ladder(a, (0,)))[0] == "compact"  # node 1 has no compact file
    assert names(ladder(a, ()))[0] == "compact"
    both = assessment(
        Verdict.FRAGMENTED, CauseKind.MOVABLE, (NodeState.FRAGMENTED, NodeState.FRAGMENTED)
    )
    assert names(ladder(both, (0, 1)))[0] == "compact"  # all nodes: compact everything


def test_no_drop_caches_when_not_allowed() -> None:
    assert names(
        ladder(assessment(Verdict.FRAGMENTED, CauseKind.MOVABLE), (), allow_drop_caches=False)
    ) == ["compact"]
    assert names(
        ladder(assessment(Verdict.FRAGMENTED, CauseKind.RECLAIMABLE), (), allow_drop_caches=False)
    ) == ["compact"]
    two = assessment(
        Verdict.FRAGMENTED, CauseKind.MOVABLE, (NodeState.HEALTHY, NodeState.FRAGMENTED)
    )
    assert names(ladder(two, (0, 1), allow_drop_caches=False)) == ["compact-node=1", "compact"]


def test_ladder_on_real_fixtures(tmp_path: Path) -> None:
    """fb-3.10: only node 1 is fragmented and its stranded pages are Movable (test_assess); with
    /sys/devices/system/node/node{0,1}/compact present, node 1 is compacted alone first."""
    sys_root = tmp_path / "sys"
    for n in (0, 1):
        d = sys_root / "devices" / "system" / "node" / f"node{n}"
        d.mkdir(parents=True)
        (d / "compact").write_text("")
    (sys_root / "devices" / "system" / "node" / "possible").write_text("0-1\n")
    reader = ProcReader(PROC / "fb-prod-2node-3.10", sys_root)
    assert reader.numa_nodes_with_compact() == (0, 1)
    a = assess(reader.observe(), AssessmentConfig())
    steps = ladder(a, reader.numa_nodes_with_compact())
    assert names(steps) == ["compact-node=1", "compact", "drop-caches=1", "drop-caches=2"]
    # fb-4.0: unmovable pollution: one short attempt only
    reader40 = ProcReader(PROC / "fb-prod-2node-4.0-fragmented", sys_root)
    steps40 = ladder(assess(reader40.observe(), AssessmentConfig()), (0, 1))
    assert names(steps40) == ["drop-caches=1", "compact"]
    # the seed: no pagetypeinfo (cause unknown), one node
    seed = ProcReader(PROC / "seed-incident", tmp_path / "nosys")
    assert seed.numa_nodes_with_compact() == ()
    assert names(ladder(assess(seed.observe(), AssessmentConfig()), ())) == [
        "compact",
        "drop-caches=1",
        "drop-caches=2",
    ]


# --- pods ----------------------------------------------------------------------------------------

NOW = 1_700_000_000.0
THRESHOLD = 300.0


def pod(
    name: str,
    *,
    phase: str = "Pending",
    scheduled_ago: float | None = 600.0,
    created_ago: float = 700.0,
    waiting: list[str | None] | None = None,
    owner: dict[str, Any] | None = None,
    deleting: bool = False,
    namespace: str = "default",
) -> dict[str, Any]:
    """A pod as the API server returns it; `waiting` lists each container's waiting reason
    (None: the container is running)."""
    meta: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "uid": f"uid-{name}",
        "creationTimestamp": rfc3339(NOW - created_ago),
    }
    if owner is not None:
        meta["ownerReferences"] = [owner]
    if deleting:
        meta["deletionTimestamp"] = rfc3339(NOW - 5)
    conditions: list[dict[str, Any]] = []
    if scheduled_ago is not None:
        conditions.append(
            {
                "type": "PodScheduled",
                "status": "True",
                "lastProbeTime": None,
                "lastTransitionTime": rfc3339(NOW - scheduled_ago),
            }
        )
    conditions.append(
        {
            "type": "Initialized",
            "status": "True",
            "lastProbeTime": None,
            "lastTransitionTime": rfc3339(NOW - 590),
        }
    )
    status: dict[str, Any] = {"phase": phase, "conditions": conditions, "qosClass": "Burstable"}
    if waiting is not None:
        statuses = []
        for i, reason in enumerate(waiting):
            state: dict[str, Any] = (
                {"running": {"startedAt": rfc3339(NOW - 100)}}
                if reason is None
                else {"waiting": {"reason": reason}}
            )
            statuses.append(
                {
                    "name": f"c{i}",
                    "image": "registry.example.com/app:1.2.3",
                    "imageID": "",
                    "ready": False,
                    "restartCount": 0,
                    "started": False,
                    "state": state,
                    "lastState": {},
                }
            )
        status["containerStatuses"] = statuses
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": {"nodeName": "worker-3", "containers": [{"name": "c0", "image": "app"}]},
        "status": status,
    }


RS_OWNER = {
    "apiVersion": "apps/v1",
    "kind": "ReplicaSet",
    "name": "web-7d9f8b6c5d",
    "uid": "rs-uid",
    "controller": True,
    "blockOwnerDeletion": True,
}


@pytest.mark.parametrize(
    ("p", "stuck"),
    [
        (pod("creating", waiting=["ContainerCreating"]), True),
        (pod("two-creating", waiting=["ContainerCreating", "ContainerCreating"]), True),
        (pod("no-sandbox"), True),  # no container status at all: the sandbox never came up
        (pod("young", scheduled_ago=100, waiting=["ContainerCreating"]), False),
        (pod("exactly-threshold", scheduled_ago=300, waiting=["ContainerCreating"]), False),
        (pod("just-over", scheduled_ago=301, waiting=["ContainerCreating"]), True),
        (pod("running", phase="Running", waiting=[None]), False),
        (pod("succeeded", phase="Succeeded"), False),
        (pod("deleting", waiting=["ContainerCreating"], deleting=True), False),
        (pod("image-pull", waiting=["ImagePullBackOff"]), False),
        (pod("err-image", waiting=["ErrImagePull"]), False),
        (pod("half-started", waiting=["ContainerCreating", None]), False),
        (pod("crash", waiting=["CrashLoopBackOff"]), False),
        # no PodScheduled condition: the creation time counts
        (pod("old-unconditioned", scheduled_ago=None, created_ago=900), True),
        (pod("new-unconditioned", scheduled_ago=None, created_ago=60), False),
        # scheduled recently although created long ago (waited for a node): not stuck yet
        (pod("waited", scheduled_ago=60, created_ago=3600, waiting=["ContainerCreating"]), False),
    ],
    ids=lambda v: v["metadata"]["name"] if isinstance(v, dict) else str(v),
)
def test_is_stuck(p: dict[str, Any], stuck: bool) -> None:
    assert is_stuck(p, NOW, THRESHOLD) is stuck


def test_is_stuck_tolerates_sparse_pods() -> None:
    assert is_stuck({}, NOW, THRESHOLD) is False
    assert is_stuck({"status": {"phase": "Pending"}}, NOW, THRESHOLD) is False  # no time known
    bad_time = pod("bad-time", scheduled_ago=None)
    bad_time["metadata"]["creationTimestamp"] = "not a time"
    assert is_stuck(bad_time, NOW, THRESHOLD) is False


def test_stuck_pods_sorted_names() -> None:
    pods = [
        pod("web-2", waiting=["ContainerCreating"], namespace="shop"),
        pod("running", phase="Running", waiting=[None]),
        pod("web-1", waiting=["ContainerCreating"], namespace="shop"),
        pod("job-x", namespace="batch"),
        pod("young", scheduled_ago=10, waiting=["ContainerCreating"]),
    ]
    assert stuck_pods(pods, NOW, THRESHOLD) == ["batch/job-x", "shop/web-1", "shop/web-2"]
    assert stuck_pods([], NOW, THRESHOLD) == []
    assert stuck_pods(pods, NOW, 10_000) == []


def test_owned_by_controller() -> None:
    assert owned_by_controller(pod("rs", owner=RS_OWNER)) is True
    not_controller = {**RS_OWNER, "controller": False}
    assert owned_by_controller(pod("gc-only", owner=not_controller)) is False
    no_flag = {k: v for k, v in RS_OWNER.items() if k != "controller"}
    assert owned_by_controller(pod("no-flag", owner=no_flag)) is False
    assert owned_by_controller(pod("bare")) is False
    assert owned_by_controller({}) is False
    both = pod("two-owners", owner=not_controller)
    both["metadata"]["ownerReferences"].append(
        {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "name": "db",
            "uid": "s",
            "controller": True,
        }
    )
    assert owned_by_controller(both) is True


def test_pod_with_init_containers_stuck_on_its_sandbox() -> None:
    """kubelet (convertToAPIContainerStatuses) gives every container of a pod that has init
    containers the default waiting reason PodInitializing, not ContainerCreating, while the
    sandbox cannot be created; such a pod is just as stuck (FailedCreatePodSandBox)."""
    p = pod("with-init", waiting=["PodInitializing"])
    p["spec"]["initContainers"] = [{"name": "init", "image": "busybox"}]
    p["status"]["conditions"][1]["status"] = "False"  # Initialized
    p["status"]["conditions"][1]["reason"] = "ContainersNotInitialized"
    p["status"]["initContainerStatuses"] = [
        {
            "name": "init",
            "image": "busybox",
            "imageID": "",
            "ready": False,
            "restartCount": 0,
            "started": False,
            "state": {"waiting": {"reason": "PodInitializing"}},
            "lastState": {},
        }
    ]
    assert is_stuck(p, NOW, THRESHOLD) is True
    # the same pod once its init container runs is not stuck
    p["status"]["initContainerStatuses"][0]["state"] = {"running": {"startedAt": rfc3339(NOW - 30)}}
    assert is_stuck(p, NOW, THRESHOLD) is False
