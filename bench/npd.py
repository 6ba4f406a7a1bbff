"""node-problem-detector's reporting pattern, replayed against the same API server for a side by
side comparison (not NPD itself: its Go binary is not built here).

What is replayed, from kubernetes/node-problem-detector:
- pkg/exporters/k8sexporter/condition/manager.go: a sync loop ticking every `updatePeriod` (1 s)
  writes when a condition changed, when the last write failed and `resyncPeriod` (10 s) passed,
  or when `heartbeatPeriod` passed since the last write (a constant of 1 min in old releases; the
  flag --k8s-exporter-heartbeat-period, default 5m, in current ones);
- pkg/exporters/k8sexporter/problemclient/problem_client.go: every write is one strategic-merge
  PATCH of nodes/<name>/status carrying ALL of NPD's conditions, each with a new
  lastHeartbeatTime;
- the default DaemonSet (deployment/node-problem-detector.yaml) runs kernel-monitor.json
  (KernelDeadlock, ReadonlyFilesystem, XfsShutdown) and docker-monitor.json
  (CorruptDockerOverlay2). NPD has no rule for page allocation failures: we add the custom
  permanent rule an operator would write (condition MemoryFragmented), so NPD reports 5.

Run as `python -m bench.npd --node N --kubeconfig K --kmsg FIFO` (one node, for detection
latency); `NpdFleet` replays the steady state of many nodes in one thread.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import re
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from agent.kube.client import SMP, ApiError, Kube

UPDATE_PERIOD = 1.0
RESYNC_PERIOD = 10.0
HEARTBEAT_PERIOD = 300.0  # --k8s-exporter-heartbeat-period default (5m)

RULE = re.compile(r"page allocation failure[.:]?\s+order:(\d+)")
RESET = "memfrag-bench: npd-reset"  # stands in for an NPD restart: permanent conditions stick


@dataclass(frozen=True)
class Cond:
    type: str
    status: str
    reason: str
    message: str
    transition: float


def default_conditions(now: float) -> dict[str, Cond]:
    pairs = [
        ("KernelDeadlock", "KernelHasNoDeadlock", "kernel has no deadlock"),
        ("ReadonlyFilesystem", "FilesystemIsNotReadOnly", "Filesystem is not read-only"),
        ("XfsShutdown", "XfsHasNotShutDown", "XFS has not shutdown"),
        ("CorruptDockerOverlay2", "NoCorruptDockerOverlay2", "docker overlay2 is functioning"),
        ("MemoryFragmented", "NoHighOrderAllocationFailure", "no high-order allocation failure"),
    ]
    return {t: Cond(t, "False", r, m, now) for t, r, m in pairs}


def _rfc3339(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def status_patch(conditions: dict[str, Cond], now: float) -> dict[str, Any]:
    """problem_client.SetConditions: every condition, each with lastHeartbeatTime = now."""
    return {
        "status": {
            "conditions": [
                {
                    "type": c.type,
                    "status": c.status,
                    "reason": c.reason,
                    "message": c.message,
                    "lastTransitionTime": _rfc3339(c.transition),
                    "lastHeartbeatTime": _rfc3339(now),
                }
                for c in conditions.values()
            ]
        }
    }


class ConditionManager:
    """condition/manager.go's decision, with the clock and the write passed in."""

    def __init__(
        self,
        write: Callable[[dict[str, Cond]], None],
        clock: Callable[[], float] = time.monotonic,
        heartbeat: float = HEARTBEAT_PERIOD,
        latest_try: float = -1e18,
    ) -> None:
        self.write, self.clock, self.heartbeat = write, clock, heartbeat
        self.updates: dict[str, Cond] = {}
        self.conditions: dict[str, Cond] = {}
        self.latest_try = latest_try
        self.resync_needed = False
        self.writes = 0
        self._lock = threading.Lock()

    def update(self, c: Cond) -> None:
        with self._lock:
            self.updates[c.type] = c

    def current(self, ctype: str) -> Cond | None:
        """The newest value of a condition: a pending update, else the one last written."""
        with self._lock:
            return self.updates.get(ctype) or self.conditions.get(ctype)

    def need_updates(self) -> bool:
        with self._lock:
            changed = False
            for t, c in self.updates.items():
                if self.conditions.get(t) != c:
                    self.conditions[t] = c
                    changed = True
            self.updates.clear()
            return changed

    def tick(self) -> bool:
        """One updatePeriod tick; True if it wrote (or tried to)."""
        now = self.clock()
        need = (
            self.need_updates()
            or (now - self.latest_try >= RESYNC_PERIOD and self.resync_needed)
            or now - self.latest_try >= self.heartbeat
        )
        if not need:
            return False
        self.latest_try = now
        self.resync_needed = False
        self.writes += 1
        try:
            self.write(dict(self.conditions))
        except ApiError:
            self.resync_needed = True
        return True


