"""The tracing source against this machine's kernel (root, tracefs): silent high-order failures
counted while the log shows at most one per 10 s, a polluter in its own cgroup named with that
cgroup, our instance gone after stop and after kill -9, the global tracer untouched.

How failures are provoked: every free block of order >= 9 is taken into the hugetlb pool
(kernel-side, in milliseconds; again before each round of faults, for what was freed or
compacted meanwhile; restored at once after; proactive compaction off meanwhile), then a child
faults THPs in a MADV_HUGEPAGE region with defrag=never: each fault's order-9 allocation
(GFP_TRANSHUGE_LIGHT, which holds __GFP_NOWARN) fails and falls back to 4 KiB pages. The
polluter fills pipes (unmovable pages) until the allocator steals Movable pageblocks.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.assess.tracing import summarize
from agent.kernel.procfs import ProcReader
from agent.kernel.tracefollow import TraceSource
from agent.kernel.tracefs import INSTANCE, TraceInstance, find_tracefs
from tests.chart_tools import AGENT_BIN
from tests.cluster.plane import free_port
from tests.cluster.scrape import scrape
from tests.cluster.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]
TRACEFS = Path("/sys/kernel/tracing")
THP = Path("/sys/kernel/mm/transparent_hugepage")
NR_HUGEPAGES = Path("/proc/sys/vm/nr_hugepages")
PROACTIVE = Path("/proc/sys/vm/compaction_proactiveness")

# The child scripts' start: the free order >= 9 blocks and the hugetlb pool (`old`: restored by
# the script).
POOL = r"""
def free_huge_blocks(order=9):
    n = 0
    for line in open("/proc/buddyinfo"):
        counts = [int(x) for x in line.split()[4:]]
        n += sum(c << (o - order) for o, c in enumerate(counts) if o >= order)
    return n
NR = "/proc/sys/vm/nr_hugepages"
old = open(NR).read().strip()
"""

EXHAUST = (
    POOL
    + r"""
