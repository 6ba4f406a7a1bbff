"""A small cluster-wide semaphore over coordination.k8s.io Leases: N named slots, each held by
one node with an expiry, taken over only once expired. A holder that dies (kill -9, a deleted
node) frees its slot by itself when the lease runs out: kured's lock annotation does not.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from agent.kube import ApiError, Kube

log = logging.getLogger(__name__)
LABEL = "app.kubernetes.io/managed-by"
LABEL_VALUE = "memfrag-agent"


def micro_time(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_micro_time(text: str) -> float | None:
    for fmt in ("%Y-%m-%dT%H:%M:%S.%fZ", "%Y-%m-%dT%H:%M:%SZ"):
        try:
            return dt.datetime.strptime(text, fmt).replace(tzinfo=dt.UTC).timestamp()
        except ValueError:
            continue
    return None


def expired(lease: dict[str, Any], now: float) -> bool:
    spec = lease.get("spec") or {}
    if not spec.get("holderIdentity"):
        return True
    renew = parse_micro_time(str(spec.get("renewTime") or spec.get("acquireTime") or ""))
    duration = spec.get("leaseDurationSeconds") or 0
    return renew is None or renew + float(duration) < now


class Semaphore:
    def __init__(self, kube: Kube, namespace: str, prefix: str, holder: str) -> None:
        self.kube, self.namespace, self.prefix, self.holder = kube, namespace, prefix, holder
        self.path = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"

    def _body(self, name: str, now: float, duration: float, rv: str | None) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "name": name,
            "labels": {LABEL: LABEL_VALUE, "memfrag.dev/semaphore": self.prefix},
        }
        if rv:
            meta["resourceVersion"] = rv
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": meta,
            "spec": {
                "holderIdentity": self.holder,
                "leaseDurationSeconds": max(1, int(duration)),
                "acquireTime": micro_time(now),
                "renewTime": micro_time(now),
            },
        }

    def held(self, slots: int) -> str | None:
        """The slot this holder has, if any (a restarted agent finds its own slot again)."""
        items = self.kube.request("GET", self.path, {"labelSelector": f"{LABEL}={LABEL_VALUE}"})
        for lease in items.get("items", []):
            name = lease["metadata"]["name"]
            if (
                name.startswith(self.prefix + "-")
                and (lease.get("spec") or {}).get("holderIdentity") == self.holder
                and _index(name, self.prefix) < slots
            ):
                return str(name)
        return None

    def acquire(self, slots: int, duration: float, now: float) -> str | None:
        """Take (or renew) a slot among `slots`; None when all are held and unexpired.
        Races are settled by the API server: create gets 409 if the slot exists, update gets
        409 if someone else wrote it since we read it."""
        for i in range(slots):
            name = f"{self.prefix}-{i}"
            try:
                lease = self.kube.request("GET", f"{self.path}/{name}")
            except ApiError as exc:
                if exc.status != 404:
                    raise
                try:
                    self.kube.request("POST", self.path, body=self._body(name, now, duration, None))
                    return name
                except ApiError as exc2:
                    if exc2.status == 409:
                        continue
                    raise
            holder = (lease.get("spec") or {}).get("holderIdentity")
            if holder == self.holder or expired(lease, now):
                body = self._body(name, now, duration, lease["metadata"]["resourceVersion"])
                if holder == self.holder:
                    body["spec"]["acquireTime"] = lease["spec"].get("acquireTime")
                try:
                    self.kube.request("PUT", f"{self.path}/{name}", body=body)
                    if holder and holder != self.holder:
                        log.info("took over expired slot %s from %s", name, holder)
                    return name
                except ApiError as exc:
                    if exc.status == 409:
                        continue
                    raise
        return None

    def release(self, name: str) -> None:
        """Free our slot: delete it only if it is still ours (resourceVersion precondition)."""
        try:
            lease = self.kube.request("GET", f"{self.path}/{name}")
            if (lease.get("spec") or {}).get("holderIdentity") != self.holder:
                return
            self.kube.request(
                "DELETE",
                f"{self.path}/{name}",
                body={"preconditions": {"resourceVersion": lease["metadata"]["resourceVersion"]}},
            )
        except ApiError as exc:
            if exc.status not in (404, 409):
                raise


def _index(name: str, prefix: str) -> int:
    tail = name[len(prefix) + 1 :]
    return int(tail) if tail.isdigit() else 1 << 30


def node_count(kube: Kube) -> int:
    """How many Nodes exist, from one list call with limit=1 (remainingItemCount)."""
    result = kube.request("GET", "/api/v1/nodes", {"limit": "1"})
    remaining = (result.get("metadata") or {}).get("remainingItemCount") or 0
    return len(result.get("items") or []) + int(remaining)


def taint_slots(nodes: int, max_percent: float) -> int:
    """At most max_percent of the nodes, but always at least one so that small clusters are
    covered (a one-node cluster's only node may be tainted: its pods have nowhere else to go
    anyway, and the condition says why)."""
    return max(1, int(nodes * max_percent // 100))
