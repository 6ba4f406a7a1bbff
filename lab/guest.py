#!/usr/bin/env python3
"""Runs inside the lab VM (lab/run.py boots it): fragment this kernel's memory on purpose, and
measure what each remediation strategy gets back and what it costs a running workload.

Scenarios (each rebuilt from a clean, compacted start before every strategy):
  movable       anonymous memory fills the free memory until no order>=4 block is left, then
                one page of every buddy pair of physical frames is released (madvise
                MADV_DONTNEED; frames from /proc/self/pagemap): free memory in order-0 holes
                between movable pages, which compaction can migrate.
  reclaimable   an anonymous ballast takes most of the memory; the rest fills with dentry slab
                (negative dentries) in alternating runs of two directories; then one directory
                is removed: holes between reclaimable slab pages.
  kernel-mixed  kernel pages mixed with cache: the same ballast, the rest filled with pipe
                buffers one page at a time alternately into two sets of pipes, one set closed:
                holes between pipe pages (unmovable), next to movable ballast and page cache.
  hopeless      anonymous memory fills the free memory (no ballast), one page of every
                order-4-aligned physical block of it is pinned long-term (io_uring registered
                buffers: FOLL_PIN|FOLL_LONGTERM), one page of every buddy pair of the rest is
                released, then the page cache is read into the holes: every order-4 block holds a
                pinned page, so neither compaction nor dropping caches can free one.
  numa          (the 2-node guest) the movable scenario with its memory bound to NUMA node 1;
                node 0 stays healthy and runs the latency probe.
A page cache of a known size (a 32 MiB file, read a page at a time between the fill's pages) is
present in every scenario, so what a strategy drops is measured.

Strategies:
  none       wait (kcompactd at the default vm.compaction_proactiveness 20), up to none_wait s
  seed       the incident's manual fix: echo 3 > drop_caches; echo 1 > compact_memory
  proactive  vm.compaction_proactiveness 90 (kcompactd's own proactive compaction), given the
             agent's time budget
  agent      the daemon itself: `memfrag-agent run --standalone` (python3 -m agent) with
             remediation.mode on, defaults otherwise, polling every sources.poll_interval_seconds;
             what it did is read from its JSON log and its /metrics

Every row also measures the latency probe (lab/probe.py) during the fix, the CPU seconds spent,
the time to read the page cache back, and the free-block series (series-*.json).

Arguments are key=value (from the kernel command line, lab.args=...); lists use '+'.
Results: /results/lab.json, rewritten after every row.
"""

from __future__ import annotations

import array
import contextlib
import ctypes
import dataclasses
import errno
import fcntl
import json
import os
import platform
import resource
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from agent.assess.verdict import Assessment, assess
from agent.config.model import Config
from agent.kernel.kmsg import scan
from agent.kernel.procfs import ProcReader
from lab.labcalc import (
    BuddyRow,
    blocks_ge,
    cpu_busy_ticks,
    kcompactd_score,
    latency_summary,
    log_ts_seconds,
    metric_by,
    metric_sum,
    parse_buddyinfo,
    parse_metrics,
    parse_zoneinfo_present,
    proactive_wmark_high,
    proc_cpu_ticks,
)

PAGE = 4096
MIB = 1 << 20
VM = Path("/proc/sys/vm")
RESULTS = Path("/results/lab.json")
REPO = Path(__file__).resolve().parents[1]  # /opt/memfrag in the guest (lab-init copies it)
EXPECTED_CAUSE = {
    "movable": "movable",
    "reclaimable": "reclaimable",
    "kernel-mixed": "unmovable",
    "hopeless": "movable",  # anonymous pages in Movable pageblocks, pinned
    "numa": "movable",
}
TRACEFS = Path("/sys/kernel/tracing")
METRICS_PORT = 9808
CLK_TCK = os.sysconf("SC_CLK_TCK")
NODES = sorted(int(p.name[4:]) for p in Path("/sys/devices/system/node").glob("node[0-9]*")) or [0]
SYSCTLS = (
    "min_free_kbytes",
    "compaction_proactiveness",
    "extfrag_threshold",
    "watermark_boost_factor",
    "watermark_scale_factor",
)
# The slab and pipe phases stop before kswapd would start reclaiming the page cache (at the low
# watermark, about 1 MiB with the build's min_free_kbytes), so every build keeps the same cache.
FREE_FLOOR_KIB = 4 * 1024
SETTLE_SECONDS = 1.0  # the daemon's pause between an action and its re-assessment (strategy seed)

OPTS: dict[str, Any] = {
    "scenarios": "movable+reclaimable+kernel-mixed+hopeless",
    "strategies": "none+seed+proactive+agent",
    "none_wait": 45,  # seconds the 'none' strategy waits for kcompactd
    "spin_seconds": 3,  # the 'spin' control's busy time
    "agent_poll": None,  # seconds between the agent's polls; default: the config's
    "agent_budget": 60,  # seconds the agent (and proactive compaction) may run
    "room_mib": 96,  # free memory the ballast leaves for the slab/pipe phase
    "cache_mib": 32,  # page cache read in before every build
    "stop_blocks": 8,  # fill until at most this many order>=4 blocks are free
    # movable/numa: > 0: punch holes only while kcompactd's fragmentation score stays below
    # this (its proactive compaction starts above 90 at the default proactiveness 20), with a
    # free order-9 block, up to hole_mib; 0: every buddy pair (lab/README.md, movable)
    "hole_score": 0,
    "hole_mib": 64,
    "build_min_free_kbytes": 512,  # vm.min_free_kbytes while building (restored after)
    "probe": 1,  # try to provoke a real high-order allocation failure at the end
    "failure_probe": 1,  # agent rows: failing allocations, traced vs logged by the daemon
    "agent_first": 1,  # 1: the daemon starts before the agent row's build (remediation off)
    "verbose": 0,  # 1: the agent's assessment message of every build on the console
    "deadline": 3300,  # seconds for the whole run; later runs are skipped
}

libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [
    ctypes.c_void_p,
    ctypes.c_size_t,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_long,
]
libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
libc.syscall.restype = ctypes.c_long
PROT_RW, MAP_PRIVATE_ANON_NORESERVE = 0x3, 0x2 | 0x20 | 0x4000
MADV_DONTNEED, MADV_HUGEPAGE, MADV_NOHUGEPAGE = 4, 14, 15
SYS_SET_MEMPOLICY, MPOL_DEFAULT, MPOL_BIND = 238, 0, 2  # x86_64
PFN_MASK = (1 << 55) - 1
SYS_ADD_KEY, SYS_KEYCTL = 248, 250  # x86_64
SYS_IO_URING_SETUP, SYS_IO_URING_REGISTER, IORING_REGISTER_BUFFERS = 425, 427, 0  # x86_64
KEY_SPEC_PROCESS_KEYRING, KEYCTL_CLEAR = -2, 7

T0 = time.monotonic()
reader = ProcReader("/proc", "/sys")
CFG = Config()


def log(msg: str) -> None:
    print(f"lab [{time.monotonic() - T0:6.1f}s] {msg}", flush=True)


# --- /proc --------------------------------------------------------------------------------------
def buddy() -> list[BuddyRow]:
    return parse_buddyinfo(Path("/proc/buddyinfo").read_text())


def blocks_ge4(rows: list[BuddyRow] | None = None, node: int | None = None) -> int:
    """Free blocks of order >= 4 in the workload zones (every zone but the 16 MiB ISA DMA zone),
    larger blocks counted as several: sum(count[o] << (o - 4)); `node`: that NUMA node only."""
    return blocks_ge(buddy() if rows is None else rows, 4, node)


def workload_buddy() -> dict[str, list[int]]:
    return {f"{n}/{z}": cs for n, z, cs in buddy() if z != "DMA"}


def meminfo() -> dict[str, int]:
    out = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        k, _, v = line.partition(":")
        out[k] = int(v.split()[0])
    return out


def vmstat() -> dict[str, int]:
    keep = ("compact_", "pgmigrate_", "drop_", "kswapd_", "pgsteal_", "allocstall_", "pgscan_")
    out = {}
    for line in Path("/proc/vmstat").read_text().splitlines():
        k, v = line.split()
        if k.startswith(keep):
            out[k] = int(v)
    return out


def vmstat_all() -> dict[str, int]:
    return {
        k: int(v) for k, v in (ln.split() for ln in Path("/proc/vmstat").read_text().splitlines())
    }


def node_meminfo(node: int) -> dict[str, int]:
    """/sys/devices/system/node/nodeN/meminfo in KiB ("Node 1 MemFree:  1234 kB")."""
    out = {}
    for line in Path(f"/sys/devices/system/node/node{node}/meminfo").read_text().splitlines():
        parts = line.split()
        if len(parts) >= 4:
            out[parts[2].rstrip(":")] = int(parts[3])
    return out