import mmap, sys, time
open("/proc/self/comm", "w").write("memfrag-thp")
HPAGE = 2 << 20
attempts = 0
try:
    end = time.monotonic() + float(sys.argv[1])
    while time.monotonic() < end:
        # take the blocks freed or compacted since: only failing faults remain
        open(NR, "w").write(str(int(open(NR).read()) + free_huge_blocks()))
        m = mmap.mmap(-1, (256 << 20) + HPAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        m.madvise(mmap.MADV_HUGEPAGE)
        for off in range(0, 256 << 20, HPAGE):
            m[off] = 1
            attempts += 1
        m.close()
finally:
    open(NR, "w").write(old)
print(attempts)
"""
)

POLLUTER = r"""
import fcntl, os, resource, sys
open("/proc/self/comm", "w").write("memfrag-pollute")
resource.setrlimit(resource.RLIMIT_NOFILE, (8192, 8192))
sys.stdin.readline()  # the test moves us into our cgroups first
pipes = []
for _ in range(int(sys.argv[1])):
    r, w = os.pipe()
    fcntl.fcntl(w, 1031, 1 << 20)  # F_SETPIPE_SZ: 1 MiB of unmovable pipe pages
    os.set_blocking(w, False)
    try:
        os.write(w, b"x" * (1 << 20))
    except BlockingIOError:
        pass
    pipes.append((r, w))
print(len(pipes), flush=True)
sys.stdin.readline()
"""

HOLDER = r"""
import sys, time
from agent.kernel.tracefollow import TraceSource
s = TraceSource(4, 60, 9)
s.start()
print("started", flush=True)
time.sleep(600)
"""


@pytest.fixture(scope="module")
def tracefs() -> Iterator[Path]:
    mounted = (TRACEFS / "instances").is_dir()
    if not mounted:
        subprocess.run(["mount", "-t", "tracefs", "nodev", str(TRACEFS)], check=True)
    yield find_tracefs()
    TraceInstance(TRACEFS).remove()
    if not mounted:
        subprocess.run(["umount", str(TRACEFS)], check=False)


def _selected(path: Path) -> str:
    text = path.read_text()
    return text[text.index("[") + 1 : text.index("]")]


@pytest.fixture
def thp_without_defrag() -> Iterator[None]:
    """THP faults that neither reclaim nor compact (defrag=never), no proactive compaction,
    all restored after."""
    enabled, defrag = _selected(THP / "enabled"), _selected(THP / "defrag")
    pool, proactive = NR_HUGEPAGES.read_text(), PROACTIVE.read_text()
    PROACTIVE.write_text("0")
    if enabled == "never":
        (THP / "enabled").write_text("madvise")
    (THP / "defrag").write_text("never")
    try:
        yield
    finally:
        NR_HUGEPAGES.write_text(pool)
        PROACTIVE.write_text(proactive)
        (THP / "defrag").write_text(defrag)
        (THP / "enabled").write_text(enabled)


def _global_state(tracefs: Path) -> dict[str, str]:
    files = ["current_tracer", "tracing_on", "set_event", "buffer_size_kb", "trace_clock"]
    for system, name in (("kmem", "mm_page_alloc"), ("kmem", "mm_page_alloc_extfrag")):
        files += [f"events/{system}/{name}/enable", f"events/{system}/{name}/filter"]
    files += ["events/compaction/mm_compaction_begin/enable"]
    return {f: (tracefs / f).read_text() for f in files}


def test_silent_failures_counted_while_the_log_shows_at_most_one_per_10s(
    tracefs: Path, thp_without_defrag: None
) -> None:
    """`memfrag-agent trace` end to end, the kernel log read over the same interval."""
    seconds = 12.0
    cli = subprocess.Popen(
        [sys.executable, "-m", "agent", "trace", "--seconds", str(seconds), "-o", "json"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    time.sleep(2)  # the instance is up and the log is being read
    child = subprocess.run(
        [sys.executable, "-c", EXHAUST, "5"], capture_output=True, text=True, check=True
    )
    out, _ = cli.communicate(timeout=120)
    assert cli.returncode == 0
    report = json.loads(out)
    s = report["summary"]
    attempts = int(child.stdout)
    log_lines = report["kernel_log"]["failure_lines"]
    print(f"THP attempts {attempts}, traced failures {s['failed']}, log lines {log_lines}")
    assert s["failed"] >= 100  # the pool took every order-9 block: faults must fail
    order9 = {o["order"]: o for o in s["by_order"]}[9]
    assert order9["silent"] == order9["failed"] > 0  # GFP_TRANSHUGE_LIGHT holds __GFP_NOWARN
    assert s["failing"][0]["who"]["comm"] == "memfrag-thp"
    assert log_lines <= seconds / 10 + 1 < s["failed"]
    assert report["sentence"].startswith(f"{s['failed']} high-order allocations failed")
    assert not (tracefs / "instances" / INSTANCE).exists()


def test_polluter_in_its_own_cgroup_is_named_with_that_cgroup(tracefs: Path) -> None:
    name = f"memfrag-test-{os.getpid()}"
    v1 = Path("/sys/fs/cgroup/memory") / name
    v2 = Path("/sys/fs/cgroup/unified") / name
    made = [d for d in (v1, v2) if d.parent.is_dir()]
    for d in made:
        d.mkdir()
    obs = ProcReader().observe(with_pagetypeinfo=True)
    assert obs.pagetype is not None
    source = TraceSource(4, 600, obs.pagetype.pageblock_order)
    source.start()
    child = subprocess.Popen(
        [sys.executable, "-c", POLLUTER, "1024"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdin is not None and child.stdout is not None
    try:
        for d in made:
            (d / "cgroup.procs").write_text(str(child.pid))
        child.stdin.write("go\n")
        child.stdin.flush()
        assert int(child.stdout.readline()) == 1024
        time.sleep(1)
    finally:
        source.stop()
        child.communicate("done\n", timeout=60)
        for d in made:
            d.rmdir()
    events, pids, _ = source.window.snapshot()
    s = summarize(events, 600, 4, pids, {})
    ours = [r for r in s.polluters if r.who.comm == "memfrag-pollute"]
    assert ours, f"no steal by the polluter among {s.polluters}"
    assert ours[0].who.cgroup == f"/{name}" and ours[0].count > 0
    assert s.polluters[0].who.comm == "memfrag-pollute"  # the biggest polluter of the window
    assert ours[0].who.pod_uid is None


def test_instance_gone_after_stop_and_after_kill9_and_the_global_tracer_untouched(
    tracefs: Path,
) -> None:
    before = _global_state(tracefs)
    other = tracefs / "instances" / f"other-tool-{os.getpid()}"
    other.mkdir()
    (other / "events/kmem/mm_page_alloc/enable").write_text("1")
    ours = tracefs / "instances" / INSTANCE
    try:
        source = TraceSource(4, 60, 9)
        source.start()
        assert (ours / "events/kmem/mm_page_alloc/enable").read_text().strip() == "1"
        assert (
            "pfn == 0xffffffffffffffff" in (ours / "events/kmem/mm_page_alloc/filter").read_text()
        )
        assert (ours / "trace_clock").read_text().count("[mono]") == 1
        source.stop()
        source.stop()  # twice is fine
        assert not ours.exists()

        holder = subprocess.Popen(
            [sys.executable, "-c", HOLDER], cwd=ROOT, stdout=subprocess.PIPE, text=True
        )
        assert holder.stdout is not None and holder.stdout.readline() == "started\n"
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=30)
        assert ours.is_dir()  # a killed agent leaves its instance behind
        again = TraceSource(4, 60, 9)
        again.start()
        assert again.stale_removed
        again.stop()
        assert not ours.exists()
        assert other.is_dir()
        assert (other / "events/kmem/mm_page_alloc/enable").read_text().strip() == "1"
        assert _global_state(tracefs) == before
    finally:
        other.rmdir()


def _standalone_tracing_agent(
    tmp_path: Path, alloc_failures: str = "always", poll: float = 1
) -> tuple[int, subprocess.Popen[bytes], Path]:
    """`memfrag-agent run --standalone` with tracing on (the failure counter `always` armed
    unless told), a 1 s poll and no remediation: its metrics port, the process and its log
    file."""
    port = free_port()
    config = {
        "sources": {
            "poll_interval_seconds": poll,
            "pagetypeinfo_interval_seconds": max(poll, 300),
            "tracing_enabled": True,
            "tracing_alloc_failures": alloc_failures,
        },
        "reporting": {"metrics_port": port, "metrics_address": "127.0.0.1"},
        "remediation": {"mode": "off"},
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    log = tmp_path / "agent.log"
    env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "NODE_NAME")}
    agent = subprocess.Popen(
        [str(AGENT_BIN), "run", "--standalone", "--config", str(tmp_path / "config.yaml")],
        env=env,
        stdout=open(log, "ab"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
    )
    return port, agent, log


def test_the_daemon_with_tracing_on_counts_the_silent_failures_the_log_never_shows(
    tracefs: Path, thp_without_defrag: None, tmp_path: Path
) -> None:
    """`memfrag-agent run --standalone` with sources.tracing_enabled: the provoked order-9
    failures in memfrag_traced_allocation_failures_total{silent="true"} and the tick's Event,
    none of them in the kernel log; the instance gone after SIGTERM."""
    port, agent, log = _standalone_tracing_agent(tmp_path)
    url = f"http://127.0.0.1:{port}/metrics"
    silent9 = 'memfrag_traced_allocation_failures_total{order="9",silent="true"}'
    try:
        wait_for(lambda: "tracing started" in log.read_text(errors="replace"), "tracing", 60)
        before = wait_for(lambda: _scraped(url), "the agent's /metrics", 30)
        assert before[silent9] == 0  # created at 0
        assert before['memfrag_traced_allocation_failures_total{order="4",silent="false"}'] == 0
        child = subprocess.run(
            [sys.executable, "-c", EXHAUST, "5"], capture_output=True, text=True, check=True
        )
        after = wait_for(lambda: _scraped(url, silent9, 100), "traced failures", 60)
        told = wait_for(
            lambda: [x for x in log.read_text(errors="replace").splitlines() if "traced: " in x],
            "the HighOrderAllocationFailed Event (a log line standalone)",
            30,
        )
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(30)
    logged = sum(
        v
        for k, v in after.items()
        if k.startswith("memfrag_kernel_log_findings_total") and "page_allocation_failure" in k
    )
    print(f"THP attempts {child.stdout.strip()}, traced {after[silent9]}, log findings {logged}")
    assert logged < after[silent9]  # GFP_TRANSHUGE_LIGHT holds __GFP_NOWARN: never printed
    assert len(told) == 1 and "of them silent" in told[0] and "HighOrderAllocationFailed" in told[0]
    assert after["memfrag_tracing_errors_total"] == 0
    assert agent.returncode == 0
    assert not (tracefs / "instances" / INSTANCE).exists()


# Every free order >= 9 block into the hugetlb pool, then one huge page more: with none free
# that allocation (GFP_HIGHUSER_MOVABLE | __GFP_RETRY_MAYFAIL) must take the slow path at order
# 9 (kswapd woken, direct compaction); the pool is restored after.
SLOW_PATH = (
    POOL
    + r"""
try:
    open(NR, "w").write(str(int(open(NR).read()) + free_huge_blocks()))
    open(NR, "w").write(str(int(open(NR).read()) + 1))
finally:
    open(NR, "w").write(old)
"""
)


def _log_records(log: Path) -> list[dict[str, Any]]:
    lines = log.read_text(errors="replace").splitlines()
    return [json.loads(x) for x in lines if x.startswith("{")]


def test_at_risk_the_counter_is_disarmed_at_rest_and_a_slow_path_event_arms_it(
    tracefs: Path, thp_without_defrag: None, tmp_path: Path
) -> None:
    """The default policy on this (healthy) node: the instance is up with kmem:mm_page_alloc
    disabled; an order-9 allocation entering the slow path arms it from the reader's thread
    (the poll is an hour: no tick could), and the silent THP failures that follow are counted."""
    port, agent, log = _standalone_tracing_agent(tmp_path, "at-risk", poll=3600)
    url = f"http://127.0.0.1:{port}/metrics"
    enable = tracefs / "instances" / INSTANCE / "events" / "kmem" / "mm_page_alloc" / "enable"
    silent9 = 'memfrag_traced_allocation_failures_total{order="9",silent="true"}'
    armed = "memfrag_tracing_alloc_failures_armed"
    try:
        wait_for(lambda: "tracing started" in log.read_text(errors="replace"), "tracing", 60)
        wait_for(
            lambda: "assessment changed" in log.read_text(errors="replace"), "the first tick", 60
        )
        rest = wait_for(lambda: _scraped(url), "the agent's /metrics", 30)
        assert rest[armed] == 0 and enable.read_text().strip() == "0"  # disarmed at rest
        # the slow-path events are on, filtered to the order, in our instance
        kswapd = tracefs / "instances" / INSTANCE / "events" / "vmscan" / "mm_vmscan_wakeup_kswapd"
        assert kswapd.joinpath("enable").read_text().strip() == "1"
        assert "order >= 4" in kswapd.joinpath("filter").read_text()
        subprocess.run([sys.executable, "-c", SLOW_PATH], check=True, timeout=120)
        wait_for(lambda: _scraped(url, armed, 1), "the counter armed", 30)
        assert enable.read_text().strip() == "1"
        child = subprocess.run(
            [sys.executable, "-c", EXHAUST, "5"], capture_output=True, text=True, check=True
        )
        after = wait_for(lambda: _scraped(url, silent9, 100), "traced failures", 60)
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(30)
    arms = [
        x for x in _log_records(log) if x.get("msg") == "tracing: allocation failure counter armed"
    ]
    print(f"THP attempts {child.stdout.strip()}, traced {after[silent9]}, arms {arms}")
    assert [x["why"] for x in arms] == ["slow-path"]
    assert after["memfrag_tracing_errors_total"] == 0
    assert agent.returncode == 0
    assert not (tracefs / "instances" / INSTANCE).exists()


def _scraped(url: str, sample: str = "", at_least: float = 0) -> dict[str, float] | None:
    """The agent's samples once it answers (and once `sample` reached `at_least`)."""
    try:
        m = scrape(url)
    except OSError:
        return None
    return m if not sample or m.get(sample, 0) >= at_least else None


def test_the_daemon_counts_a_manual_compaction_by_node_kind_and_result(
    tracefs: Path, tmp_path: Path
) -> None:
    """`echo 1 > compact_memory` while the standalone daemon traces: every zone's compaction in
    memfrag_compactions_total{kind="manual"} and the duration histogram (the series were at 0
    before), on the NUMA node /proc/zoneinfo gives the zone."""
    port, agent, log = _standalone_tracing_agent(tmp_path)
    url = f"http://127.0.0.1:{port}/metrics"
    runs = 'memfrag_compaction_duration_seconds_count{kind="manual",numa_node="0"}'

    def manual(m: dict[str, float]) -> float:
        return sum(
            v
            for k, v in m.items()
            if k.startswith("memfrag_compactions_total{") and 'kind="manual"' in k
        )

    try:
        wait_for(lambda: "tracing started" in log.read_text(errors="replace"), "tracing", 60)
        before = wait_for(lambda: _scraped(url), "the agent's /metrics", 30)
        assert before[runs] == 0 and manual(before) == 0  # created at 0
        Path("/proc/sys/vm/compact_memory").write_text("1\n")
        after = wait_for(lambda: _scraped(url, runs, 1), "the traced compaction", 30)
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(30)
    zones = sum(1 for z in ProcReader().observe(with_pagetypeinfo=False).zoneinfo or ())
    print(f"manual compactions traced {manual(after)} of {zones} zones, {after[runs]} on node 0")
    assert 1 <= manual(after) <= zones  # one per populated zone at most
    assert manual(after) == sum(
        v for k, v in after.items() if k.startswith("memfrag_compaction_duration_seconds_count")
    )
    assert after["memfrag_tracing_errors_total"] == 0
    assert agent.returncode == 0


def test_a_reload_that_changes_the_target_order_refilters_the_live_instance(
    tracefs: Path, tmp_path: Path
) -> None:
    """The ConfigMap's assessment.target_order changes: the daemon's instance is made again with
    the new in-kernel filter, without a restart (before: the order of the start stayed)."""
    port = free_port()
    config: dict[str, dict[str, Any]] = {
        "assessment": {"target_order": 4},
        "sources": {"poll_interval_seconds": 1, "tracing_enabled": True},
        "reporting": {"metrics_port": port, "metrics_address": "127.0.0.1"},
        "remediation": {"mode": "off"},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    log = tmp_path / "agent.log"
    env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "NODE_NAME")}
    agent = subprocess.Popen(
        [str(AGENT_BIN), "run", "--standalone", "--config", str(path)],
        env=env,
        stdout=open(log, "ab"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
    )
    flt = tracefs / "instances" / INSTANCE / "events" / "kmem" / "mm_page_alloc" / "filter"

    def filtered(order: int) -> bool:
        try:
            return f"order >= {order} " in flt.read_text()
        except OSError:
            return False

    try:
        wait_for(lambda: filtered(4), "the instance filtering order >= 4", 60)
        config["assessment"]["target_order"] = 6
        new = tmp_path / "config.new"
        new.write_text(yaml.safe_dump(config))
        new.replace(path)  # as the kubelet swaps a ConfigMap
        wait_for(lambda: filtered(6), "the instance filtering order >= 6", 30)
        url = f"http://127.0.0.1:{port}/metrics"
        m = wait_for(lambda: _scraped(url), "the agent's /metrics", 30)
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(30)
    lines = [
        json.loads(x) for x in log.read_text(errors="replace").splitlines() if x.startswith("{")
    ]
    changed = [
        x for x in lines if x.get("msg") == "tracing: traced order changed, instance restarted"
    ]
    assert [(x["from_order"], x["to_order"]) for x in changed] == [(4, 6)], changed
    assert m["memfrag_tracing_errors_total"] == 0
    assert agent.returncode == 0
    assert not (tracefs / "instances" / INSTANCE).exists()
