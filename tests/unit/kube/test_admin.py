"""What `status` and `kubectl memfrag` read (agent.kube.admin.read_fleet) against the in-memory
API: the rows per node and per NUMA node from the summary annotation, the last action from the
node record (else the Events), `describe`, `events`, and `cleanup` taking it all off."""

from __future__ import annotations

import dataclasses

from agent.assess.verdict import Reason
from agent.decide.nodeview import (
    SUMMARY_ANNOTATION,
    UNREMEDIABLE_TYPE,
    Condition,
    ConditionStatus,
    node_view,
)
from agent.decide.remediation import ActionOutcome, PastAction
from agent.decide.summary import summary_of
from agent.kube import paths
from agent.kube.admin import cleanup, describe, event_rows, numa_rows, read_fleet, status_rows
from agent.kube.leases import NodeRecord
from agent.kube.nodes import write_condition
from tests.unit.decide.test_cycle import FRAG, UNMOVABLE
from tests.unit.kube.fakekube import FakeKube

KEY = "memfrag.dev/fragmented"
WALL = 1_767_225_600.0  # 2026-01-01T00:00:00Z
TRUE = Condition(ConditionStatus.TRUE, Reason.FREE_MEMORY_FRAGMENTED, "m", "t0", "t1")
STUCK = Condition(
    ConditionStatus.TRUE, Reason.REMEDIATION_EXHAUSTED, "why", "t2", "t3", UNREMEDIABLE_TYPE
)


def event(kube: FakeKube, name: str, node: str, reason: str, last: str, count: int = 1) -> None:
    kube.put(
        f"/api/v1/namespaces/default/events/{name}",
        {
            "metadata": {"name": name},
            "involvedObject": {"kind": "Node", "name": node},
            "reason": reason,
            "type": "Warning",
            "message": f"{reason} on {node}",
            "count": count,
            "lastTimestamp": last,
            "source": {"component": "memfrag-agent", "host": node},
        },
    )


def cluster() -> FakeKube:
    kube = FakeKube()
    kube.add_node("n1", taints=[{"key": KEY, "value": "true", "effect": "NoSchedule"}])
    kube.add_node("n2")
    kube.add_node("old")  # an agent before the summary: its condition only
    write_condition(kube, "n1", TRUE, STUCK, summary=summary_of(UNMOVABLE, 2).to_annotation())
    write_condition(kube, "n2", TRUE, summary=summary_of(FRAG, 0).to_annotation())
    write_condition(kube, "old", TRUE)
    rec = NodeRecord(kube, "ns", "n1", "pod-a")
    step = PastAction("drop-caches=1", WALL, ActionOutcome.NO_EFFECT, "pod-a")
    rec.update(lambda s: dataclasses.replace(s, actions=(step,)))
    event(kube, "e1", "n2", "RemediationSucceeded", "2026-01-01T00:00:05Z")
    event(kube, "e2", "n2", "FragmentationDetected", "2026-01-01T00:00:09Z", count=3)
    event(kube, "e3", "n1", "NodeTainted", "2026-01-01T00:00:01Z")
    kube.put(  # someone else's Event: not the agent's
        "/api/v1/namespaces/default/events/k1",
        {"metadata": {"name": "k1"}, "reason": "Rebooted", "source": {"component": "kubelet"}},
    )
    return kube


def test_nodes_rows_are_per_numa_node_with_the_last_action_from_the_record() -> None:
    fleet = read_fleet(cluster(), "ns")
    rows = numa_rows(fleet, KEY)
    n1 = [r for r in rows if r["node"] == "n1"]
    assert [(r["numa_node"], r["verdict"]) for r in n1] == [
        (n.node, n.state.value) for n in UNMOVABLE.numa
    ]
    assert len(n1) == 2 and n1[0]["cause"] == "unmovable" and n1[0]["stuck_pods"] == 2
    assert n1[0]["tainted"] and n1[0]["unremediable"] == "True"
    assert n1[0]["last_action"] == "drop-caches=1 no_effect (2026-01-01T00:00:00Z)"
    assert n1[0]["blocks"] == UNMOVABLE.numa[0].blocks_at_target and n1[0]["order"] == 4
    n2 = [r for r in rows if r["node"] == "n2"]
    # no record for n2: its latest Remediation Event
    assert n2[0]["last_action"].startswith("2026-01-01T00:00:05Z RemediationSucceeded")
    old = [r for r in rows if r["node"] == "old"]
    assert [(r["numa_node"], r["verdict"], r["condition"]) for r in old] == [(None, "-", "True")]
    assert fleet.notes == []


def test_a_garbled_summary_is_told_not_trusted() -> None:
    kube = cluster()
    node = kube.objects[paths.node("n2")]
    node["metadata"]["annotations"][SUMMARY_ANNOTATION] = "{nope"
    fleet = read_fleet(kube, "ns")
    rows = [r for r in numa_rows(fleet, KEY) if r["node"] == "n2"]
    assert [(r["numa_node"], r["verdict"]) for r in rows] == [(None, "-")]
    assert fleet.notes == [
        "node/n2: annotation memfrag.dev/summary ignored: not JSON: "
        "Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"
    ]


def test_unreadable_records_and_events_are_notes_the_nodes_still_listed() -> None:
    kube = cluster()
    kube.fail("GET", "/leases", 403)
    kube.fail("GET", "/api/v1/events", 403)
    fleet = read_fleet(kube, "ns")
    assert len(status_rows(fleet, KEY)) == 3
    assert [n.split(":")[0] for n in fleet.notes] == [
        "node records in namespace ns not read",
        "the agent's Events not read",
    ]


def test_describe_names_both_conditions_the_taint_the_actions_and_recent_events() -> None:
    fleet = read_fleet(cluster(), "ns", node="n2")
    d = describe(fleet, KEY)
    assert fleet.notes == []  # no record on n2 (the agent never acted there): nothing to tell
    assert d["node"] == "n2" and d["condition"]["reason"] == "FreeMemoryFragmented"
    assert d["unremediable"] is None and d["taints"] == []
    assert [e["reason"] for e in d["events"]] == ["FragmentationDetected", "RemediationSucceeded"]
    d1 = describe(read_fleet(cluster(), "ns", node="n1"), KEY)
    assert d1["unremediable"]["type"] == UNREMEDIABLE_TYPE
    assert d1["actions"] == [
        {
            "step": "drop-caches=1",
            "result": "no_effect",
            "at": "2026-01-01T00:00:00Z",
            "by": "pod-a",
        }
    ]
    assert [e["reason"] for e in d1["events"]] == ["NodeTainted"]


def test_events_are_the_agents_latest_first() -> None:
    rows = event_rows(read_fleet(cluster(), "ns").events)
    assert [(r["reason"], r["node"], r["count"]) for r in rows] == [
        ("FragmentationDetected", "n2", 3),
        ("RemediationSucceeded", "n2", 1),
        ("NodeTainted", "n1", 1),
    ]


def test_cleanup_takes_both_conditions_and_the_summary_off() -> None:
    kube = cluster()
    done = cleanup(kube, "ns", KEY, ["NoSchedule"])
    v = node_view(kube.objects[paths.node("n1")])
    assert v.condition is None and v.unremediable is None and v.summary is None and not v.ours
    assert (
        "node/n1: removed condition MemoryFragmented, condition "
        f"{UNREMEDIABLE_TYPE}, annotation {SUMMARY_ANNOTATION}" in done
    )
    assert "node/old: removed condition MemoryFragmented" in done