def set_mempolicy(node: int | None) -> None:
    """Bind this process's new memory (anonymous and page cache) to one NUMA node, or back to
    the default policy (None)."""
    if node is None:
        r = libc.syscall(SYS_SET_MEMPOLICY, MPOL_DEFAULT, None, 0)
    else:
        mask = ctypes.c_ulong(1 << node)
        r = libc.syscall(SYS_SET_MEMPOLICY, MPOL_BIND, ctypes.byref(mask), 64)
    if r != 0:
        raise OSError(ctypes.get_errno(), f"set_mempolicy({node})")


def vm_write(name: str, value: str | int) -> None:
    fd = os.open(VM / name, os.O_WRONLY)
    try:
        os.write(fd, str(value).encode())
    finally:
        os.close(fd)


def agent_assess(with_pagetype: bool = True) -> Assessment:
    return assess(reader.observe(with_pagetypeinfo=with_pagetype), CFG.assessment)


def recovered() -> bool:
    """Neither fragmented nor exhausted (a node at its watermarks reads as not fragmented, but
    has no blocks either: the probe's own memory can take it there in the reclaimable case)."""
    a = agent_assess(False)
    return a.verdict != "fragmented" and not a.exhausted


def after_snapshot() -> dict[str, Any]:
    """What a row's "after" is computed from, taken once the strategy is done."""
    return {"meminfo": meminfo(), "vmstat": vmstat(), "buddy": buddy(), "recovered": recovered()}


def cached_mib() -> float:
    return meminfo()["Cached"] / 1024


