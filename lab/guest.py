#!/usr/bin/env python3
"""Runs inside the lab VM (lab/run.py boots it): fragment this kernel's memory on purpose, three
ways, and measure what each remediation strategy gets back.

Scenarios (each rebuilt from a clean, compacted start before every strategy):
  movable      anonymous memory fills the free memory until no order>=4 block is left, then one
               page of every buddy pair of physical frames is released (madvise MADV_DONTNEED;
               frames from /proc/self/pagemap): free memory in order-0 holes between movable
               pages, which compaction can migrate.
  reclaimable  an anonymous ballast takes most of the memory; the rest fills with dentry slab
               (negative dentries from lookups of missing names) in alternating runs of two
               directories until no order>=4 block is left; then one directory is removed, which
               frees its dentries: holes between reclaimable slab pages.
  unmovable    the same ballast; the rest fills with pipe buffers, one page at a time alternately
               into two sets of pipes; then one set is closed: holes between pipe pages, kernel
               memory that neither compaction nor drop_caches can move or free.
A page cache of a known size (a 32 MiB file, read a page at a time between the fill's anonymous
pages, so the two are interleaved in physical memory) is present in every scenario, so what a
strategy drops is measured.

Strategies:
  none    wait (kcompactd at the default vm.compaction_proactiveness), up to none_wait seconds
  seed    the incident's manual fix: echo 3 > drop_caches; echo 1 > compact_memory
  agent   the daemon itself: `memfrag-agent run --standalone` (python3 -m agent) with
          remediation.mode on, defaults otherwise, polling every sources.poll_interval_seconds;
          what it did is read from its JSON log, until it says the node recovered or it has had
          nothing to run for three polls

Arguments are key=value (from the kernel command line, lab.args=...); lists use '+'.
Results: /results/lab.json, rewritten after every row.
"""

from __future__ import annotations

import array
import contextlib
import ctypes
import dataclasses
import errno
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Any

from agent.assess.verdict import Assessment, assess
from agent.config.model import Config
from agent.kernel.kmsg import scan
from agent.kernel.procfs import ProcReader

PAGE = 4096
MIB = 1 << 20
VM = Path("/proc/sys/vm")
RESULTS = Path("/results/lab.json")
REPO = Path(__file__).resolve().parents[1]  # /repo in the guest
EXPECTED_CAUSE = {"movable": "movable", "reclaimable": "reclaimable", "unmovable": "unmovable"}
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
    "scenarios": "movable+reclaimable+unmovable",
    "strategies": "none+seed+agent",
    "none_wait": 60,  # seconds the 'none' strategy waits for kcompactd
    "agent_poll": None,  # seconds between the agent's polls; default: the config's
    "agent_budget": 120,  # seconds the agent loop may run
    "room_mib": 64,  # free memory the ballast leaves for the slab/pipe phase
    "cache_mib": 32,  # page cache read in before every build
    "stop_blocks": 8,  # fill until at most this many order>=4 blocks are free
    "build_min_free_kbytes": 512,  # vm.min_free_kbytes while building (restored after)
    "probe": 1,  # try to provoke a real high-order allocation failure at the end
    "deadline": 2100,  # seconds for the whole run; later runs are skipped
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
MADV_DONTNEED, MADV_NOHUGEPAGE = 4, 15
PFN_MASK = (1 << 55) - 1
SYS_ADD_KEY, SYS_KEYCTL = 248, 250  # x86_64
KEY_SPEC_PROCESS_KEYRING, KEYCTL_CLEAR = -2, 7

T0 = time.monotonic()
reader = ProcReader("/proc", "/sys")
CFG = Config()


def log(msg: str) -> None:
    print(f"lab [{time.monotonic() - T0:6.1f}s] {msg}", flush=True)


# --- /proc --------------------------------------------------------------------------------------
def buddy() -> list[tuple[int, str, list[int]]]:
    rows = []
    for line in Path("/proc/buddyinfo").read_text().splitlines():
        head, _, counts = line.partition("zone")
        parts = counts.split()
        rows.append((int(head.split()[1].rstrip(",")), parts[0], [int(c) for c in parts[1:]]))
    return rows


def blocks_ge4(rows: list[tuple[int, str, list[int]]] | None = None) -> int:
    """Free blocks of order >= 4 in the workload zones (every zone but the 16 MiB ISA DMA zone),
    larger blocks counted as several: sum(count[o] << (o - 4))."""
    rows = buddy() if rows is None else rows
    return sum(c << (o - 4) for _, z, cs in rows if z != "DMA" for o, c in enumerate(cs) if o >= 4)


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


def vm_write(name: str, value: str | int) -> None:
    fd = os.open(VM / name, os.O_WRONLY)
    try:
        os.write(fd, str(value).encode())
    finally:
        os.close(fd)


