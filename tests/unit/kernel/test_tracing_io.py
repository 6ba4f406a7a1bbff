"""The ftrace instance on a directory laid out like tracefs, the reader's line handling, the
bounded window, and the cgroup parsers (no kernel needed: the real one is in
tests/integration/test_tracing.py)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from agent.kernel.cgroupinfo import (
    CgroupPaths,
    parse_proc_cgroup,
    parse_v1_kmem,
    parse_v2_stat,
    pod_uid,
)
from agent.kernel.cgroups import CgroupReader
from agent.kernel.trace import Extfrag, Header, Lost, MigrateType, PageAlloc, TraceEvent
from agent.kernel.tracefollow import TraceFollower, TraceSource, TraceWindow
from agent.kernel.tracefs import NO_PAGE_PFN, TraceInstance, TracingError, events_for, find_tracefs

EVENTS = events_for(4, 9)


def _tracefs(tmp_path: Path, missing: str = "") -> Path:
    """A directory shaped like tracefs: instances/ and the global events/ tree."""
    (tmp_path / "instances").mkdir()
    for e in EVENTS:
        if e.name != missing:
            (tmp_path / "events" / e.system / e.name).mkdir(parents=True)
            (tmp_path / "events" / e.system / e.name / "enable").write_text("0")
    return tmp_path


def test_filters_keep_only_what_we_count() -> None:
    by_name = {e.name: e.filter for e in EVENTS}
    assert by_name["mm_page_alloc"] == "order >= 4 && pfn == 0xffffffffffffffff"
    assert NO_PAGE_PFN == 2**64 - 1
    assert by_name["mm_page_alloc_extfrag"] == "fallback_order < 9 || change_ownership == 1"
    assert {e.name: e.filter for e in events_for(4, None)}["mm_page_alloc_extfrag"] == ""


def test_the_failure_counter_may_start_disarmed_and_slow_path_events_are_at_the_order() -> None:
    assert all(e.enabled for e in EVENTS)
    disarmed = {e.name: e for e in events_for(4, 9, armed=False)}
    assert not disarmed["mm_page_alloc"].enabled
    assert disarmed["mm_page_alloc"].filter == "order >= 4 && pfn == 0xffffffffffffffff"
    assert all(e.enabled for n, e in disarmed.items() if n != "mm_page_alloc")
    for name in (
        "mm_vmscan_wakeup_kswapd",
        "mm_vmscan_direct_reclaim_begin",
        "mm_compaction_deferred",
    ):
        assert disarmed[name].filter == "order >= 4"


def _instance_files(t: TraceInstance) -> None:
    """The files `start` writes, as the kernel makes them in a new instance."""
    for name in ("buffer_size_kb", "trace_clock", "tracing_on"):
        (t.path / name).write_text("")
    for e in EVENTS:
        d = t.path / "events" / e.system / e.name
        d.mkdir(parents=True)
        (d / "filter").write_text("")
        (d / "enable").write_text("0")


def test_arm_enables_and_disables_the_counter_in_our_instance_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tracefs = _tracefs(tmp_path)
    source = TraceSource(4, 60, 9, tracefs, armed=False)
    real_mkdir = os.mkdir

    def mkdir(path: object, *args: object) -> None:
        real_mkdir(path)  # type: ignore[arg-type]
        if Path(str(path)) == source.instance.path:
            _instance_files(source.instance)

    monkeypatch.setattr(os, "mkdir", mkdir)
    source.instance.start(source.events)
    enable = source.instance.path / "events/kmem/mm_page_alloc/enable"
    kswapd = source.instance.path / "events/vmscan/mm_vmscan_wakeup_kswapd/enable"
    assert (enable.read_text(), kswapd.read_text()) == ("0\n", "1\n")
    source.arm(True)
    assert enable.read_text() == "1\n" and source.armed
    enable.write_text("untouched")
    source.arm(True)  # already armed: no write
    assert enable.read_text() == "untouched"
    source.arm(False)
    assert enable.read_text() == "0\n" and not source.armed
    assert (tracefs / "events/kmem/mm_page_alloc/enable").read_text() == "0"  # the global one
    enable.unlink()
    with pytest.raises(TracingError, match="mm_page_alloc/enable: cannot open"):
        source.arm(True)
    assert not source.armed


def test_unmounted_tracefs_is_said_with_the_paths(tmp_path: Path) -> None:
    with pytest.raises(TracingError, match=f"tracefs is not mounted at {tmp_path}"):
        find_tracefs((tmp_path,))
    assert find_tracefs((tmp_path / "nope", _tracefs(tmp_path))) == tmp_path


def test_missing_event_is_named_before_anything_is_created(tmp_path: Path) -> None:
    t = TraceInstance(_tracefs(tmp_path, missing="mm_page_alloc_extfrag"))
    with pytest.raises(TracingError, match="no tracepoint kmem:mm_page_alloc_extfrag"):
        t.start(EVENTS)
    assert not t.path.exists()


def test_a_refused_write_leaves_no_instance(tmp_path: Path) -> None:
    """A plain directory has no buffer_size_kb: opening it for writing fails like a kernel
    that refuses, and start removes what it made."""
    t = TraceInstance(_tracefs(tmp_path))
    with pytest.raises(TracingError, match="buffer_size_kb"):
        t.start(EVENTS)
    assert not t.path.exists()


def test_stale_instance_is_removed_and_reported(tmp_path: Path) -> None:
    t = TraceInstance(_tracefs(tmp_path))
    t.path.mkdir()
    assert t.remove() is True
    assert t.remove() is False


def test_busy_instance_is_another_reader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    t = TraceInstance(_tracefs(tmp_path))

    def busy(path: object) -> None:
        raise OSError(errno.EBUSY, "Device or resource busy")

    monkeypatch.setattr(os, "rmdir", busy)
    monkeypatch.setattr("agent.kernel.tracefs.time.sleep", lambda s: None)
    with pytest.raises(TracingError, match="another process reads its trace_pipe"):
        t.remove()


def test_instance_name_is_one_component(tmp_path: Path) -> None:
    for name in ("", "..", "a/b"):
        with pytest.raises(TracingError):
            TraceInstance(tmp_path, name)


FAIL = (
    b"  python3-7   [001] ..... 5.000000: mm_page_alloc: page=0000000000000000 pfn=0x0 "
    b"order=9 migratetype=1 gfp_flags=GFP_TRANSHUGE_LIGHT"
)


def test_follower_hands_events_and_unparsed_lines(tmp_path: Path) -> None:
    seen: list[object] = []
    f = TraceFollower(TraceInstance(tmp_path), seen.append, on_unparsed=seen.append)
    f.handle(FAIL)
    f.handle(b"garbage")
    f.handle(b"  sh-1 [000] ..... 1.0: tracing_mark_write: memfrag-agent: stop")
    f.handle(b"")
    assert isinstance(seen[0], PageAlloc) and seen[1] == b"garbage" and len(seen) == 2
    assert f.lines == 3


def _alloc(pid: int, ts: float) -> PageAlloc:
    return PageAlloc(Header("p", pid, 0, ts), 9, MigrateType.MOVABLE, "X", True, True)


def test_window_is_bounded_in_events_and_pids() -> None:
    now = [100.0]
    resolved: list[int] = []

    def resolve(pid: int) -> CgroupPaths | None:
        resolved.append(pid)
        return CgroupPaths(None, f"/pid{pid}")

    w = TraceWindow(10, resolve, max_events=5, clock=lambda: now[0])
    for i in range(8):
        w.add(_alloc(1, 95.0 + i * 0.1))
    events, _, dropped = w.snapshot()
    assert len(events) == 5 and dropped == 3 and resolved == [1]
    assert w.totals["failed"] == 8 and w.totals["silent"] == 8
    for pid in range(5000):
        w.add(_alloc(pid + 2, 99.0))
    assert len(w.snapshot()[1]) == 4096
    now[0] = 200.0
    w.add(Lost(0, 7))
    events, _, _ = w.snapshot()
    assert events == (Lost(0, 7),) and w.totals["lost"] == 7


def test_window_keeps_steals_and_prunes_by_trace_time() -> None:
    w = TraceWindow(10, lambda pid: None, clock=lambda: 50.0)
    steal = Extfrag(
        Header("x", 3, 0, 45.0), 0, 10, MigrateType.UNMOVABLE, MigrateType.MOVABLE, False, True
    )
    old: TraceEvent = _alloc(4, 30.0)
    w.add(old)
    w.add(steal)
    events, pids, _ = w.snapshot()
    assert events == (steal,) and pids == {4: None, 3: None}


def test_proc_cgroup_hybrid_and_pure_v2() -> None:
    hybrid = (
        "9:name=systemd:/\n4:memory:/kubepods/burstable/pod0f1e2d3c-aaaa-bbbb-cccc-"
        "0123456789ab/abc\n1:cpu:/\n0::/\n"
    )
    p = parse_proc_cgroup(hybrid)
    assert p.path == "/kubepods/burstable/pod0f1e2d3c-aaaa-bbbb-cccc-0123456789ab/abc"
    assert p.unified == "/"
    assert parse_proc_cgroup("0::/system.slice/x.service\n").path == "/system.slice/x.service"
    assert parse_proc_cgroup("garbage\n::\n5:memory\n").path is None


def test_pod_uid_from_both_drivers() -> None:
    uid = "0f1e2d3c-aaaa-bbbb-cccc-0123456789ab"
    assert pod_uid(f"/kubepods/besteffort/pod{uid}/ctr") == uid
    slice_uid = uid.replace("-", "_")
    systemd = f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{slice_uid}.slice"
    assert pod_uid(systemd) == uid
    assert pod_uid("/system.slice/docker.service") is None


def test_kernel_memory_parsers() -> None:
    stat = (
        "anon 100\nslab_unreclaimable 4096\nkernel_stack 16384\npagetables 8192\n"
        "sock 0\npercpu 64\nslab 1\n"
    )
    km = parse_v2_stat(stat)
    assert km is not None and km.total == 4096 + 16384 + 8192 + 64
    assert dict(km.parts)["kernel_stack"] == 16384
    assert parse_v2_stat("anon 1\n") is None
    v1 = parse_v1_kmem("285544448\n")
    assert v1 is not None and v1.total == 285544448
    assert parse_v1_kmem("-1\n") is None and parse_v1_kmem("x") is None


def test_pod_kernel_memory_v1_and_v2_trees(tmp_path: Path) -> None:
    uid_a, uid_b = "11111111-2222-3333-4444-555555555555", "66666666-7777-8888-9999-000000000000"
    v1 = tmp_path / "v1" / "memory" / "kubepods" / "burstable" / f"pod{uid_a}"
    v1.mkdir(parents=True)
    (v1 / "memory.kmem.usage_in_bytes").write_text("8192\n")
    assert CgroupReader(tmp_path / "v1").pod_kernel_memory()[uid_a].total == 8192
    # socket buffers are charged apart on v1 (memory.kmem.tcp): before, left out
    (v1 / "memory.kmem.tcp.usage_in_bytes").write_text("4096\n")
    km = CgroupReader(tmp_path / "v1").pod_kernel_memory()[uid_a]
    assert km.total == 12288 and km.parts == (("kmem", 8192), ("kmem_tcp", 4096))
    v2 = tmp_path / "v2" / "kubepods.slice" / f"kubepods-pod{uid_b.replace('-', '_')}.slice"
    v2.mkdir(parents=True)
    (tmp_path / "v2" / "cgroup.controllers").write_text("memory\n")
    (v2 / "memory.stat").write_text("percpu 10\nsock 20\n")
    got = CgroupReader(tmp_path / "v2").pod_kernel_memory()
    assert got[uid_b].total == 30 and uid_a not in got


def test_zone_start_pfns_map_compaction_events_to_nodes() -> None:
    """mm_compaction_begin names a zone by its start pfn: zoneinfo's start_pfn, per node."""
    from agent.kernel.zoneinfo import parse_zoneinfo

    root = Path(__file__).resolve().parents[2] / "fixtures" / "proc"
    zones = parse_zoneinfo((root / "vm-6.18-x86_64" / "zoneinfo").read_text())
    starts = {z.zone: z.start_pfn for z in zones}
    assert (starts["DMA"], starts["DMA32"], starts["Normal"]) == (1, 0x1000, 0x100000)
    two = parse_zoneinfo((root / "kvm-2node-6.6-cma-isolate" / "zoneinfo").read_text())
    nodes = {z.start_pfn: z.node for z in two if z.start_pfn is not None and z.managed}
    assert set(nodes.values()) == {0, 1}