# --- memory holders -----------------------------------------------------------------------------
class Anon:
    """An anonymous mapping touched a chunk at a time (no THP: the kernel boots with
    transparent_hugepage=never, and the range is MADV_NOHUGEPAGE too)."""

    def __init__(self, size: int) -> None:
        self.size = size
        addr = libc.mmap(None, size, PROT_RW, MAP_PRIVATE_ANON_NORESERVE, -1, 0)
        if addr in (None, ctypes.c_void_p(-1).value):
            raise OSError(ctypes.get_errno(), "mmap failed")
        self.addr: int = addr
        libc.madvise(self.addr, size, MADV_NOHUGEPAGE)
        self.touched = 0

    def touch(self, n: int) -> None:
        n = min(n, self.size - self.touched)
        ctypes.memset(self.addr + self.touched, 0x5A, n)
        self.touched += n

    def frames(self) -> list[int]:
        """The physical frame of every touched page (0: not present), from /proc/self/pagemap."""
        npages = self.touched // PAGE
        with open("/proc/self/pagemap", "rb") as fh:
            fh.seek(self.addr // PAGE * 8)
            entries = array.array("Q", fh.read(npages * 8))
        return [e & PFN_MASK if e >> 63 else 0 for e in entries]

    def punch_one_per_pair(
        self, stop: Callable[[int], bool] | None = None, keep: frozenset[int] = frozenset()
    ) -> int:
        """Release one page of every buddy pair of frames (frames 2k and 2k+1), which one chosen
        by a fixed hash of k; frame numbers come from /proc/self/pagemap (visible to root). No two
        buddies are freed, so the holes stay order-0 whatever order the kernel handed frames out
        in. (Not simply every odd frame: the kernel's free scanner samples a pageblock with a
        stride of up to 32 pages after empty blocks, and a period-2 pattern hides every hole from
        it: lab/README.md.) `stop(freed)`, asked every 256 pages freed: True ends it there.
        `keep`: page indices never released (the pinned pages of hopeless)."""
        freed = 0
        for i, pfn in enumerate(self.frames()):
            if not pfn or i in keep:
                continue
            chosen = (pfn & 1) == ((pfn >> 1) * 0x9E3779B1 >> 17) & 1
            if chosen and libc.madvise(self.addr + i * PAGE, PAGE, MADV_DONTNEED) == 0:
                freed += 1
                if stop is not None and freed % 256 == 0 and stop(freed):
                    break
        return freed

    def release(self) -> None:
        if self.addr:
            libc.munmap(self.addr, self.size)
            self.addr = 0


class HugeBlock:
    """One order-9 block, held as a transparent huge page from the build's clean start (THP
    switched to madvise for the one fault) and freed when the strategy starts: free memory in a
    block of order >= 9, which is what keeps kcompactd's fragmentation score (the share of free
    memory NOT in such blocks) below its proactive threshold while order-4 blocks stay scarce.
    Freed at the start, not after the fill: an unmovable allocation that finds no unmovable
    block of its order steals the LARGEST free block of another type (the kernel's
    anti-fragmentation fallback), and one read of /proc/zoneinfo (a 32 KiB seq_file buffer,
    order 3) took it in the first runs."""

    def __init__(self) -> None:
        thp = Path("/sys/kernel/mm/transparent_hugepage")
        old = {f: (thp / f).read_text().split("[")[1].split("]")[0] for f in ("enabled", "defrag")}
        self.size = 4 * MIB
        addr = libc.mmap(None, self.size, PROT_RW, MAP_PRIVATE_ANON_NORESERVE, -1, 0)
        if addr in (None, ctypes.c_void_p(-1).value):
            raise OSError(ctypes.get_errno(), "mmap failed")
        self.addr: int = addr
        base = (addr + 2 * MIB - 1) & ~(2 * MIB - 1)
        try:
            (thp / "enabled").write_text("madvise")
            (thp / "defrag").write_text("madvise")
            libc.madvise(base, 2 * MIB, MADV_HUGEPAGE)
            ctypes.memset(base, 1, 2 * MIB)
        finally:
            for f, v in old.items():
                (thp / f).write_text(v)
        with open("/proc/self/pagemap", "rb") as fh:
            fh.seek(base // PAGE * 8)
            entries = array.array("Q", fh.read(512 * 8))
        pfns = [e & PFN_MASK for e in entries]
        self.huge = all(e >> 63 for e in entries) and pfns == list(range(pfns[0], pfns[0] + 512))
        self.huge = self.huge and pfns[0] % 512 == 0

    def release(self) -> None:
        """munmap: the order-9 page goes to the per-CPU list of its order first, where
        buddyinfo, the score and kcompactd do not see it, unless that list is over its high
        mark: so the per-CPU lists are shrunk to their floor (percpu_pagelist_high_fraction)
        for the moment of the free."""
        if not self.addr:
            return
        fraction = VM / "percpu_pagelist_high_fraction"
        old = int(fraction.read_text()) if fraction.exists() else None
        try:
            if old is not None:
                vm_write(fraction.name, 1 << 20)  # pcp high down to its floor, 4 batches
            libc.munmap(self.addr, self.size)
            self.addr = 0
        finally:
            if old is not None:
                vm_write(fraction.name, old)


class KeyReserve:
    """Order-3 unmovable blocks (add_key(2) payloads of 30000 bytes: kmalloc_large, GFP_KERNEL)
    taken at the build's clean start and freed when the strategy starts, so the node's own
    order-1..3 kernel allocations in the strategy's window (seq_file buffers, slab pages) find
    unmovable memory of their order and do not steal the huge block (HugeBlock)."""

    def __init__(self, n: int = 8) -> None:
        payload = b"r" * 30000
        self.keys = 0
        for k in range(n):
            r = libc.syscall(
                SYS_ADD_KEY, b"user", f"reserve{k}".encode(), payload, len(payload),
                KEY_SPEC_PROCESS_KEYRING,
            )  # fmt: skip
            self.keys += r >= 0

    def release(self) -> None:
        if self.keys:
            libc.syscall(SYS_KEYCTL, KEYCTL_CLEAR, KEY_SPEC_PROCESS_KEYRING)
            self.keys = 0


class Iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class LongTermPins:
    """Pages pinned long-term as io_uring registered buffers (IORING_REGISTER_BUFFERS), one page
    per iovec, at most BATCH per ring (the kernel allows 16384: IORING_MAX_REG_BUFFERS; fewer
    keep the ring's own arrays, kcalloc'd 8 bytes per buffer, at order <= 0 on a full node).
    Kernel 6.1, read for this: io_uring/rsrc.c io_sqe_buffer_register -> io_pin_pages ->
    pin_user_pages(FOLL_WRITE | FOLL_LONGTERM), accounted by io_account_mem in
    mm->pinned_vm (VmPin in /proc/PID/status) whatever CAP_IPC_LOCK says (only the RLIMIT_MEMLOCK
    check, ctx->user, is skipped with it); mm/gup.c try_grab_folio(FOLL_PIN) counts
    NR_FOLL_PIN_ACQUIRED (vmstat nr_foll_pin_acquired), unpin_user_page nr_foll_pin_released;
    mm/gup.c check_and_migrate_movable_pages moves only pages that are not longterm-pinnable
    (ZONE_MOVABLE, CMA), so ours stay where they are; mm/compaction.c
    isolate_migratepages_block skips an anonymous page whose page_count exceeds its mapcount,
    and migration would fail on its extra reference anyway. Closing the rings unpins."""

    BATCH = 512

    def __init__(self) -> None:
        self.rings: list[int] = []
        self.pages = 0

    def ring(self) -> int:
        params = ctypes.create_string_buffer(120)  # struct io_uring_params, zeroed
        fd = libc.syscall(SYS_IO_URING_SETUP, 1, params)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(
                err,
                f"io_uring_setup: {os.strerror(err)}: the hopeless scenario pins its pages as "
                "io_uring registered buffers and needs a kernel with io_uring (CONFIG_IO_URING, "
                "and kernel.io_uring_disabled 0 where it exists)",
            )
        self.rings.append(fd)
        return int(fd)

    def pin(self, addrs: list[int]) -> None:
        for k in range(0, len(addrs), self.BATCH):
            chunk = addrs[k : k + self.BATCH]
            iov = (Iovec * len(chunk))(*[Iovec(a, PAGE) for a in chunk])
            fd = self.ring()
            r = libc.syscall(SYS_IO_URING_REGISTER, fd, IORING_REGISTER_BUFFERS, iov, len(chunk))
            if r < 0:
                err = ctypes.get_errno()
                raise OSError(err, f"io_uring_register(BUFFERS, {len(chunk)}): {os.strerror(err)}")
            self.pages += len(chunk)

    def release(self) -> None:
        for fd in self.rings:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.rings.clear()
        self.pages = 0


def vm_pin_kib() -> int:
    """This process's VmPin (mm->pinned_vm), kB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmPin:"):
            return int(line.split()[1])
    return -1


_PRESENT: dict[tuple[int, str], int] = {}


def score_now(node: int, extra_order9: int = 0) -> int:
    """kcompactd's fragmentation score of NUMA node `node` now (labcalc.kcompactd_score);
    `extra_order9`: as if that many more order-9 blocks were free in its largest zone (the
    huge block, freed later)."""
    if not _PRESENT:
        _PRESENT.update(parse_zoneinfo_present(Path("/proc/zoneinfo").read_text()))
    rows = buddy()
    if extra_order9:
        big = max((z for n, z, _ in rows if n == node), key=lambda z: _PRESENT.get((node, z), 0))
        rows = [
            (n, z, [c + extra_order9 * (o == 9) for o, c in enumerate(cs)])
            if (n, z) == (node, big)
            else (n, z, cs)
            for n, z, cs in rows
        ]
    return kcompactd_score(rows, _PRESENT, node)


@dataclasses.dataclass
class Built:
    scenario: str
    holders: list[Any]
    info: dict[str, Any]
    proactiveness: int = 20
    node: int | None = None  # the NUMA node made fragmented (None: the whole guest)
    huge: HugeBlock | None = None  # freed at the start (movable, numa)
    reserve: KeyReserve | None = None

    def start(self) -> None:
        """Back to the kernel's own settings: the strategy under test starts now (writing a
        non-zero compaction_proactiveness also wakes kcompactd). The reserve and the huge block
        are freed first."""
        if self.reserve is not None:
            self.reserve.release()
        if self.huge is not None:
            self.huge.release()
            self.info["blocks_ge9_at_start"] = blocks_ge(buddy(), 9, self.node)
        vm_write("compaction_proactiveness", self.proactiveness)

    def release(self) -> None:
        vm_write("compaction_proactiveness", self.proactiveness)
        for h in self.holders:
            with contextlib.suppress(Exception):
                h.release()
        self.holders.clear()


class Pipes:
    def __init__(self) -> None:
        self.fds: list[int] = []

    def pair(self) -> tuple[int, int]:
        r, w = os.pipe()
        os.set_blocking(w, False)
        self.fds += [r, w]
        return r, w

    def release(self) -> None:
        for fd in self.fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.fds.clear()


class Dentries:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.dirs: list[Path] = []

    def mkdir(self, name: str) -> int:
        d = self.base / name
        d.mkdir(parents=True, exist_ok=True)
        self.dirs.append(d)
        return os.open(d, os.O_RDONLY | os.O_DIRECTORY)

    def remove(self, d: Path) -> None:
        os.rmdir(d)  # the kernel prunes the directory's (negative) child dentries
        self.dirs.remove(d)

    def release(self) -> None:
        for d in list(self.dirs):
            with contextlib.suppress(OSError):
                self.remove(d)


# --- building the scenarios ---------------------------------------------------------------------
CACHE_FILE = Path("/var/tmp/lab-cache")


def ensure_cache_file(mib: int) -> None:
    if CACHE_FILE.exists() and CACHE_FILE.stat().st_size == mib * MIB:
        return
    chunk = os.urandom(MIB)
    with open(CACHE_FILE, "wb") as fh:
        for _ in range(mib):
            fh.write(chunk)
        fh.flush()
        os.fsync(fh.fileno())


class CacheFile:
    """The known page cache, read in one 4 KiB page at a time (readahead off) between the fill's
    anonymous pages, so its pages are interleaved with them in physical memory as page cache is
    on a busy node: dropping it frees scattered pages, not whole blocks."""

    def __init__(self, deferred: bool = False) -> None:
        """`deferred`: the fill reads nothing; all of it is read at close (hopeless)."""
        self.fd = os.open(CACHE_FILE, os.O_RDONLY)
        self.deferred = deferred
        os.posix_fadvise(self.fd, 0, 0, os.POSIX_FADV_RANDOM)
        self.size = os.fstat(self.fd).st_size
        self.off = 0

    def read_pages(self, n: int) -> None:
        if self.deferred:
            return
        for _ in range(n):
            if self.off >= self.size:
                return
            os.pread(self.fd, PAGE, self.off)
            self.off += PAGE

    def close(self) -> None:
        self.deferred = False
        self.read_pages(self.size // PAGE)  # whatever the fill did not interleave
        os.close(self.fd)


def clean_start() -> None:
    """The same starting point before every build: caches dropped, memory compacted."""
    os.sync()
    vm_write("drop_caches", 3)
    vm_write("compact_memory", 1)
    time.sleep(1.0)


def fill_anon(
    region: Anon, until: Any, floor_kib: int, cache: CacheFile, node: int | None = None
) -> str:
    """Touch memory 256 KiB at a time, each 32 KiB followed by one page of the cache file, until
    `until()` says stop, the memory left (MemAvailable) falls to `floor_kib` or the mapping ends.
    The floor keeps the guest out of the OOM killer: reclaim must leave python's own file pages
    alone."""
    step = MIB // 4
    while region.touched < region.size:
        if meminfo()["MemAvailable"] < floor_kib:
            return "MemAvailable floor"
        if node is not None and node_meminfo(node)["MemFree"] < FREE_FLOOR_KIB:
            return f"node {node} MemFree floor"  # bound there: reclaim would start on it
        for _ in range(step // (8 * PAGE)):
            region.touch(8 * PAGE)
            cache.read_pages(1)
        if until():
            return "target reached"
    return "mapping full"


def build(scenario: str) -> Built:
    start = time.monotonic()
    default_mfk = int((VM / "min_free_kbytes").read_text())
    clean_start()
    mi = meminfo()
    total = mi["MemTotal"] * 1024
    floor_kib = 24 * 1024
    stop = int(OPTS["stop_blocks"])
    info: dict[str, Any] = {"cached_mib_at_start": round(mi["Cached"] / 1024, 1)}
    built = Built(scenario, [], info)
    # Lower watermarks while filling, so the free memory kswapd keeps back (it keeps the
    # high watermark free, in whatever blocks) is small: restored once the holes are made.
    vm_write("min_free_kbytes", OPTS["build_min_free_kbytes"])
    # No watermark boost either: each pageblock the fill steals across migrate types would
    # otherwise wake kswapd to reclaim page cache, by a varying amount from build to build, and
    # the strategies would start from different page caches.
    default_boost = int((VM / "watermark_boost_factor").read_text())
    vm_write("watermark_boost_factor", 0)
    # No proactive compaction while building: it would start undoing the scenario before the
    # strategy under test begins. Restored (which wakes kcompactd) right before measuring.
    default_proactiveness = int((VM / "compaction_proactiveness").read_text())
    vm_write("compaction_proactiveness", 0)
    vm0 = vmstat()
    node = 1 if scenario == "numa" else None
    built.node = node
    try:
        if node is not None:
            set_mempolicy(node)  # the fill and its page cache on node 1 alone
            total = node_meminfo(node)["MemTotal"] * 1024
        huge = None
        if scenario in ("movable", "numa") and int(OPTS["hole_score"]) > 0:
            built.reserve = KeyReserve()
            built.holders.append(built.reserve)
            huge = HugeBlock()  # before the fill, while a free order-9 block exists
            built.holders.append(huge)
            built.huge = huge
            info["huge_block"] = huge.huge
        region = Anon(total)
        built.holders.append(region)
        cache = CacheFile(deferred=scenario == "hopeless")
        if scenario in ("movable", "numa"):
            info["stop"] = fill_anon(
                region, lambda: blocks_ge4(node=node) <= stop, floor_kib, cache, node
            )
            cache.close()
            info["blocks_at_fill"] = blocks_ge4()
            info["filled_mib"] = region.touched // MIB
            info["fill_seconds"] = round(time.monotonic() - start, 1)
            info["buddy_at_fill"] = workload_buddy()
            t = time.monotonic()
            info["pages_freed"] = punch_holes(region, huge, node or 0, info)
            info["punch_seconds"] = round(time.monotonic() - t, 1)
        elif scenario == "hopeless":
            # No ballast: anonymous memory everywhere, a long-term pin in every order-4 block of
            # it, holes beside the pins, then the page cache into the holes, so dropping it only
            # reopens the same holes and compaction cannot empty any block.
            info["stop"] = fill_anon(region, lambda: blocks_ge4() <= stop, floor_kib, cache)
            info["filled_mib"] = region.touched // MIB
            info["fill_seconds"] = round(time.monotonic() - start, 1)
            t = time.monotonic()
            pins = LongTermPins()
            built.holders.insert(0, pins)  # unpinned before the region is unmapped
            info.update(pin_region(region, pins))
            info["pin_seconds"] = round(time.monotonic() - t, 1)
            cache.close()
            info["blocks_at_fill"] = blocks_ge4()
            info["buddy_at_fill"] = workload_buddy()
        else:
            room = int(OPTS["room_mib"]) * 1024
            info["ballast_stop"] = fill_anon(
                region, lambda: meminfo()["MemFree"] <= room, floor_kib, cache
            )
            info["ballast_mib"] = region.touched // MIB
            cache.close()
            if scenario == "reclaimable":
                fill_dentries(built, stop, floor_kib)
            elif scenario == "kernel-mixed":
                fill_pipes(built, stop, floor_kib)
            else:
                raise ValueError(scenario)
        mi = meminfo()
        info["at_fill"] = {k: mi[k] // 1024 for k in ("MemFree", "MemAvailable", "Cached")}
    except BaseException:
        vm_write("compaction_proactiveness", default_proactiveness)
        raise
    finally:
        if node is not None:
            set_mempolicy(None)
        vm_write("min_free_kbytes", default_mfk)
        vm_write("watermark_boost_factor", default_boost)
    built.proactiveness = default_proactiveness
    vm1 = vmstat()
    info["vmstat_delta"] = {k: vm1[k] - vm0.get(k, 0) for k in vm1 if vm1[k] != vm0.get(k, 0)}
    info["build_seconds"] = round(time.monotonic() - start, 1)
    return built


def punch_holes(region: Anon, huge: HugeBlock | None, node: int, info: dict[str, Any]) -> int:
    """The movable holes. hole_score > 0: as many as kcompactd's own wake-up rule leaves alone,
    one page of every buddy pair while the node's fragmentation score, counting the huge block
    freed at the start, stays below hole_score (kcompactd compacts proactively only above 90 at
    the default proactiveness 20), at most hole_mib. hole_score=0: every pair (the scenario of
    the first runs, which kcompactd repairs alone)."""
    target, cap = int(OPTS["hole_score"]), int(OPTS["hole_mib"]) * MIB // PAGE
    if target <= 0:
        return region.punch_one_per_pair()
    extra = 1 if huge is not None and huge.huge else 0
    freed = region.punch_one_per_pair(lambda n: n >= cap or score_now(node, extra) >= target)
    info["kcompactd_score_with_huge_block"] = score_now(node, extra)
    return freed


def pin_region(region: Anon, pins: LongTermPins) -> dict[str, Any]:
    """Pin the first page seen of every order-4-aligned physical block (16 frames) the region
    holds, then release one page of every buddy pair of the rest: no block of 16 frames can
    be freed while the pins last, and the holes stay order-0."""
    vm0 = vmstat_all()
    vmpin0 = vm_pin_kib()
    frames = region.frames()
    first: dict[int, int] = {}
    for i, pfn in enumerate(frames):
        if pfn:
            first.setdefault(pfn >> 4, i)
    keep = frozenset(first.values())
    pins.pin([region.addr + i * PAGE for i in sorted(keep)])
    freed = region.punch_one_per_pair(keep=keep)
    vm1 = vmstat_all()
    return {
        "pinned_pages": pins.pages,
        "pinned_blocks": len(first),
        "io_uring_rings": len(pins.rings),
        "pages_freed": freed,
        "vm_pin_kib": vm_pin_kib() - vmpin0,
        "foll_pin_acquired": vm1.get("nr_foll_pin_acquired", 0)
        - vm0.get("nr_foll_pin_acquired", 0),
    }


def fill_dentries(built: Built, stop: int, floor_kib: int) -> None:
    """Negative dentries (reclaimable slab), alternating runs of 63 lookups (three slab pages of
    21 dentries) between a directory kept and one removed afterwards."""
    d = Dentries(Path("/var/tmp/lab-dent"))
    built.holders.append(d)
    keep_fd, drop_fd = d.mkdir("keep"), d.mkdir("drop")
    run, n, reason = 63, 0, "lookup cap"
    max_lookups = int(OPTS["room_mib"]) * 1024 // 4 * 21 * 3
    try:
        while n < max_lookups:
            for fd in (keep_fd, drop_fd):
                for _ in range(run):
                    with contextlib.suppress(FileNotFoundError):
                        os.stat(f"{n:x}", dir_fd=fd)
                    n += 1
            if n % (run * 2 * 16) == 0 and (why := fill_stop(stop, floor_kib)):
                reason = why
                break
    finally:
        os.close(keep_fd)
        os.close(drop_fd)
    built.info.update(stop=reason, lookups=n, blocks_at_fill=blocks_ge4())
    slab_before = meminfo()["SReclaimable"]
    d.remove(d.base / "drop")
    built.info["sreclaimable_freed_mib"] = round(
        (slab_before - meminfo()["SReclaimable"]) / 1024, 1
    )


def fill_stop(stop: int, floor_kib: int) -> str | None:
    """Why a fill must stop now: the target reached, or free memory at a floor; else None."""
    if blocks_ge4() <= stop:
        return "target reached"
    mi = meminfo()
    if mi["MemFree"] < FREE_FLOOR_KIB:
        return "MemFree floor"
    if mi["MemAvailable"] < floor_kib:
        return "MemAvailable floor"
    return None


def fill_pipes(built: Built, stop: int, floor_kib: int) -> None:
    """Pipe buffers (unmovable pages), written one page at a time alternately into pipe A and
    pipe B of each pair; every B is closed afterwards; at most twice the room the ballast left."""
    p = Pipes()
    built.holders.append(p)
    page = b"\xa5" * PAGE
    pairs: list[tuple[int, int, int, int]] = []
    reason = "pipe cap"
    max_pairs = int(OPTS["room_mib"]) * 2 * MIB // (32 * PAGE)
    while len(pairs) < max_pairs:
        group = []
        for _ in range(8):  # 8 pairs x 2 x 16 pages: 1 MiB between checks
            ar, aw = p.pair()
            br, bw = p.pair()
            group.append((ar, aw, br, bw))
        pairs += group
        for _ in range(16):  # 16 pages: a pipe's default capacity
            for _, aw, _, bw in group:
                for w in (aw, bw):
                    with contextlib.suppress(BlockingIOError):
                        os.write(w, page)
        if why := fill_stop(stop, floor_kib):
            reason = why
            break
    built.info.update(stop=reason, pipe_pairs=len(pairs), blocks_at_fill=blocks_ge4())
    for _, _, br, bw in pairs:
        for fd in (br, bw):
            os.close(fd)
            p.fds.remove(fd)


# --- what a row measures beside its blocks: the series, the stall, the CPU ----------------------
class Sampler(threading.Thread):
    """The free-block series during a strategy: every 0.25 s, order>=4 blocks per NUMA node
    (the prediction work reads these series; out/lab-series/)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.t0 = time.monotonic()
        self.stop_event = threading.Event()
        self.series: list[list[float | int]] = []

    def run(self) -> None:
        while True:
            rows = buddy()
            t = round(time.monotonic() - self.t0, 2)
            self.series.append([t, blocks_ge(rows), *(blocks_ge(rows, node=n) for n in NODES)])
            if self.stop_event.wait(0.25):
                return

    def finish(self) -> list[list[float | int]]:
        self.stop_event.set()
        self.join(5)
        return self.series


class Probe:
    """lab/probe.py in its own process: the running workload whose stall a fix causes."""

    def __init__(self, cpu: int = -1, node: int = -1) -> None:
        self.out = Path(f"/tmp/lab-probe-{os.getpid()}.bin")
        self.out.unlink(missing_ok=True)
        Path(f"{self.out}.ready").unlink(missing_ok=True)
        self.proc = subprocess.Popen(
            [sys.executable, str(REPO / "lab/probe.py"), str(self.out), str(cpu), str(node)]
        )
        ready = Path(f"{self.out}.ready")
        t = time.monotonic()
        while not ready.exists() and time.monotonic() - t < 30 and self.proc.poll() is None:
            time.sleep(0.05)  # python's start under TCG takes seconds
        ready.unlink(missing_ok=True)
        time.sleep(0.3)  # a few idle iterations: the baseline

    def pause(self, stop: bool) -> None:
        """SIGSTOP while a scenario is built (its memory stays; under TCG its loop would take
        half the CPU and double the build), SIGCONT before the baseline."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGSTOP if stop else signal.SIGCONT)

    def finish(self) -> list[tuple[float, float]]:
        self.pause(False)
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            return []
        data = array.array("d")
        with contextlib.suppress(OSError), open(self.out, "rb") as fh:
            data.frombytes(fh.read())
        self.out.unlink(missing_ok=True)
        return list(zip(data[0::2], data[1::2], strict=False))


def kthread_pids() -> dict[int, str]:
    """kcompactd and kswapd: the kernel threads a strategy may set working."""
    out = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            with contextlib.suppress(OSError):
                comm = (d / "comm").read_text().strip()
                if comm.startswith(("kcompactd", "kswapd")):
                    out[int(d.name)] = comm
    return out


def cpu_ticks(pids: Iterable[int]) -> int:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, ValueError, IndexError):
            total += proc_cpu_ticks(Path(f"/proc/{pid}/stat").read_text())
    return total


def own_cpu() -> float:
    """This process's CPU seconds, all its threads."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def thread_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_THREAD)
    return r.ru_utime + r.ru_stime


@dataclasses.dataclass
class Run:
    """What a strategy reports back to run_one: the windows its actions ran in (monotonic, for
    the probe's percentiles; None: the whole strategy) and CPU seconds of its own processes."""

    windows: list[tuple[float, float]] | None = None
    own_cpu: float = 0.0


@contextlib.contextmanager
def writer_cpu_ctx(cpu: int) -> Iterator[None]:
    """Strategies write from this CPU (the 2-node guest: the fragmented node's), so the probe on
    the other node measures memory stalls, not a shared CPU."""
    if cpu < 0:
        yield
        return
    old = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, old)


