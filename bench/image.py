"""The agent as users run it, measured at rest: the image built from the Dockerfile, installed
with `helm install` and the chart's defaults onto the real node (tests.cluster.realcluster),
reading this machine's real /proc and /dev/kmsg. After a quiet window, the RSS and CPU of the
processes in its container's cgroup (the same processes `kubectl top` would charge), beside the
venv's figure from the steady phase: the image runs the Debian-slim Python of the Dockerfile,
not this machine's."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bench.stats import proc_stat_ticks, vm_rss_kib
from tests.cluster.image import AGENT_REF, build_agent_image, build_pause_image
from tests.cluster.realcluster import NodeCluster, container_cgroup
from tests.cluster.waiting import wait_for

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "charts" / "memfrag-agent"
NAMESPACE = "kube-system"
RELEASE = "memfrag-agent"


@dataclass(frozen=True)
class Sample:
    pids: tuple[int, ...]
    rss_kib: int
    ticks: int
    cgroup_bytes: int | None  # memory.usage_in_bytes (page cache included)


def sample(cgroup: Path, proc: Path = Path("/proc")) -> Sample:
    """The cgroup's processes: their summed VmRSS and utime+stime (a process gone between the
    listing and the read is left out)."""
    pids = tuple(int(x) for x in (cgroup / "cgroup.procs").read_text().split())
    rss = ticks = 0
    seen = []
    for pid in pids:
        try:
            status = (proc / str(pid) / "status").read_text()
            stat = (proc / str(pid) / "stat").read_text()
        except OSError:
            continue
        rss += vm_rss_kib(status)
        ticks += proc_stat_ticks(stat)
        seen.append(pid)
    try:
        usage: int | None = int((cgroup / "memory.usage_in_bytes").read_text())
    except (OSError, ValueError):
        usage = None
    return Sample(tuple(seen), rss, ticks, usage)


def measure(workdir: Path, window_s: float, clk_tck: int) -> dict[str, Any]:
    """helm install with the chart's defaults (only the image set), wait for the first report,
    then `window_s` quiet seconds; the agent container's RSS and CPU over them."""
    out = REPO / "out" / "images"
    pause, pause_ref = build_pause_image(out)
    agent = build_agent_image(REPO, out)
    name, _, tag = AGENT_REF.rpartition(":")
    values = workdir / "image-values.yaml"
    workdir.mkdir(parents=True, exist_ok=True)
    values.write_text(
        yaml.safe_dump({"image": {"repository": name, "tag": tag, "pullPolicy": "Never"}})
    )
    with NodeCluster(workdir / "cluster", images=(pause, agent), pause_image=pause_ref) as c:
        c.helm("install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--values", str(values))
        c.kubectl("rollout", "status", f"daemonset/{RELEASE}", "-n", NAMESPACE, "--timeout", "300s")

        def reported() -> bool:
            node = c.get("node", c.name)
            types = {x["type"] for x in node["status"].get("conditions") or []}
            return "MemoryFragmented" in types

        wait_for(reported, "the agent pod's first report", timeout=120, every=1)
        (pod,) = c.get("pods", "-n", NAMESPACE, "-l", f"app.kubernetes.io/name={RELEASE}")["items"]
        cgroup = container_cgroup(pod, "agent")
        if cgroup is None:
            raise RuntimeError(
                f"image: no memory cgroup for the agent container of pod {pod['metadata']['name']}"
            )
        before, t0 = sample(cgroup), time.monotonic()
        time.sleep(window_s)
        after, t1 = sample(cgroup), time.monotonic()
        c.helm("uninstall", RELEASE, "--namespace", NAMESPACE, "--wait", "--timeout", "300s")
    secs = t1 - t0
    return {
        "window_s": round(secs, 1),
        "pids": list(after.pids),
        "rss_mib": round(after.rss_kib / 1024, 1),
        "cpu_percent": round((after.ticks - before.ticks) / clk_tck / secs * 100, 4),
        "cgroup_usage_mib": round(after.cgroup_bytes / 2**20, 1) if after.cgroup_bytes else None,
        "restarts": sum(
            int(cs.get("restartCount", 0)) for cs in pod["status"].get("containerStatuses") or []
        ),
    }
