"""Coordination over coordination.k8s.io Leases in the agent's namespace.

`Semaphore`: N named slots, each held by one agent pod, taken over only once expired. A holder
that dies (kill -9, a deleted node) frees its slot by itself when the lease runs out: kured's
lock annotation does not. Expiry is timed on THIS agent's monotonic clock from when it saw the
lease last change (as client-go's leader election does), never from the renewTime another
node's clock wrote: a node an hour ahead or behind can neither steal a held slot nor lose its own.

`NodeRecord`: one Lease per node, shared by every agent pod on that node (two run at once during
a maxSurge rollout): it says which of them may remediate now, keeps the node's action history so
the hourly cap and cooldowns hold across pods and restarts, and names the taint effects the agent
may have put on the node (so a changed taint_effect or `cleanup` removes only the agent's taint).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agent.assess.tunables import KNOBS
from agent.base.times import micro_time
from agent.decide.remediation import ActionOutcome, PastAction
from agent.kube import paths
from agent.kube.api import Api
from agent.kube.errors import ApiError

log = logging.getLogger(__name__)
LABEL = "app.kubernetes.io/managed-by"
LABEL_VALUE = "memfrag-agent"
KIND = "memfrag.dev/semaphore"  # label: which semaphore a slot belongs to ("node": the record)
OWNER = "memfrag.dev/owner"  # annotation: the node a slot is held for (taint slots)
ACTIONS = "memfrag.dev/actions"
TRIAL = "memfrag.dev/tunable-trial"  # the vm tunable being tried, with its original value
TUNED = "memfrag.dev/tunables"  # the tunables tried, and how each ended
TAINT_EFFECTS = "memfrag.dev/taint-effects"
MAX_ACTIONS = 64  # the node's record keeps this many actions (hourly caps need far fewer)
Clock = Callable[[], float]


class Observed:
    """When this agent saw each lease change, on its own monotonic clock (client-go's
    observedTime): a lease is expired once it has not changed for its duration, by our clock."""

    def __init__(self, monotonic: Clock) -> None:
        self.monotonic = monotonic
        self._seen: dict[str, tuple[str, float]] = {}

    def expired(self, lease: dict[str, Any]) -> bool:
        spec = lease.get("spec") or {}
        if not spec.get("holderIdentity"):
            return True
        meta = lease.get("metadata") or {}
        name, now = str(meta.get("name", "")), self.monotonic()
        version = str(meta.get("resourceVersion", "")) + "/" + str(spec.get("renewTime", ""))
        seen = self._seen.get(name)
        if seen is None or seen[0] != version:
            self._seen[name] = seen = (version, now)
        duration = float(spec.get("leaseDurationSeconds") or 0)
        return now - seen[1] > duration

    def forget(self, name: str) -> None:
        self._seen.pop(name, None)


def _meta(name: str, kind: str, rv: str | None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": {LABEL: LABEL_VALUE, KIND: kind}}
    if rv:
        meta["resourceVersion"] = rv
    return meta


class Semaphore:
    def __init__(
        self,
        kube: Api,
        namespace: str,
        prefix: str,
        holder: str,
        owner: str | None = None,
        *,
        wall: Clock = time.time,
        monotonic: Clock = time.monotonic,
    ) -> None:
        """`holder`: this agent pod (name and UID). `owner`: if set, a slot held for the same
        owner (the node, for taint slots) is ours too, whichever pod wrote it: a new pod on a
        tainted node keeps that node's slot instead of counting the node twice."""
        self.kube, self.namespace, self.prefix, self.holder = kube, namespace, prefix, holder
        self.owner, self.wall = owner, wall
        self.observed = Observed(monotonic)
        self.path = paths.leases(namespace)

    def _ours(self, lease: dict[str, Any]) -> bool:
        spec, meta = lease.get("spec") or {}, lease.get("metadata") or {}
        if spec.get("holderIdentity") == self.holder:
            return True
        owner = (meta.get("annotations") or {}).get(OWNER)
        return self.owner is not None and bool(spec.get("holderIdentity")) and owner == self.owner

    def _body(self, name: str, duration: float, old: dict[str, Any] | None) -> dict[str, Any]:
        now = micro_time(self.wall())
        meta = _meta(name, self.prefix, (old or {}).get("metadata", {}).get("resourceVersion"))
        if self.owner is not None:
            meta["annotations"] = {OWNER: self.owner}
        kept = old is not None and self._ours(old)
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": meta,
            "spec": {
                "holderIdentity": self.holder,
                "leaseDurationSeconds": max(1, int(duration)),
                "acquireTime": (old or {}).get("spec", {}).get("acquireTime") if kept else now,
                "renewTime": now,
            },
        }

    def held(self, slots: int) -> str | None:
        """The slot this holder has, if any (a restarted agent finds its own slot again)."""
        items = self.kube.request("GET", self.path, {"labelSelector": f"{LABEL}={LABEL_VALUE}"})
        for lease in items.get("items", []):
            name = lease["metadata"]["name"]
            if (
                name.startswith(self.prefix + "-")
                and self._ours(lease)
                and _index(name, self.prefix) < slots
            ):
                return str(name)
        return None

    def acquire(self, slots: int, duration: float) -> str | None:
        """Take (or renew) a slot among `slots`; None when all are held and unexpired.
        Races are settled by the API server: create gets 409 if the slot exists, update gets
        409 if someone else wrote it since we read it."""
        for i in range(slots):
            name = f"{self.prefix}-{i}"
            try:
                lease = self.kube.request("GET", paths.lease(self.namespace, name))
            except ApiError as exc:
                if exc.status != 404:
                    raise
                try:
                    self.kube.request("POST", self.path, body=self._body(name, duration, None))
                    return name
                except ApiError as exc2:
                    if exc2.status == 409:
                        continue
                    raise
            ours = self._ours(lease)
            if not ours and not self.observed.expired(lease):
                continue
            holder = (lease.get("spec") or {}).get("holderIdentity")
            try:
                self.kube.request(
                    "PUT", paths.lease(self.namespace, name), body=self._body(name, duration, lease)
                )
            except ApiError as exc:
                if exc.status == 409:
                    continue
                raise
            if holder and not ours:
                log.info("took over an expired slot", extra={"slot": name, "holder": holder})
            return name
        return None

    def release(self, name: str) -> None:
        """Free our slot: delete it only if it is still ours (resourceVersion precondition)."""
        try:
            lease = self.kube.request("GET", paths.lease(self.namespace, name))
            if not self._ours(lease):
                return
            self.kube.request(
                "DELETE",
                paths.lease(self.namespace, name),
                body={"preconditions": {"resourceVersion": lease["metadata"]["resourceVersion"]}},
            )
            self.observed.forget(name)
        except ApiError as exc:
            if exc.status not in (404, 409):
                raise