# --- strategies ---------------------------------------------------------------------------------
def wait_recovered(row: dict[str, Any], wait: float) -> None:
    start = time.monotonic()
    while time.monotonic() - start < wait:
        time.sleep(1.0)
        if recovered():
            row["seconds"] = round(time.monotonic() - start, 1)
            break
    row["elapsed"] = round(time.monotonic() - start, 1)


def strategy_none(row: dict[str, Any], ctx: Ctx) -> Run:
    ctx.start()
    wait_recovered(row, float(OPTS["none_wait"]))
    return Run()


def strategy_proactive(row: dict[str, Any], ctx: Ctx) -> Run:
    """The strongest peer: the kernel's own proactive compaction turned up (20 -> 90), given
    the agent's time budget (agent_budget)."""
    vm_write("compaction_proactiveness", 90)
    row["actions"] = ["compaction_proactiveness=90"]
    wait_recovered(row, float(OPTS["agent_budget"]))
    return Run()


def strategy_seed(row: dict[str, Any], ctx: Ctx) -> Run:
    ctx.start()
    start = time.monotonic()
    with writer_cpu_ctx(ctx.writer_cpu):
        c0 = thread_cpu()
        vm_write("drop_caches", 3)
        vm_write("compact_memory", 1)
        own = thread_cpu() - c0
    end = time.monotonic()
    row["actions"] = ["drop-caches=3", "compact"]
    time.sleep(SETTLE_SECONDS)
    row["elapsed"] = round(time.monotonic() - start, 1)
    if recovered():
        row["seconds"] = row["elapsed"]
    return Run([(start, end)], own)


