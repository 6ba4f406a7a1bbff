"""The lab's pure arithmetic: the text it reads in the guest (buddyinfo, the daemon's /metrics,
/proc/<pid>/stat) and the numbers it reports (blocks, latency percentiles over the windows a fix
ran in). No I/O, so tests/unit/lab checks it on the host; guest.py and run.py import it with the
standard library only (the guest has no pytest and no venv).
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Iterable, Sequence

BuddyRow = tuple[int, str, list[int]]  # NUMA node, zone, free blocks per order


def parse_buddyinfo(text: str) -> list[BuddyRow]:
    """`Node 0, zone   DMA32   3 4 ...` lines; a line of another shape is an error naming it
    (the lab's numbers would be wrong, not merely short)."""
    rows: list[BuddyRow] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        m = re.fullmatch(r"Node\s+(\d+),\s+zone\s+(\S+)((?:\s+\d+)+)\s*", line)
        if m is None:
            raise ValueError(f"/proc/buddyinfo: unexpected line {line[:80]!r}")
        rows.append((int(m[1]), m[2], [int(c) for c in m[3].split()]))
    return rows


def blocks_ge(rows: Iterable[BuddyRow], order: int = 4, node: int | None = None) -> int:
    """Free blocks of `order` and above in the workload zones (all but the 16 MiB ISA DMA zone),
    a larger block counted as the blocks it holds: sum(count[o] << (o - order)), as
    agent.assess.verdict counts them. `node`: one NUMA node only."""
    return sum(
        c << (o - order)
        for n, z, cs in rows
        if z != "DMA" and (node is None or n == node)
        for o, c in enumerate(cs)
        if o >= order
    )


def parse_zoneinfo_present(text: str) -> dict[tuple[int, str], int]:
    """Each zone's `present` pages from /proc/zoneinfo (`Node 0, zone   DMA32` then
    `present  126960`): the weights of the kernel's fragmentation score."""
    out: dict[tuple[int, str], int] = {}
    zone: tuple[int, str] | None = None
    for line in text.splitlines():
        m = re.match(r"Node\s+(\d+),\s+zone\s+(\S+)", line)
        if m:
            zone = (int(m[1]), m[2])
            continue
        parts = line.split()
        if zone is not None and len(parts) == 2 and parts[0] == "present":
            out[zone] = int(parts[1])
            zone = None
    return out


HPAGE_ORDER = 9  # COMPACTION_HPAGE_ORDER on x86_64: the order kcompactd's score is about


def kcompactd_score(
    rows: Iterable[BuddyRow], present: dict[tuple[int, str], int], node: int
) -> int:
    """The kernel's fragmentation_score_node (mm/compaction.c, 6.1): each zone's extfrag for
    order 9 (the share of its free pages not in blocks of order >= 9, 0..100) weighted by its
    present pages over the node's, integer arithmetic as the kernel does it. kcompactd's
    proactive compaction runs only while this is above proactive_wmark_high()."""
    mine = [(z, cs) for n, z, cs in rows if n == node]
    node_present = sum(present.get((node, z), 0) for z, _ in mine)
    score = 0
    for z, cs in mine:
        free = sum(c << o for o, c in enumerate(cs))
        if not free:
            continue
        suitable = sum(c << (o - HPAGE_ORDER) for o, c in enumerate(cs) if o >= HPAGE_ORDER)
        extfrag = (free - (suitable << HPAGE_ORDER)) * 100 // free
        score += present.get((node, z), 0) * extfrag // (node_present + 1)
    return score


def proactive_wmark_high(proactiveness: int) -> int:
    """The score above which kcompactd compacts proactively (fragmentation_score_wmark, high):
    max(100 - proactiveness, 5) + 10, at most 100; 90 at the default proactiveness 20."""
    return min(max(100 - proactiveness, 5) + 10, 100)


_SAMPLE = re.compile(
    r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>[^}]*)\})?\s+(?P<value>\S+)(?:\s+\S+)?$"
)
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str) -> list[tuple[str, dict[str, str], float]]:
    """Prometheus text exposition samples (name, labels, value); comments and lines of another
    shape are skipped: the lab reads what it knows and says when a metric is missing."""
    out: list[tuple[str, dict[str, str], float]] = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if m is None:
            continue
        try:
            value = float(m["value"])
        except ValueError:
            continue
        labels = dict(_LABEL.findall(m["labels"] or ""))
        out.append((m["name"], labels, value))
    return out


def metric_sum(
    samples: Iterable[tuple[str, dict[str, str], float]], name: str, **match: str
) -> float:
    """The sum of `name`'s samples whose labels include `match` (0 when there are none)."""
    return sum(
        v
        for n, labels, v in samples
        if n == name and all(labels.get(k) == x for k, x in match.items())
    )


def metric_by(
    samples: Iterable[tuple[str, dict[str, str], float]], name: str, *keys: str
) -> dict[str, float]:
    """`name`'s samples keyed by the labels `keys` joined with '/', zero values left out."""
    out: dict[str, float] = {}
    for n, labels, v in samples:
        if n == name and v:
            k = "/".join(labels.get(x, "") for x in keys)
            out[k] = out.get(k, 0.0) + v
    return out