def _patcher(kube: Kube, node: str) -> Callable[[dict[str, Cond]], None]:
    def write(conditions: dict[str, Cond]) -> None:
        kube.request(
            "PATCH",
            f"/api/v1/nodes/{node}/status",
            body=status_patch(conditions, time.time()),
            content_type=SMP,
        )

    return write


def _post_event(kube: Kube, node: str, reason: str, message: str) -> None:
    now = _rfc3339(time.time())
    try:
        kube.request(
            "POST",
            "/api/v1/namespaces/default/events",
            body={
                "metadata": {"generateName": f"{node}."},
                "involvedObject": {"kind": "Node", "name": node, "uid": node},
                "reason": reason,
                "message": message,
                "type": "Warning",
                "count": 1,
                "firstTimestamp": now,
                "lastTimestamp": now,
                "source": {"component": "kernel-monitor", "host": node},
            },
        )
    except ApiError as exc:
        print(f"npd-replay: event not written: {exc}", file=sys.stderr)


def follow_log(path: str, mgr: ConditionManager, kube: Kube, node: str, stop: float) -> None:
    """The kmsg monitor: match each line against the rules and update the condition; the
    Event goes out asynchronously, as NPD's event broadcaster does."""
    fd = os.open(path, os.O_RDONLY)
    buf = b""
    while time.monotonic() < stop:
        chunk = os.read(fd, 65536)
        if not chunk:
            time.sleep(0.05)
            continue
        buf += chunk
        *lines, buf = buf.split(b"\n")
        for raw in lines:
            text = raw.decode(errors="replace").split(";", 1)[-1]
            cur = mgr.current("MemoryFragmented")
            if cur is None:
                continue
            m = RULE.search(text)
            if m and int(m.group(1)) >= 4 and cur.status != "True":
                mgr.update(
                    replace(
                        cur,
                        status="True",
                        reason="HighOrderAllocationFailure",
                        message=text.strip(),
                        transition=time.time(),
                    )
                )
                threading.Thread(
                    target=_post_event,
                    args=(kube, node, "HighOrderAllocationFailure", text.strip()),
                    daemon=True,
                ).start()
            elif RESET in text and cur.status != "False":
                mgr.update(
                    replace(
                        cur,
                        status="False",
                        reason="NoHighOrderAllocationFailure",
                        message="no high-order allocation failure",
                        transition=time.time(),
                    )
                )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.npd")
    p.add_argument("--node", required=True)
    p.add_argument("--kubeconfig", required=True)
    p.add_argument("--kmsg", required=True, help="FIFO standing in for /dev/kmsg")
    p.add_argument("--heartbeat", type=float, default=HEARTBEAT_PERIOD)
    p.add_argument("--max-seconds", type=float, default=1800)
    args = p.parse_args(argv)
    kube = Kube.from_environment(args.kubeconfig)
    stop = time.monotonic() + args.max_seconds
    mgr = ConditionManager(_patcher(kube, args.node), heartbeat=args.heartbeat)
    for c in default_conditions(time.time()).values():
        mgr.update(c)
    threading.Thread(
        target=follow_log, args=(args.kmsg, mgr, kube, args.node, stop), daemon=True
    ).start()
    start = time.monotonic()
    k = 0
    ready = False
    while time.monotonic() < stop:  # a Go ticker: fixed phase from the start
        k += 1
        time.sleep(max(0.0, start + k * UPDATE_PERIOD - time.monotonic()))
        mgr.tick()
        if not ready and mgr.writes and not mgr.resync_needed:
            print("ready", flush=True)
            ready = True
    return 0


class NpdFleet:
    """Many nodes' NPD in steady state (nothing changes), in one thread: each node's last
    write is spread uniformly over the heartbeat period, as in a fleet running for a while."""

    def __init__(self, kube: Kube, nodes: list[str], heartbeat: float = HEARTBEAT_PERIOD) -> None:
        rng = random.Random(7)
        now = time.monotonic()
        self.managers = []
        for n in nodes:
            m = ConditionManager(
                _patcher(kube, n), heartbeat=heartbeat, latest_try=now - rng.uniform(0, heartbeat)
            )
            m.conditions = default_conditions(time.time() - 3600)
            self.managers.append(m)

    def run(self, seconds: float) -> int:
        """Tick every node every second for `seconds`; returns the writes made."""
        start = time.monotonic()
        before = sum(m.writes for m in self.managers)
        k = 0
        while time.monotonic() - start < seconds:
            k += 1
            time.sleep(max(0.0, start + k * UPDATE_PERIOD - time.monotonic()))
            for m in self.managers:
                m.tick()
        return sum(m.writes for m in self.managers) - before


if __name__ == "__main__":
    sys.exit(main())