def strategy_spin(row: dict[str, Any], ctx: Ctx) -> Run:
    """A control, not a fix: the strategies' CPU busy in user space for spin_seconds (a python
    loop, no memory work, no syscall), with the build's settings left as they are (kcompactd
    stays off), so what a busy vCPU alone costs the probe under TCG is measured beside what
    the fixes cost it (the 2-node guest: a busy CPU 1, the probe on CPU 0)."""
    start = time.monotonic()
    with writer_cpu_ctx(ctx.writer_cpu):
        c0 = thread_cpu()
        n = 0
        while time.monotonic() - start < float(OPTS["spin_seconds"]):
            n += 1
        own = thread_cpu() - c0
    end = time.monotonic()
    row["actions"] = ["spin"]
    row["spin_loops"] = n
    return Run([(start, end)], own)


AGENT_LOG = Path("/tmp/lab-agent.log")
THP_FAULTS = 8  # 16 MiB if they succeed: small beside the guest's page cache
ORDER4_KEYS = 16  # 512 KiB of keys if they succeed
METRICS_URL = f"http://127.0.0.1:{METRICS_PORT}/metrics"


def loopback_up() -> None:
    """The guest has no network and minbase no `ip`: bring lo up for the daemon's /metrics."""
    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(s, siocgifflags, req))[1]
        fcntl.ioctl(s, siocsifflags, struct.pack("16sH14x", b"lo", flags | iff_up))


def scrape() -> list[tuple[str, dict[str, str], float]] | None:
    """The daemon's /metrics, read from inside the guest; None (and a note) if it does not
    answer."""
    try:
        with urllib.request.urlopen(METRICS_URL, timeout=5) as r:
            return parse_metrics(r.read().decode("utf-8", "replace"))
    except OSError as exc:
        log(f"agent: /metrics did not answer: {exc}")
        return None


def agent_lines(seen: int) -> tuple[list[dict[str, Any]], int]:
    """The daemon's JSON log lines after the first `seen` bytes."""
    with open(AGENT_LOG, "rb") as fh:
        fh.seek(seen)
        data = fh.read()
    end = data.rfind(b"\n") + 1
    out = []
    for line in data[:end].splitlines():
        with contextlib.suppress(ValueError):
            item = json.loads(line)
            if isinstance(item, dict):
                out.append(item)
    return out, seen + end


def agent_config(poll: float, mode: str = "on") -> Path:
    config = Path("/tmp/lab-agent.yaml")
    config.write_text(
        json.dumps(  # JSON is YAML
            {
                "sources": {
                    "poll_interval_seconds": poll,
                    "pagetypeinfo_interval_seconds": max(poll, 300.0),
                    "tracing_enabled": TRACEFS.is_dir(),
                },
                "reporting": {"metrics_address": "127.0.0.1", "metrics_port": METRICS_PORT},
                "remediation": {"mode": mode},
            }
        )
    )
    return config


@dataclasses.dataclass
class Daemon:
    proc: subprocess.Popen[bytes]
    seen: int  # bytes of its log read
    start_seconds: float


PRESTARTED: list[Daemon] = []  # the agent row's daemon, started before its build


def launch_daemon(poll: float, mode: str, writer_cpu: int) -> Daemon:
    """`memfrag-agent run --standalone` with the lab's config, until it logs `started`."""
    config = agent_config(poll, mode)
    env = {**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", str(REPO))}
    with writer_cpu_ctx(writer_cpu), open(AGENT_LOG, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "agent", "run", "--standalone", "--config", str(config),
             "--log-format", "json"],
            stdout=out, stderr=subprocess.STDOUT, env=env, cwd=str(REPO),
        )  # fmt: skip
    seen = 0
    t = time.monotonic()
    while time.monotonic() - t < 90 and proc.poll() is None:
        lines, seen = agent_lines(seen)
        if any(x.get("msg") == "started" for x in lines):
            break
        time.sleep(0.1)
    return Daemon(proc, seen, round(time.monotonic() - t, 1))