def _index(name: str, prefix: str) -> int:
    tail = name[len(prefix) + 1 :]
    return int(tail) if tail.isdigit() else 1 << 30


def node_count(kube: Api) -> int:
    """How many Nodes exist, from one list call with limit=1 (remainingItemCount)."""
    result = kube.request("GET", paths.NODES, {"limit": "1"})
    remaining = (result.get("metadata") or {}).get("remainingItemCount") or 0
    return len(result.get("items") or []) + int(remaining)


def taint_slots(nodes: int, max_percent: float) -> int:
    """At most max_percent of the nodes, but always at least one so that small clusters are
    covered (a one-node cluster's only node may be tainted: its pods have nowhere else to go
    anyway, and the condition says why)."""
    return max(1, int(nodes * max_percent // 100))


# --- the node's own record -------------------------------------------------------------------


@dataclass(frozen=True)
class RecordedTrial:
    """A tunable trial in progress, as the node's record keeps it: written before the knob is,
    so whoever finds it after a crash can put the original back."""

    name: str
    original: int
    value: int
    by: str
    wall: float


@dataclass(frozen=True)
class NodeState:
    actions: tuple[PastAction, ...] = ()
    taint_effects: tuple[str, ...] = ()
    trial: RecordedTrial | None = None
    tuned: tuple[tuple[str, str], ...] = ()  # (knob, how its trial ended)


def _count(v: object) -> int:
    """A sysctl value from an annotation: a non-negative int that fits the kernel's int."""
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 1 << 31:
        raise ValueError(f"not a tunable value: {v!r}")
    return v


def _trial(text: str | None) -> RecordedTrial | None:
    """Only a knob the review knows (KNOBS): the name becomes a path under /proc/sys/vm."""
    if not text:
        return None
    try:
        raw = json.loads(text)
        t = RecordedTrial(
            str(raw["name"]),
            _count(raw["original"]),
            _count(raw["value"]),
            str(raw["by"]),
            float(raw["at"]),
        )
    except (KeyError, TypeError, ValueError):
        log.warning("node record: malformed annotation dropped", extra={"annotation": TRIAL})
        return None
    return t if t.name in KNOBS else None


def _tuned(text: str | None) -> tuple[tuple[str, str], ...]:
    try:
        raw = json.loads(text or "[]")
    except ValueError:
        return ()
    out = []
    for item in raw if isinstance(raw, list) else []:
        if isinstance(item, list) and len(item) == 2 and item[0] in KNOBS:
            out.append((str(item[0]), str(item[1])[:20]))
    return tuple(out[: len(KNOBS) * 2])


def node_record_name(node: str) -> str:
    """memfrag-node-<node>, hashed when that would pass the 253 characters of a name."""
    name = f"memfrag-node-{node}"
    return name if len(name) <= 253 else f"memfrag-node-{hashlib.sha256(node.encode()).hexdigest()}"


def _outcome(value: object) -> ActionOutcome:
    """An action's result as the record says; a word this version does not know (a newer agent
    wrote it) is still an action that ran: it counts against the caps, as a failure."""
    try:
        return ActionOutcome(str(value))
    except ValueError:
        return ActionOutcome.FAILED


def parse_node_state(lease: dict[str, Any] | None) -> NodeState:
    """The record's annotations; anything malformed in them is dropped, not trusted."""
    notes = ((lease or {}).get("metadata") or {}).get("annotations") or {}
    actions: list[PastAction] = []
    try:
        raw = json.loads(str(notes.get(ACTIONS) or "[]"))
    except ValueError:
        raw = []
    for item in raw if isinstance(raw, list) else []:
        if isinstance(item, dict):
            try:
                actions.append(
                    PastAction(
                        str(item["step"]),
                        float(item["at"]),
                        _outcome(item["result"]),
                        str(item["by"]),
                    )
                )
            except (KeyError, TypeError, ValueError):
                continue
    effects = tuple(e for e in str(notes.get(TAINT_EFFECTS) or "").split(",") if e)
    return NodeState(
        tuple(actions[-MAX_ACTIONS:]),
        effects,
        _trial(notes.get(TRIAL)),
        _tuned(notes.get(TUNED)),
    )


def node_state_annotations(state: NodeState) -> dict[str, str]:
    actions = [
        {"step": a.step, "at": round(a.wall, 3), "result": a.result, "by": a.by}
        for a in state.actions[-MAX_ACTIONS:]
    ]
    out = {
        ACTIONS: json.dumps(actions, separators=(",", ":")),
        TAINT_EFFECTS: ",".join(state.taint_effects),
    }
    t = state.trial
    if t is not None:
        trial = {"name": t.name, "original": t.original, "value": t.value, "by": t.by}
        out[TRIAL] = json.dumps({**trial, "at": round(t.wall, 3)}, separators=(",", ":"))
    if state.tuned:
        out[TUNED] = json.dumps([list(x) for x in state.tuned], separators=(",", ":"))
    return out


class NodeRecord:
    def __init__(
        self,
        kube: Api,
        namespace: str,
        node: str,
        holder: str,
        *,
        wall: Clock = time.time,
        monotonic: Clock = time.monotonic,
    ) -> None:
        self.kube, self.node, self.holder, self.wall = kube, node, holder, wall
        self.name = node_record_name(node)
        self.namespace = namespace
        self.path = paths.leases(namespace)
        self.observed = Observed(monotonic)

    def read(self) -> tuple[NodeState, dict[str, Any] | None]:
        try:
            lease = self.kube.request("GET", paths.lease(self.namespace, self.name))
        except ApiError as exc:
            if exc.status != 404:
                raise
            return NodeState(), None
        return parse_node_state(lease), lease

    def _write(self, lease: dict[str, Any] | None, state: NodeState, spec: dict[str, Any]) -> None:
        """Create or replace (resourceVersion precondition: 409 if another pod wrote since)."""
        meta = _meta(self.name, "node", (lease or {}).get("metadata", {}).get("resourceVersion"))
        meta["annotations"] = {OWNER: self.node, **node_state_annotations(state)}
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta}
        body["spec"] = spec
        if lease is None:
            self.kube.request("POST", self.path, body=body)
        else:
            self.kube.request("PUT", paths.lease(self.namespace, self.name), body=body)

    def lock(self, duration: float) -> NodeState | None:
        """Become the one pod on this node that may remediate, for `duration`; the node's
        record as it stands, or None while another pod holds it (unexpired by our clock)."""
        state, lease = self.read()
        spec = (lease or {}).get("spec") or {}
        other = spec.get("holderIdentity") not in (None, "", self.holder)
        if lease is not None and other and not self.observed.expired(lease):
            return None
        now = micro_time(self.wall())
        mine = {
            "holderIdentity": self.holder,
            "leaseDurationSeconds": max(1, int(duration)),
            "acquireTime": now,
            "renewTime": now,
        }
        try:
            self._write(lease, state, mine)
        except ApiError as exc:
            if exc.status == 409:
                return None  # another pod took it between our read and write
            raise
        return state

    def update(self, change: Callable[[NodeState], NodeState], unlock: bool = False) -> NodeState:
        """Read-modify-write of the record, leaving the lock as it is (or freeing it, if ours
        and `unlock`); a few retries on 409."""
        for attempt in range(5):
            state, lease = self.read()
            spec = dict((lease or {}).get("spec") or {})
            if unlock and spec.get("holderIdentity") == self.holder:
                spec = {}
            new = change(state)
            if lease is not None and new == state and spec == (lease.get("spec") or {}):
                return state
            try:
                self._write(lease, new, spec)
                return new
            except ApiError as exc:
                if exc.status != 409 or attempt == 4:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover
