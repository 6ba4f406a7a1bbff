"""`memfrag-agent trace`: run the tracing source for N seconds and print what it saw, beside what
the kernel log said over the same interval. Needs root and tracefs; works on any Linux host."""

from __future__ import annotations

import argparse
import contextlib
import enum
import threading
from dataclasses import asdict, is_dataclass
from typing import Any

from agent.assess.tracing import Ranked, TraceSummary, summarize, top_pods
from agent.base.errors import MemfragError
from agent.cli.common import PROC_ROOT_HELP, add_command
from agent.cli.output import add_output, emit
from agent.decide.tracearm import ArmPolicy
from agent.kernel.cgroups import CgroupReader
from agent.kernel.kmsg import Finding
from agent.kernel.kmsgfollow import KmsgFollower
from agent.kernel.procfs import ProcReader
from agent.kernel.tracefollow import TraceSource

DEFAULT_ORDER = 4


def add_parser(sub: Any) -> None:
    t = add_command(sub, "trace", "count every failed high-order allocation, steal, compaction")
    t.add_argument("--seconds", type=float, default=10.0, help="how long to trace (default 10)")
    t.add_argument(
        "--order", type=int, default=DEFAULT_ORDER, help="count failures at or above this order"
    )
    t.add_argument("--top", type=int, default=5, help="processes and pods to name (top N)")
    add_output(t)
    t.add_argument("--proc-root", default="/proc", help=PROC_ROOT_HELP)
    t.add_argument(
        "--cgroup-root",
        default="/sys/fs/cgroup",
        help="the cgroup v2 mount, for pods' kernel memory (default /sys/fs/cgroup)",
    )
    t.add_argument("--kmsg", default="/dev/kmsg", help="the kernel log to compare with")
    t.set_defaults(func=cmd_trace)


class _LogCount:
    """What the kernel log printed meanwhile: failure lines, and reports its limit dropped."""

    def __init__(self) -> None:
        self.lines = 0
        self.suppressed = 0
        self.lock = threading.Lock()

    def finding(self, f: Finding) -> None:
        if f.kind == "page_allocation_failure":
            with self.lock:
                self.lines += 1

    def dropped(self, n: int) -> None:
        with self.lock:
            self.suppressed += n


def cmd_trace(args: argparse.Namespace) -> int:
    if not 0 < args.seconds <= 86400:
        raise MemfragError("--seconds must be above 0 and at most 86400")
    reader = ProcReader(args.proc_root)
    obs = reader.observe(with_pagetypeinfo=True)
    cgroups = CgroupReader(args.cgroup_root, args.proc_root)
    pageblock = obs.pagetype.pageblock_order if obs.pagetype is not None else None
    source = TraceSource(args.order, args.seconds + 60, pageblock, cgroups=cgroups)
    log = _LogCount()
    kmsg = KmsgFollower(args.kmsg, log.finding, on_suppressed=log.dropped)
    source.start()
    try:
        kmsg.start()
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait(args.seconds)
    finally:
        kmsg.stop()
        source.stop()
    events, pids, dropped = source.window.snapshot()
    zones = {z.start_pfn: z.node for z in obs.zoneinfo or () if z.start_pfn is not None}
    summary = summarize(events, args.seconds, args.order, pids, zones, args.top, dropped)
    pods = top_pods(cgroups.pod_kernel_memory(), args.top)
    report = {
        "summary": summary,
        "sentence": summary.sentence(),
        "kernel_log": {"failure_lines": log.lines, "suppressed": log.suppressed},
        # The CLI counts every failure of its run; the daemon's default arms the counter only
        # while the node is at risk (sources.tracing_alloc_failures).
        "alloc_failures": ArmPolicy.ALWAYS.value,
        "stale_instance_removed": source.stale_removed,
        "pods_by_kernel_memory": pods,
    }
    emit(
        args.output,
        _plain(report),
        lambda _wide: table(summary, log.lines, log.suppressed, _plain(pods)),
    )
    return 0


def _plain(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return {k: _plain(v) for k, v in asdict(value).items()}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, enum.Enum):
        return value.name.lower() if isinstance(value, enum.IntEnum) else value.value
    return value


def _ranked(label: str, ranked: tuple[Ranked, ...], other: int) -> list[str]:
    out = []
    for r in ranked:
        where = f"pod {r.who.pod_uid}" if r.who.pod_uid else (r.who.cgroup or "cgroup unknown")
        out.append(f"  {label}: {r.who.comm} ({where}): {r.count}")
    return out + ([f"  {label}: others: {other}"] if other else [])


def table(s: TraceSummary, log_lines: int, suppressed: int, pods: list[dict[str, Any]]) -> str:
    out = [s.sentence() + "."]
    out.append(
        f"Failures counted: {ArmPolicy.ALWAYS.value}, for the whole run (the daemon's "
        f"default, {ArmPolicy.AT_RISK.value}, counts them only while the node is at risk); "
        f"{s.slow_path} allocations at or above order {s.min_order} entered the slow path."
    )
    out.append(
        f"The kernel log printed {log_lines} allocation failure lines "
        f"(and said {suppressed} more were suppressed) over the same interval."
    )
    for o in s.by_order:
        out.append(f"  order {o.order}: {o.failed} failed, {o.silent} silent (__GFP_NOWARN)")
    out += _ranked("failing", s.failing, s.failing_other)
    out.append(f"{s.steals} pageblock steals (fragmenting or changing a block's type)")
    for st in s.steals_by_type:
        out.append(f"  {st.alloc.name.lower()} took from {st.fallback.name.lower()}: {st.count}")
    out += _ranked("polluter", s.polluters, s.polluters_other)
    for c in s.compaction:
        node = "?" if c.node is None else str(c.node)
        results = ", ".join(f"{k} {v}" for k, v in c.results)
        out.append(
            f"compaction node {node} {c.kind.value}: {c.runs} runs, {c.seconds:.3f}s in all, "
            f"longest {c.longest:.3f}s ({results})"
        )
    if s.unpaired:
        out.append(f"  {s.unpaired} compaction begins/ends without their other half")
    for p in pods:
        out.append(f"pod {p['pod_uid']}: {p['memory']['total'] >> 10} KiB unmovable kernel memory")
    return "\n".join(out) + "\n"