def strategy_agent(row: dict[str, Any], ctx: Ctx) -> Run:
    """The real daemon, `memfrag-agent run --standalone` with remediation.mode on (defaults
    otherwise), followed through its JSON log (each remediation it runs, the why of its
    decisions, its Events) and its /metrics; until it has recovered the node and run what it
    runs after that, has had nothing to run for three polls, or agent_budget runs out. Then,
    with the daemon still running, the failure probe: allocations that fail while fragmented,
    counted by the daemon's tracing and by its kernel-log follower."""
    poll = float(OPTS["agent_poll"] or CFG.sources.poll_interval_seconds)
    budget = float(OPTS["agent_budget"])
    obs = reader.observe(with_pagetypeinfo=False)
    if obs.pressure is not None:
        row["psi_some_avg10_at_start"] = obs.pressure.some_avg10
    decisions: list[str] = []
    steps_log: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    windows: list[tuple[float, float]] = []
    if PRESTARTED:
        # running since before the build with remediation off: switched on now, the daemon
        # takes it at its next poll's config reload, as an operator's change would reach it
        d = PRESTARTED.pop()
        d.seen = AGENT_LOG.stat().st_size  # what it said during the build is not the strategy's
        agent_config(poll, "on")
        row["agent_started_before_build"] = True
    else:
        d = launch_daemon(poll, "on", ctx.writer_cpu)
    proc, seen = d.proc, d.seen
    row["agent_start_seconds"] = d.start_seconds
    # its CPU from here: python's imports under TCG take seconds, a node pays them once
    cpu0 = cpu_ticks([proc.pid])
    row["agent_start_cpu_seconds"] = round(cpu0 / CLK_TCK, 2)
    m_start = scrape()  # before the clock runs: its compaction totals so far
    ctx.start()
    start = time.monotonic()
    last_action = start
    recovered_at: float | None = None
    started_at: float | None = None
    own_cpu = 0.0
    mono_minus_wall = time.monotonic() - time.time()  # the daemon's "ts" onto this clock
    try:
        while time.monotonic() - start < budget and proc.poll() is None:
            time.sleep(0.1)
            lines, seen = agent_lines(seen)
            now = time.monotonic()
            for x in lines:
                msg = str(x.get("msg", ""))
                if isinstance(x.get("event"), dict):
                    events.append(x["event"])
                if msg.startswith("assessment "):
                    if x.get("remediation"):
                        decisions.append(f"{x.get('verdict')}: {x['remediation']}")
                    if x.get("verdict") != "fragmented" and recovered_at is None:
                        recovered_at = now
                elif msg == "remediation starting":
                    # its own timestamp (ms), not when this 0.1 s loop saw the line
                    wall = log_ts_seconds(str(x.get("ts", "")))
                    started_at = now if wall is None else min(now, wall + mono_minus_wall)
                    decisions.append(f"{x.get('action')}: {x.get('why')}")
                elif msg.startswith("remediation ") and "result" in x:
                    # the kernel write's own span (the daemon times it), from its "starting"
                    # line's timestamp: the settle and re-observe after it are the daemon
                    # waiting, not the fix
                    began = started_at if started_at is not None else now - 0.2
                    took = x.get("seconds")
                    end_w = began + float(took) + 0.05 if isinstance(took, int | float) else now
                    windows.append((began, min(now, end_w)))
                    started_at = None
                    last_action = now
                    row["actions"].append(x["action"])
                    steps_log.append(
                        {k: x.get(k) for k in ("result", "seconds", "blocks_before",
                                               "blocks_after", "cache_dropped_mib", "recovered",
                                               "error", "compaction_seconds")}
                        | {"step": x["action"]}
                    )  # fmt: skip
                    if x.get("recovered") and recovered_at is None:
                        recovered_at = now
            if started_at is not None:
                continue  # an action is running: wait for its result
            # recovered, and the next poll ran nothing more; two polls: under TCG a tick took
            # 23 s in the final run, and the finishing compaction came after the lab had left
            if recovered_at is not None and now - max(recovered_at, last_action) > 2 * poll + 3:
                break
            if recovered_at is None and now - last_action > 3 * poll + SETTLE_SECONDS:
                break  # the daemon waits for an operator (or a cooldown): nothing more here
        end = time.monotonic()
        if recovered_at is not None:
            row["seconds"] = round(recovered_at - start, 1)
        own_cpu = (cpu_ticks([proc.pid]) - cpu0) / CLK_TCK
        m0 = scrape()
        if m0 is not None:
            row["agent_metrics"] = {
                "actions": metric_by(m0, "memfrag_remediation_actions_total", "action", "result"),
                "verdict": next(
                    (lb.get("verdict") for n, lb, v in m0 if n == "memfrag_verdict" and v), None
                ),
                "free_blocks_at_target": metric_sum(m0, "memfrag_free_blocks_at_target_order"),
            }
            if m_start is not None:
                # every traced compaction in the strategy, by kind: "direct" is how long
                # allocating tasks stalled compacting, whoever's fix it was
                name = "memfrag_compaction_duration_seconds_sum"
                a0, a1 = metric_by(m_start, name, "kind"), metric_by(m0, name, "kind")
                row["compaction_seconds_by_kind"] = {
                    k: round(v - a0.get(k, 0.0), 4) for k, v in a1.items()
                }
        # the row's "after", taken before the failure probe's allocations move memory about
        row["after_snapshot"] = after_snapshot()
        if proc.poll() is None and str(OPTS["failure_probe"]) == "1":
            row.update(failure_probe(m0, poll))
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    lines, seen = agent_lines(seen)
    events += [x["event"] for x in lines if isinstance(x.get("event"), dict)]
    with contextlib.suppress(OSError):  # the whole log, for out/lab-agent-<scenario>.log
        (RESULTS.parent / f"agent-{row['scenario']}.log").write_bytes(AGENT_LOG.read_bytes())
    row["elapsed"] = round(end - start, 1)
    row["agent_decisions"] = decisions
    row["agent_steps"] = steps_log
    row["agent_events"] = events
    row["agent_exit"] = proc.returncode
    if proc.returncode not in (0, -15):  # it did not stop for our SIGTERM: say why
        row["agent_log_tail"] = AGENT_LOG.read_text(errors="replace").splitlines()[-20:]
        log(f"agent: exited {proc.returncode}: {' | '.join(row['agent_log_tail'][-3:])[:400]}")
    return Run(windows, own_cpu)


def failure_probe(
    m0: list[tuple[str, dict[str, str], float]] | None, poll: float
) -> dict[str, Any]:
    """Allocations that fail while fragmented, with the daemon watching: THP faults with defrag
    off (order 9, GFP_TRANSHUGE_LIGHT: __GFP_NOWARN, never logged) and order-4 add_key(2)
    allocations (kmalloc_large, GFP_KERNEL: logged, rate-limited). The kernel's own counts are
    the truth (thp_fault_fallback, ENOMEM); the daemon's /metrics after its next tick say what
    it traced and what its kernel-log follower found."""
    out: dict[str, Any] = {}
    thp = Path("/sys/kernel/mm/transparent_hugepage")
    old = {f: (thp / f).read_text().split("[")[1].split("]")[0] for f in ("enabled", "defrag")}
    v0 = vmstat_all()
    try:
        (thp / "enabled").write_text("madvise")
        (thp / "defrag").write_text("never")
        size = THP_FAULTS * 2 * MIB
        addr = libc.mmap(None, size + 2 * MIB, PROT_RW, MAP_PRIVATE_ANON_NORESERVE, -1, 0)
        if addr in (None, ctypes.c_void_p(-1).value):
            raise OSError(ctypes.get_errno(), "mmap failed")
        try:
            base = (addr + 2 * MIB - 1) & ~(2 * MIB - 1)
            libc.madvise(base, size, MADV_HUGEPAGE)
            for off in range(0, size, 2 * MIB):
                ctypes.memset(base + off, 1, 1)  # one fault per 2 MiB: a THP attempt each
        finally:
            libc.munmap(addr, size + 2 * MIB)
    finally:
        for f, v in old.items():
            (thp / f).write_text(v)
    v1 = vmstat_all()
    out["thp_attempts"] = THP_FAULTS
    out["thp_failed"] = v1.get("thp_fault_fallback", 0) - v0.get("thp_fault_fallback", 0)
    payload = b"k" * 32767
    failed = 0
    for k in range(ORDER4_KEYS):
        r = libc.syscall(
            SYS_ADD_KEY, b"user", f"fp{k}".encode(), payload, len(payload), KEY_SPEC_PROCESS_KEYRING
        )
        failed += r < 0
    libc.syscall(SYS_KEYCTL, KEYCTL_CLEAR, KEY_SPEC_PROCESS_KEYRING)
    out["order4_attempts"], out["order4_failed"] = ORDER4_KEYS, failed
    out["failures_made"] = out["thp_failed"] + failed
    time.sleep(poll + 2)  # the daemon's next tick reads the trace window and the kernel log
    m1 = scrape()
    if m0 is not None and m1 is not None:
        name_t, name_k = (
            "memfrag_traced_allocation_failures_total",
            "memfrag_kernel_log_findings_total",
        )
        out["failures_traced"] = int(metric_sum(m1, name_t) - metric_sum(m0, name_t))
        out["failures_logged"] = int(metric_sum(m1, name_k) - metric_sum(m0, name_k))
        out["traced_by_order"] = metric_by(m1, name_t, "order")
    return out