def proc_cpu_ticks(stat: str) -> int:
    """utime + stime (clock ticks) from a /proc/<pid>/stat line; the comm may hold spaces and
    parentheses, so the fields are counted after its last ')'."""
    rest = stat[stat.rindex(")") + 2 :].split()
    return int(rest[11]) + int(rest[12])  # fields 14 and 15 of proc(5)


def cpu_busy_ticks(stat: str) -> dict[int, int]:
    """Busy clock ticks of each CPU from /proc/stat's `cpuN` lines: every field but idle and
    iowait (user nice system idle iowait irq softirq steal; guest time is inside user)."""
    out: dict[int, int] = {}
    for line in stat.splitlines():
        name, _, rest = line.partition(" ")
        if name.startswith("cpu") and name[3:].isdigit():
            f = [int(x) for x in rest.split()[:8]]
            out[int(name[3:])] = sum(f) - f[3] - f[4]
    return out


def log_ts_seconds(ts: str) -> float | None:
    """The daemon's JSON log `ts` (`2026-12-02T07:40:01.123Z`, UTC) as epoch seconds; None for
    another shape (the lab then times the line by when it read it)."""
    try:
        t = dt.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC)
    except ValueError:
        return None
    return t.timestamp()


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100), nearest rank; None for no values."""
    if not values:
        return None
    s = sorted(values)
    k = max(0, math.ceil(q / 100 * len(s)) - 1)
    return s[min(k, len(s) - 1)]


def in_windows(
    samples: Iterable[tuple[float, float]], windows: Iterable[tuple[float, float]]
) -> list[float]:
    """The values of (time, value) samples whose time falls in any [start, end] window."""
    ws = sorted(windows)
    return [v for t, v in samples if any(a <= t <= b for a, b in ws)]


def latency_summary(
    samples: Sequence[tuple[float, float]], windows: Sequence[tuple[float, float]]
) -> dict[str, float | int | None]:
    """p99 and max (ms) of the probe's lateness over the windows a fix ran in, and how many
    iterations that was; None where the windows held none."""
    got = in_windows(samples, windows)
    p99 = percentile(got, 99)
    return {
        "workload_p99_ms": None if p99 is None else round(p99 * 1000, 2),
        "workload_max_ms": round(max(got) * 1000, 2) if got else None,
        "workload_samples": len(got),
    }


def share(part: float | None, whole: float | None) -> float | None:
    """part / whole, rounded; None when either is missing or the whole is 0."""
    if part is None or not whole:
        return None
    return round(part / whole, 2)


def show(rows: Sequence[dict[str, object]]) -> list[str]:
    """The issue's claims checked on a run's rows, one line each: in every recoverable scenario
    the agent recovers with >= 0.8 of the seed fix's blocks, <= 10 % of its dropped page cache
    (movable, reclaimable) and a lower stall (probe p99); in the hopeless one it takes no more
    actions than the seed's two and says why (RemediationNotPossible); on two nodes it compacts
    one node only."""
    by = {(r.get("scenario"), r.get("strategy")): r for r in rows}
    out = []
    for scenario in ("movable", "reclaimable", "kernel-mixed", "numa"):
        a, s = by.get((scenario, "agent")), by.get((scenario, "seed"))
        if a is None or s is None:
            continue
        ok = [f"recovered {'yes' if a.get('recovered') else 'NO'}"]
        b = a.get("blocks_vs_seed")
        ok.append(f"blocks {b} of seed's {'ok' if isinstance(b, float) and b >= 0.8 else 'SHORT'}")
        if scenario in ("movable", "reclaimable"):
            c = a.get("cache_vs_seed")
            good = isinstance(c, float) and c <= 0.1
            ok.append(f"cache dropped {c} of seed's {'ok' if good else 'TOO MUCH'}")
        pa, ps = a.get("workload_p99_ms"), s.get("workload_p99_ms")
        if isinstance(pa, float) and isinstance(ps, float):
            ok.append(f"stall p99 {pa} vs seed {ps} ms {'lower' if pa < ps else 'NOT LOWER'}")
        if scenario == "numa":
            acts = a.get("actions") or []
            one = isinstance(acts, list) and all(str(x).startswith("compact-node=") for x in acts)
            ok.append(f"actions {acts} {'one node only' if one and acts else 'NOT ONE NODE'}")
        out.append(f"{scenario}: " + ", ".join(ok))
    h = by.get(("hopeless", "agent"))
    if h is not None:
        acts = h.get("actions") or []
        n = len(acts) if isinstance(acts, list) else 0
        evs = h.get("agent_events")
        said = [
            e
            for e in (evs if isinstance(evs, list) else [])
            if isinstance(e, dict) and e.get("reason") == "RemediationNotPossible"
        ]
        line = (
            f"hopeless: {n} action(s) {'ok' if n <= 2 else 'TOO MANY'} (seed: 2), "
            f"RemediationNotPossible said {len(said)} time(s)"
        )
        if said:
            line += f": {str(said[0].get('message', ''))[:240]}"
        out.append(line)
    return out