def agent_assess(with_pagetype: bool = True) -> Assessment:
    return assess(reader.observe(with_pagetypeinfo=with_pagetype), CFG.assessment)


def fragmented() -> bool:
    return agent_assess(False).verdict == "fragmented"


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

    def punch_one_per_pair(self) -> int:
        """Release one page of every buddy pair of frames (frames 2k and 2k+1), which one chosen
        by a fixed hash of k; frame numbers come from /proc/self/pagemap (visible to root). No two
        buddies are freed, so the holes stay order-0 whatever order the kernel handed frames out
        in. (Not simply every odd frame: the kernel's free scanner samples a pageblock with a
        stride of up to 32 pages after empty blocks, and a period-2 pattern hides every hole from
        it: lab/README.md.)"""
        npages = self.touched // PAGE
        with open("/proc/self/pagemap", "rb") as fh:
            fh.seek(self.addr // PAGE * 8)
            entries = array.array("Q", fh.read(npages * 8))
        freed = 0
        for i, e in enumerate(entries):
            if not e >> 63:
                continue
            pfn = e & PFN_MASK
            chosen = (pfn & 1) == ((pfn >> 1) * 0x9E3779B1 >> 17) & 1
            if chosen and libc.madvise(self.addr + i * PAGE, PAGE, MADV_DONTNEED) == 0:
                freed += 1
        return freed

    def release(self) -> None:
        if self.addr:
            libc.munmap(self.addr, self.size)
            self.addr = 0


@dataclasses.dataclass
class Built:
    scenario: str
    holders: list[Any]
    info: dict[str, Any]
    proactiveness: int = 20

    def start(self) -> None:
        """Back to the kernel's own settings: the strategy under test starts now (writing a
        non-zero compaction_proactiveness also wakes kcompactd)."""
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

    def __init__(self) -> None:
        self.fd = os.open(CACHE_FILE, os.O_RDONLY)
        os.posix_fadvise(self.fd, 0, 0, os.POSIX_FADV_RANDOM)
        self.size = os.fstat(self.fd).st_size
        self.off = 0

    def read_pages(self, n: int) -> None:
        for _ in range(n):
            if self.off >= self.size:
                return
            os.pread(self.fd, PAGE, self.off)
            self.off += PAGE

    def close(self) -> None:
        self.read_pages(self.size // PAGE)  # whatever the fill did not interleave
        os.close(self.fd)


def clean_start() -> None:
    """The same starting point before every build: caches dropped, memory compacted."""
    os.sync()
    vm_write("drop_caches", 3)
    vm_write("compact_memory", 1)
    time.sleep(1.0)


def fill_anon(region: Anon, until: Any, floor_kib: int, cache: CacheFile) -> str:
    """Touch memory 256 KiB at a time, each 32 KiB followed by one page of the cache file, until
    `until()` says stop, the memory left (MemAvailable) falls to `floor_kib` or the mapping ends.
    The floor keeps the guest out of the OOM killer: reclaim must leave python's own file pages
    alone."""
    step = MIB // 4
    while region.touched < region.size:
        if meminfo()["MemAvailable"] < floor_kib:
            return "MemAvailable floor"
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
    try:
        region = Anon(total)
        built.holders.append(region)
        cache = CacheFile()
        if scenario == "movable":
            info["stop"] = fill_anon(region, lambda: blocks_ge4() <= stop, floor_kib, cache)
            cache.close()
            info["blocks_at_fill"] = blocks_ge4()
            info["filled_mib"] = region.touched // MIB
            info["fill_seconds"] = round(time.monotonic() - start, 1)
            info["buddy_at_fill"] = workload_buddy()
            t = time.monotonic()
            info["pages_freed"] = region.punch_one_per_pair()
            info["punch_seconds"] = round(time.monotonic() - t, 1)
        else:
            room = int(OPTS["room_mib"]) * 1024
            info["ballast_stop"] = fill_anon(
                region, lambda: meminfo()["MemFree"] <= room, floor_kib, cache
            )
            info["ballast_mib"] = region.touched // MIB
            cache.close()
            if scenario == "reclaimable":
                fill_dentries(built, stop, floor_kib)
            elif scenario == "unmovable":
                fill_pipes(built, stop, floor_kib)
            else:
                raise ValueError(scenario)
        mi = meminfo()
        info["at_fill"] = {k: mi[k] // 1024 for k in ("MemFree", "MemAvailable", "Cached")}
    except BaseException:
        vm_write("compaction_proactiveness", default_proactiveness)
        raise
    finally:
        vm_write("min_free_kbytes", default_mfk)
        vm_write("watermark_boost_factor", default_boost)
    built.proactiveness = default_proactiveness
    vm1 = vmstat()
    info["vmstat_delta"] = {k: vm1[k] - vm0.get(k, 0) for k in vm1 if vm1[k] != vm0.get(k, 0)}
    info["build_seconds"] = round(time.monotonic() - start, 1)
    return built


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
    pipe B of each pair; every B is closed afterwards."""
    p = Pipes()
    built.holders.append(p)
    page = b"\xa5" * PAGE
    pairs: list[tuple[int, int, int, int]] = []
    reason = "pipe cap"
    max_pairs = int(OPTS["room_mib"]) * MIB // (32 * PAGE) * 2
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


# --- strategies ---------------------------------------------------------------------------------
def strategy_none(row: dict[str, Any]) -> None:
    wait = float(OPTS["none_wait"])
    start = time.monotonic()
    while time.monotonic() - start < wait:
        time.sleep(1.0)
        if not fragmented():
            row["seconds"] = round(time.monotonic() - start, 1)
            break
    row["elapsed"] = round(time.monotonic() - start, 1)


def strategy_seed(row: dict[str, Any]) -> None:
    start = time.monotonic()
    vm_write("drop_caches", 3)
    vm_write("compact_memory", 1)
    row["actions"] = ["drop-caches=3", "compact"]
    time.sleep(SETTLE_SECONDS)
    row["elapsed"] = round(time.monotonic() - start, 1)
    if not fragmented():
        row["seconds"] = row["elapsed"]


AGENT_LOG = Path("/tmp/lab-agent.log")


def agent_pythonpath() -> str:
    """The repo, and prometheus_client (pure Python) from the repo's venv: Debian's package is
    older than the agent needs. Only that one package is exposed, nothing else of the venv."""
    found = sorted((REPO / ".venv/lib").glob("python3*/site-packages/prometheus_client"))
    if not found:
        raise RuntimeError(
            "the agent strategy runs the daemon, which needs prometheus_client: none in "
            f"{REPO}/.venv (run `make venv` on the host first)"
        )
    lib = Path("/tmp/lab-pylib")
    lib.mkdir(exist_ok=True)
    link = lib / "prometheus_client"
    if not link.exists():
        link.symlink_to(found[-1])
    return f"{REPO}:{lib}"


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


def strategy_agent(row: dict[str, Any]) -> None:
    """The real daemon, `memfrag-agent run --standalone` with remediation.mode on (defaults
    otherwise), followed through its JSON log: each remediation it runs, the why of each of its
    decisions, until it says the node recovered, it has had nothing to run for three polls, or
    agent_budget runs out."""
    import subprocess

    poll = float(OPTS["agent_poll"] or CFG.sources.poll_interval_seconds)
    budget = float(OPTS["agent_budget"])
    obs = reader.observe(with_pagetypeinfo=False)
    if obs.pressure is not None:
        row["psi_some_avg10_at_start"] = obs.pressure.some_avg10
    config = Path("/tmp/lab-agent.yaml")
    config.write_text(
        json.dumps(  # JSON is YAML
            {
                "sources": {
                    "poll_interval_seconds": poll,
                    "pagetypeinfo_interval_seconds": max(poll, 300.0),
                },
                # The guest has no network and lo may be down: any address, any port.
                "reporting": {"metrics_address": "0.0.0.0", "metrics_port": 0},
                "remediation": {"mode": "on"},
            }
        )
    )
    decisions: list[str] = []
    steps_log: list[dict[str, Any]] = []
    start = time.monotonic()
    with open(AGENT_LOG, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "agent", "run", "--standalone", "--config", str(config),
             "--log-format", "json"],
            stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": agent_pythonpath()},
        )  # fmt: skip
    seen = 0
    last_action = time.monotonic()
    try:
        while time.monotonic() - start < budget and proc.poll() is None:
            time.sleep(0.5)
            lines, seen = agent_lines(seen)
            done = False
            for x in lines:
                msg = str(x.get("msg", ""))
                if msg.startswith("assessment "):
                    if x.get("verdict") != "fragmented":
                        done = True
                    elif x.get("remediation"):
                        decisions.append(str(x["remediation"]))
                elif msg == "remediation starting":
                    decisions.append(f"{x.get('action')}: {x.get('why')}")
                elif msg.startswith("remediation ") and "result" in x:
                    last_action = time.monotonic()
                    row["actions"].append(x["action"])
                    steps_log.append(
                        {k: x.get(k) for k in ("result", "seconds", "blocks_before",
                                               "blocks_after", "error")} | {"step": x["action"]}
                    )  # fmt: skip
                    done = done or bool(x.get("recovered"))
            if done:
                row["seconds"] = round(time.monotonic() - start, 1)
                break
            if time.monotonic() - last_action > 3 * poll + SETTLE_SECONDS:
                break  # the daemon waits for an operator (or a cooldown): nothing more here
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    row["elapsed"] = round(time.monotonic() - start, 1)
    row["agent_decisions"] = decisions
    row["agent_steps"] = steps_log
    row["agent_exit"] = proc.returncode
    if proc.returncode not in (0, -15):  # it did not stop for our SIGTERM: say why
        row["agent_log_tail"] = AGENT_LOG.read_text(errors="replace").splitlines()[-20:]


STRATEGIES = {"none": strategy_none, "seed": strategy_seed, "agent": strategy_agent}


def run_one(scenario: str, strategy: str) -> dict[str, Any]:
    log(f"{scenario}/{strategy}: building")
    built = build(scenario)
    try:
        a = agent_assess(True)
        mi0, vm0, bud0 = meminfo(), vmstat(), workload_buddy()
        row: dict[str, Any] = {
            "scenario": scenario,
            "strategy": strategy,
            "blocks_ge4_before": blocks_ge4(),
            "verdict": a.verdict,
            "cause": a.cause.kind,
            "cause_expected": EXPECTED_CAUSE[scenario],
            "cause_matches": a.cause.kind == EXPECTED_CAUSE[scenario],
            "stranded_share": {t: round(s, 3) for t, s in a.cause.stranded_share},
            "free_mib_before": mi0["MemFree"] // 1024,
            "cache_mib_before": round(mi0["Cached"] / 1024, 1),
            "buddy_before": bud0,
            "build": built.info,
            "actions": [],
            "seconds": None,
        }
        log(
            f"{scenario}/{strategy}: built in {built.info['build_seconds']}s "
            f"({built.info.get('stop')}): {row['blocks_ge4_before']} blocks>=4, "
            f"{row['free_mib_before']} MiB free; agent says {a.verdict}, cause {a.cause.kind}"
        )
        built.start()
        STRATEGIES[strategy](row)
        mi1, vm1 = meminfo(), vmstat()
        row.update(
            blocks_ge4_after=blocks_ge4(),
            recovered=not fragmented(),
            free_mib_after=mi1["MemFree"] // 1024,
            cache_mib_after=round(mi1["Cached"] / 1024, 1),
            cache_dropped_mib=round(max(0, mi0["Cached"] - mi1["Cached"]) / 1024, 1),
            buddy_after=workload_buddy(),
            vmstat_delta={k: vm1[k] - vm0.get(k, 0) for k in vm1 if vm1[k] != vm0.get(k, 0)},
        )
        log(
            f"{scenario}/{strategy}: blocks>=4 {row['blocks_ge4_before']} -> "
            f"{row['blocks_ge4_after']}, recovered={row['recovered']} in {row['seconds']}s, "
            f"cache dropped {row['cache_dropped_mib']} MiB, actions {row['actions']}"
        )
        return row
    finally:
        built.release()


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
    """With memory fragmented by unmovable pages, ask the kernel for order-4 blocks the way a
    program can: add_key(2) of a 32767-byte 'user' key kmallocs 32767 + header bytes, which is
    kmalloc_large, an order-4 page allocation without __GFP_NOWARN. Then read /dev/kmsg with the
    agent's matcher."""
    log("probe: building unmovable fragmentation for a real order-4 allocation failure")
    built = build("unmovable")
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
    """`memfrag-agent check --output json` and `remediate --action compact --dry-run`, run from
    the read-only repo with only Debian's python3 and python3-yaml, and which third-party
    modules they import."""
    import subprocess

    out: dict[str, Any] = {}
    probe = (
        "import json, sys; from agent.cli.main import main; rc = main(sys.argv[1:]); "
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'kubernetes', 'prometheus_client', 'yaml', 'urllib3', 'requests'})), file=sys.stderr); "
        "sys.exit(rc)"
    )
    for name, argv in (
        ("check", ["check", "--output", "json"]),
        ("remediate", ["remediate", "--action", "compact", "--dry-run"]),
    ):
        p = subprocess.run(
            [sys.executable, "-c", probe, *argv], capture_output=True, text=True, timeout=120,
            check=False, env={**os.environ, "PYTHONPATH": "/repo"},
        )  # fmt: skip
        err = p.stderr.strip().splitlines()
        out[name] = {"exit": p.returncode, "third_party_imported": err[-1] if err else None}
        if name == "check":
            with contextlib.suppress(ValueError):
                j = json.loads(p.stdout)
                out[name]["verdict"] = j.get("verdict")
        else:
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

    log(f"kernel {doc['kernel']}, {doc['mem_total_mib']} MiB, options {OPTS}")
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