@dataclasses.dataclass(frozen=True)
class Ctx:
    """Where a row's parts run: the probe's CPU and NUMA node, the strategies' CPU (-1:
    anywhere)."""

    probe_cpu: int = -1
    probe_node: int = -1
    writer_cpu: int = -1
    # Call when the strategy begins: the kernel's own settings back (kcompactd wakes), the clock
    # of the row's windows starts. The agent calls it once its daemon runs, as on a node where
    # the daemon was already running when the memory fragmented.
    start: Callable[[], None] = lambda: None


STRATEGIES: dict[str, Callable[[dict[str, Any], Ctx], Run]] = {
    "none": strategy_none,
    "seed": strategy_seed,
    "proactive": strategy_proactive,
    "agent": strategy_agent,
    "spin": strategy_spin,
}


def refault_seconds() -> float:
    """Time to read the known page cache file back whole, as its user would next: what a
    strategy dropped comes from the disk again (a virtio disk backed by the host's page cache,
    so a floor of the cost, not a spinning disk's)."""
    t = time.monotonic()
    fd = os.open(CACHE_FILE, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
        while os.read(fd, MIB):
            pass
    finally:
        os.close(fd)
    return round(time.monotonic() - t, 3)


IDLE_SECONDS = 1.5  # the probe's baseline, between the build and the strategy


def run_one(scenario: str, strategy: str) -> dict[str, Any]:
    log(f"{scenario}/{strategy}: building")
    # 2-node guest: the probe runs on node 0 (CPU 0, its memory bound there); everything else
    # of the lab's (this process and its threads, the daemon, the strategies' writes) on node
    # 1's CPU, the fragmented node's, so the probe measures what the fix does to node 0 and not
    # the lab's own log-following sharing its CPU
    ctx = Ctx(probe_cpu=0, probe_node=0, writer_cpu=1) if scenario == "numa" else Ctx()
    affinity = os.sched_getaffinity(0)
    if ctx.writer_cpu >= 0:
        os.sched_setaffinity(0, {ctx.writer_cpu})  # threads and children inherit it
    # The running workload and the daemon are there before the memory fragments, as on a node:
    # their memory is part of the build, not a change made to the built node.
    probe = Probe(ctx.probe_cpu, ctx.probe_node)
    try:
        probe.pause(True)
        try:
            if strategy == "agent" and str(OPTS["agent_first"]) == "1":
                poll = float(OPTS["agent_poll"] or CFG.sources.poll_interval_seconds)
                PRESTARTED.append(launch_daemon(poll, "off", ctx.writer_cpu))  # remediation off
            built = build(scenario)
        finally:
            probe.pause(False)
        try:
            return measure(scenario, strategy, built, probe, ctx)
        finally:
            built.release()
    finally:
        for d in PRESTARTED:  # the strategy never took it
            d.proc.kill()
            d.proc.wait(5)
        PRESTARTED.clear()
        probe.finish()
        os.sched_setaffinity(0, affinity)


def measure(scenario: str, strategy: str, built: Built, probe: Probe, ctx: Ctx) -> dict[str, Any]:
    """One strategy on a built scenario: the row."""
    a = agent_assess(True)
    mi0, vm0, bud0 = meminfo(), vmstat(), workload_buddy()
    rows0 = buddy()
    row: dict[str, Any] = {
        "scenario": scenario,
        "strategy": strategy,
        "blocks_ge4_before": blocks_ge(rows0),
        "verdict": a.verdict,
        "verdict_message": a.message,
        "cause": a.cause.kind,
        "cause_expected": EXPECTED_CAUSE[scenario],
        "cause_matches": a.cause.kind == EXPECTED_CAUSE[scenario],
        "stranded_share": {t: round(s, 3) for t, s in a.cause.stranded_share},
        "fragmented_numa_nodes": list(a.fragmented_numa_nodes),
        "numa_node": built.node,
        "free_mib_before": mi0["MemFree"] // 1024,
        "cache_mib_before": round(mi0["Cached"] / 1024, 1),
        "buddy_before": bud0,
        # kcompactd's own measure (mm/compaction.c): it compacts proactively above the mark
        "kcompactd_score_before": {n: score_now(n) for n in NODES},
        "kcompactd_wmark_high": proactive_wmark_high(built.proactiveness),
        "build": built.info,
        "actions": [],
        "seconds": None,
    }
    if len(NODES) > 1:
        row["blocks_ge4_before_by_node"] = {n: blocks_ge(rows0, node=n) for n in NODES}
    log(
        f"{scenario}/{strategy}: built in {built.info['build_seconds']}s "
        f"({built.info.get('stop')}): {row['blocks_ge4_before']} blocks>=4, "
        f"{row['free_mib_before']} MiB free, kcompactd score {row['kcompactd_score_before']}; "
        f"agent says {a.verdict}, cause {a.cause.kind}"
    )
    if str(OPTS["verbose"]) == "1":
        log(f"{scenario}/{strategy}: {a.message}")
    t_idle = time.monotonic()
    time.sleep(IDLE_SECONDS)
    kpids = kthread_pids()
    k0, p0 = cpu_ticks(kpids), cpu_ticks([probe.proc.pid])
    busy0, lab0 = cpu_busy_ticks(Path("/proc/stat").read_text()), own_cpu()
    sampler = Sampler()
    sampler.start()
    t_start = time.monotonic()

    def begin() -> None:
        nonlocal t_start, busy0, p0, lab0
        t_start = time.monotonic()
        busy0, p0, lab0 = (
            cpu_busy_ticks(Path("/proc/stat").read_text()),
            cpu_ticks([probe.proc.pid]),
            own_cpu(),
        )
        built.start()

    ctx = dataclasses.replace(ctx, start=begin)
    try:
        ran = STRATEGIES[strategy](row, ctx)
    finally:
        t_end = time.monotonic()
        series = sampler.finish()
        k1, p1 = cpu_ticks(kpids), cpu_ticks([probe.proc.pid])
        busy1, lab1 = cpu_busy_ticks(Path("/proc/stat").read_text()), own_cpu()
        # the row's "after" while the probe still holds its memory: its exit frees ~15 MiB,
        # largely contiguous, which no strategy did (the agent's is taken before its failure
        # probe, for the same reason)
        snap = row.pop("after_snapshot", None) or after_snapshot()
        samples = probe.finish()
    mi1, vm1, rows1 = snap["meminfo"], snap["vmstat"], snap["buddy"]
    windows = ran.windows if ran.windows is not None else [(t_start, t_end)]
    # an iteration that started just before an action and was held by it counts too
    windows = [(a0 - 0.05, b0) for a0, b0 in windows]
    row.update(
        blocks_ge4_after=blocks_ge(rows1),
        recovered=snap["recovered"],
        free_mib_after=mi1["MemFree"] // 1024,
        cache_mib_after=round(mi1["Cached"] / 1024, 1),
        cache_dropped_mib=round(max(0, mi0["Cached"] - mi1["Cached"]) / 1024, 1),
        buddy_after={f"{n}/{z}": cs for n, z, cs in rows1 if z != "DMA"},
        kcompactd_score_after={n: kcompactd_score(rows1, _PRESENT, n) for n in NODES},
        vmstat_delta={k: vm1[k] - vm0.get(k, 0) for k in vm1 if vm1[k] != vm0.get(k, 0)},
        cpu_seconds=round(ran.own_cpu + (k1 - k0) / CLK_TCK, 2),
        cpu_kthreads_seconds=round((k1 - k0) / CLK_TCK, 2),
        # who else ran, from the strategy's start: each CPU's busy time, the probe's own, and
        # this process's (the lab's following and sampling); in the 2-node guest CPU 0 less the
        # probe is what shared the probe's CPU
        cpu_busy_seconds={n: round((busy1[n] - busy0.get(n, 0)) / CLK_TCK, 2) for n in busy1},
        probe_cpu_seconds=round((p1 - p0) / CLK_TCK, 2),
        lab_cpu_seconds=round(lab1 - lab0, 2),
        strategy_seconds=round(t_end - t_start, 1),
        **latency_summary(samples, windows),
        workload_idle_p99_ms=latency_summary(samples, [(t_idle, t_idle + IDLE_SECONDS)])[
            "workload_p99_ms"
        ],
    )
    for step, w in zip(row.get("agent_steps", []), windows, strict=False):
        step.update(latency_summary(samples, [w]))
    if len(NODES) > 1:
        row["blocks_ge4_after_by_node"] = {n: blocks_ge(rows1, node=n) for n in NODES}
    row["refault_seconds"] = refault_seconds()
    save_series(scenario, strategy, series, t_start - sampler.t0)
    log(
        f"{scenario}/{strategy}: blocks>=4 {row['blocks_ge4_before']} -> "
        f"{row['blocks_ge4_after']}, recovered={row['recovered']} in {row['seconds']}s, "
        f"cache dropped {row['cache_dropped_mib']} MiB, actions {row['actions']}, "
        f"probe p99 {row['workload_p99_ms']} max {row['workload_max_ms']} ms "
        f"(idle {row['workload_idle_p99_ms']}), cpu {row['cpu_seconds']}s, "
        f"busy {row['cpu_busy_seconds']} probe {row['probe_cpu_seconds']} "
        f"lab {row['lab_cpu_seconds']}, refault {row['refault_seconds']}s"
    )
    return row


def save_series(
    scenario: str, strategy: str, series: list[list[float | int]], offset: float
) -> None:
    """out/lab-series/<scenario>-<strategy>.json (run.py moves it there)."""
    doc = {
        "scenario": scenario,
        "strategy": strategy,
        "kernel": platform.release(),
        "columns": ["seconds", "blocks_ge4", *(f"node{n}" for n in NODES)],
        "strategy_starts_at": round(offset, 2),
        "series": series,
    }
    (RESULTS.parent / f"series-{scenario}-{strategy}.json").write_text(json.dumps(doc) + "\n")


# --- a real allocation failure ------------------------------------------------------------------
def read_kmsg(limit: int = 200000) -> list[bytes]:
    fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    out: list[bytes] = []
    try:
        while len(out) < limit:
            try:
                rec = os.read(fd, 8192)
            except BlockingIOError:
                break
            except BrokenPipeError:
                continue  # records overwritten before we read them
            if not rec:
                break
            out.append(rec.split(b"\n", 1)[0])
    finally:
        os.close(fd)
    return out


def probe_failure() -> dict[str, Any]:
    """With memory fragmented by unmovable pages (kernel-mixed), ask the kernel for order-4
    blocks the way a program can: add_key(2) of a 32767-byte 'user' key kmallocs 32767 + header
    bytes, which is kmalloc_large, an order-4 page allocation without __GFP_NOWARN. Then read
    /dev/kmsg with the agent's matcher."""
    log("probe: building unmovable fragmentation for a real order-4 allocation failure")
    built = build("kernel-mixed")
    out: dict[str, Any] = {"blocks_ge4_before": blocks_ge4(), "build": built.info}
    built.start()
    with contextlib.suppress(OSError):
        Path("/proc/sys/kernel/keys/root_maxbytes").write_text("400000000")
        Path("/proc/sys/kernel/keys/root_maxkeys").write_text("100000")
    payload = b"k" * 32767
    ok = 0
    err = None
    try:
        for k in range(2000):
            r = libc.syscall(
                SYS_ADD_KEY, b"user", f"lab{k}".encode(), payload, len(payload),
                KEY_SPEC_PROCESS_KEYRING,
            )  # fmt: skip
            if r < 0:
                err = errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))
                break
            ok += 1
            if k % 16 == 0 and meminfo()["MemAvailable"] < 24 * 1024:
                err = "stopped: MemAvailable below 24 MiB"
                break
        out.update(keys_added=ok, stopped_by=err, blocks_ge4_at_end=blocks_ge4())
        a = agent_assess(True)
        out.update(verdict=a.verdict, cause=a.cause.kind, message=a.message)
    finally:
        libc.syscall(SYS_KEYCTL, KEYCTL_CLEAR, KEY_SPEC_PROCESS_KEYRING)
        built.release()
    findings = [f.to_json() for f in scan(read_kmsg())]
    out["findings"] = findings
    log(
        f"probe: {ok} order-4 keys added, then {err}; agent's matcher found "
        f"{len(findings)} finding(s) in /dev/kmsg"
        + (f": {str(findings[0]['text'])[:120]}" if findings else "")
    )
    return out


# --- the command line, as an operator runs it ---------------------------------------------------
def cli_check() -> dict[str, Any]:
    """`memfrag-agent check --output json`, `remediate --action compact --dry-run` and three
    seconds of `run --standalone`, run from the read-only repo with Debian's python3 and
    python3-yaml (and, for run, the pinned prometheus-client), and which third-party modules
    they import: never kubernetes."""
    out: dict[str, Any] = {}
    probe = (
        "import json, sys; from agent.cli.main import main; rc = main(sys.argv[1:]); "
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'kubernetes', 'prometheus_client', 'yaml', 'urllib3', 'requests'})), file=sys.stderr); "
        "sys.exit(rc)"
    )
    cfg = Path("/tmp/lab-cli-run.yaml")
    cfg.write_text(json.dumps({"reporting": {"metrics_address": "127.0.0.1", "metrics_port": 0}}))
    # `run --standalone` until its SIGTERM handler is in (the daemon runs), two seconds more,
    # then its own SIGTERM: the daemon's imports, without the kubernetes package (the guest has
    # none)
    stop_later = (
        "import os, signal, threading, time\n"
        "def _stop():\n"
        "    while signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):\n"
        "        time.sleep(0.2)\n"
        "    time.sleep(2)\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "threading.Thread(target=_stop, daemon=True).start()\n"
    )
    for name, argv in (
        ("check", ["check", "--output", "json"]),
        ("remediate", ["remediate", "--action", "compact", "--dry-run"]),
        ("run --standalone", ["run", "--standalone", "--config", str(cfg)]),
    ):
        code = (stop_later if name.startswith("run") else "") + probe.replace("; ", "\n")
        p = subprocess.run(
            [sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120,
            check=False, env=os.environ,
        )  # fmt: skip
        err = p.stderr.strip().splitlines()
        out[name] = {"exit": p.returncode, "third_party_imported": err[-1] if err else None}
        if name == "check":
            with contextlib.suppress(ValueError):
                j = json.loads(p.stdout)
                out[name]["verdict"] = j.get("verdict")
        elif name == "remediate":
            out[name]["stdout"] = p.stdout.strip()
    log(f"cli: {out}")
    return out


# --- main ---------------------------------------------------------------------------------------
def parse_args(argv: list[str]) -> None:
    for arg in argv:
        k, _, v = arg.partition("=")
        if k not in OPTS:
            raise SystemExit(f"guest.py: unknown option {k!r} (known: {', '.join(OPTS)})")
        OPTS[k] = v


def main() -> int:
    parse_args(sys.argv[1:])
    doc: dict[str, Any] = {
        "kernel": platform.release(),
        "proc_version": Path("/proc/version").read_text().strip(),
        "python": platform.python_version(),
        "mem_total_mib": meminfo()["MemTotal"] // 1024,
        "numa_nodes": NODES,
        "cpus": os.cpu_count(),
        "sysctl": {k: int((VM / k).read_text()) for k in SYSCTLS},
        "thp": Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text().strip(),
        "options": dict(OPTS),
        "rows": [],
        "notes": [],
        "complete": False,
    }

    def save() -> None:
        doc["guest_seconds"] = round(time.monotonic() - T0, 1)
        tmp = RESULTS.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc, indent=2) + "\n")
        tmp.replace(RESULTS)

    log(f"kernel {doc['kernel']}, {doc['mem_total_mib']} MiB, nodes {NODES}, options {OPTS}")
    score_now(0)  # /proc/zoneinfo read now, while nothing is fragmented (HugeBlock)
    try:
        loopback_up()
    except OSError as exc:
        doc["notes"].append(f"lo could not be brought up ({exc}): the agent's /metrics unread")
    doc["cli"] = cli_check()
    resource.setrlimit(resource.RLIMIT_NOFILE, (65536, 65536))
    ensure_cache_file(int(OPTS["cache_mib"]))
    save()
    deadline = float(OPTS["deadline"])
    for scenario in filter(None, str(OPTS["scenarios"]).split("+")):
        for strategy in filter(None, str(OPTS["strategies"]).split("+")):
            if time.monotonic() - T0 > deadline:
                doc["notes"].append(
                    f"{scenario}/{strategy} skipped: past the {deadline:g}s deadline"
                )
                continue
            try:
                doc["rows"].append(run_one(scenario, strategy))
            except Exception as exc:  # one broken run must not lose the others
                log(f"{scenario}/{strategy}: failed: {exc!r}")
                doc["notes"].append(f"{scenario}/{strategy} failed: {exc!r}")
            save()
    if str(OPTS["probe"]) == "1" and time.monotonic() - T0 < deadline:
        try:
            doc["kmsg_probe"] = probe_failure()
            doc["kmsg_findings"] = [
                {k: f[k] for k in ("kind", "order", "process", "mode", "facility")}
                for f in doc["kmsg_probe"]["findings"]
            ]
        except Exception as exc:
            doc["notes"].append(f"probe failed: {exc!r}")
    doc["complete"] = not any("failed" in n or "skipped" in n for n in doc["notes"])
    save()
    log("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
