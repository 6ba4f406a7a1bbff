"""`memfrag-agent ready`: the readiness gate for workloads that need contiguous memory.

Exit 0 when the node can serve M free blocks of order N now (on NUMA node K if given), 1 when
it cannot (the reasons on standard output), 3 when it could not be assessed. With --prepare,
first the least disruptive preparation: the remediation ladder for the assessed cause, each
step at most once, measured, stopping as soon as the need is met. Usable as an initContainer
(the pod starts only on a node that can serve it) or as a node-preparation Job.

The blocks counted are assess()'s: free blocks of order >= N (larger ones counted as several)
in the zones that serve the workload, the same numbers `check` and the node condition show.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, BinaryIO

from agent.assess.hugepages import HugepageReadiness, parse_target, readiness
from agent.assess.signatures import SignatureMatch, Version, match_line, parse_version
from agent.assess.verdict import Assessment, NodeState, Verdict, assess
from agent.base.errors import MemfragError
from agent.base.files import read_text
from agent.config.load import load
from agent.config.model import AssessmentConfig
from agent.decide.ladder import Step, ladder
from agent.kernel.boundedlines import bounded_lines
from agent.kernel.hugepages import read_hugepages
from agent.kernel.observation import Observation
from agent.kernel.procfs import ProcReader
from agent.kernel.writes import ActionResult, run_step

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Need:
    order: int
    blocks: int
    numa_node: int | None = None


@dataclass(frozen=True)
class Gate:
    """The answer for one look at the kernel."""

    ok: bool
    have: int  # free blocks of the order where they count (the NUMA node, or all of them)
    reasons: tuple[str, ...]
    assessment: Assessment


@dataclass(frozen=True)
class Prepared:
    step: Step
    result: ActionResult
    blocks_before: int
    blocks_after: int


def _where(need: Need) -> str:
    return "this node" if need.numa_node is None else f"NUMA node {need.numa_node}"


def gate(obs: Observation, cfg: AssessmentConfig, need: Need) -> Gate:
    """Pure: whether the observation can serve the need. The assessment is made with the need
    as the fragmented line, so the NUMA nodes short of it read as fragmented (or exhausted, when
    the memory itself is short) and the ladder fits their cause."""
    gate_cfg = dataclasses.replace(
        cfg,
        fragmented_below_blocks=need.blocks,
        at_risk_below_blocks=max(need.blocks, cfg.at_risk_below_blocks),
    )
    a = assess(obs, gate_cfg, need.order)
    if need.numa_node is not None:
        mine = [n for n in a.numa if n.node == need.numa_node]
        if not mine:
            known = ", ".join(str(n.node) for n in a.numa) or "none"
            reason = f"NUMA node {need.numa_node} has no memory here (NUMA nodes: {known})"
            return Gate(False, 0, (reason,), a)
    else:
        mine = list(a.numa)
    have = sum(n.blocks_at_target for n in mine)
    size_kib = (a.page_size << need.order) // 1024
    head = (
        f"{_where(need)} holds {have} free blocks of order>={need.order} ({size_kib} KiB each), "
        f"{need.blocks} needed"
    )
    if have >= need.blocks:
        return Gate(True, have, (head,), a)
    reasons = [head]
    for n in mine:
        reasons.append(
            f"NUMA node {n.node} ({'+'.join(n.zones)}): {n.blocks_at_target} blocks, {n.state}"
        )
    free_pages = sum(n.free_pages for n in mine)
    if need.blocks << need.order > free_pages:
        reasons.append(
            f"{need.blocks} such blocks are more than all free memory there "
            f"({free_pages * a.page_size >> 20} MiB): only freeing memory can serve them"
        )
    if all(n.state == NodeState.EXHAUSTED for n in mine):
        reasons.append(
            "free memory itself is short (at the zone watermarks): compaction cannot help"
        )
    elif obs.pagetype is not None:
        reasons.append(f"cause: {a.cause.kind}: {a.cause.explanation}")
    reasons += [f"not read: {g}" for g in a.gaps]
    return Gate(False, have, tuple(reasons), a)


def preparation(
    g: Gate, need: Need, per_node_compaction: tuple[int, ...], allow_drop_caches: bool
) -> tuple[Step, ...]:
    """The ladder for the NUMA nodes the need concerns: those short of it, not exhausted."""
    concerned = (
        {need.numa_node} if need.numa_node is not None else {n.node for n in g.assessment.numa}
    )
    numa = tuple(
        n
        if n.node in concerned
        else dataclasses.replace(n, state=NodeState.HEALTHY)  # not this gate's business
        for n in g.assessment.numa
    )
    if not any(n.state == NodeState.FRAGMENTED for n in numa):
        return ()
    a = dataclasses.replace(g.assessment, verdict=Verdict.FRAGMENTED, numa=numa)
    return ladder(a, per_node_compaction, allow_drop_caches)


def prepare(
    steps: tuple[Step, ...],
    need: Need,
    look: Callable[[], Gate],
    act: Callable[[Step], ActionResult],
    first: Gate,
) -> tuple[Gate, tuple[Prepared, ...]]:
    """Each step once, in order, measured by a fresh look; stop as soon as the need is met."""
    done: list[Prepared] = []
    current = first
    for step in steps:
        result = act(step)
        after = look()
        done.append(Prepared(step, result, current.have, after.have))
        current = after
        if current.ok:
            break
    return current, tuple(done)


def ready_json(need: Need, g: Gate, done: tuple[Prepared, ...], source: str) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "source": source,
        "ready": g.ok,
        "order": need.order,
        "blocks_needed": need.blocks,
        "numa_node": need.numa_node,
        "blocks_available": g.have,
        "reasons": list(g.reasons),
        "prepared": [
            {
                "action": p.step.name,
                "why": p.step.why,
                "ok": p.result.ok,
                "seconds": round(p.result.seconds, 3),
                "error": p.result.error,
                "blocks_before": p.blocks_before,
                "blocks_after": p.blocks_after,
            }
            for p in done
        ],
    }


def ready_text(need: Need, g: Gate, done: tuple[Prepared, ...], planned: bool) -> str:
    lines = [
        f"memfrag-agent ready: {'READY' if g.ok else 'NOT READY'}: {need.blocks} blocks of "
        f"order {need.order} on {_where(need)}"
    ]
    for p in done:
        outcome = "done" if p.result.ok else f"failed: {p.result.error}"
        lines.append(
            f"  prepared: {p.step.name} ({p.result.seconds:.2f}s, {outcome}): "
            f"{p.blocks_before} -> {p.blocks_after} blocks"
        )
    if planned and not done:
        lines.append("  prepared: nothing (no preparation helps this cause, or none is allowed)")
    lines += [f"  {r}" for r in g.reasons]
    return "\n".join(lines) + "\n"


def cmd_ready(args: argparse.Namespace) -> int:
    if args.blocks < 1:
        raise MemfragError("--blocks must be at least 1")
    if args.numa_node is not None and args.numa_node < 0:
        raise MemfragError("--numa-node must be a NUMA node number (0 or more)")
    cfg = load(args.config)
    need = Need(args.order, args.blocks, args.numa_node)
    reader = ProcReader(args.proc_root, args.sys_root)

    def look(with_pagetypeinfo: bool = False) -> Gate:
        return gate(reader.observe(with_pagetypeinfo=with_pagetypeinfo), cfg.assessment, need)

    # pagetypeinfo tells the cause the ladder needs: read it only when preparing
    first = look(with_pagetypeinfo=args.prepare)
    result = first
    done: tuple[Prepared, ...] = ()
    if not first.ok and args.prepare:
        steps = preparation(
            first, need, reader.numa_nodes_with_compact(), cfg.remediation.allow_drop_caches
        )
        started = time.monotonic()
        result, done = prepare(
            steps,
            need,
            look,
            lambda s: run_step(
                s, reader.proc, reader.sys, max(1.0, args.timeout - (time.monotonic() - started))
            ),
            first,
        )
    if args.output == "json":
        print(json.dumps(ready_json(need, result, done, args.proc_root), indent=2))
    else:
        sys.stdout.write(ready_text(need, result, done, planned=args.prepare and not first.ok))
    return 0 if result.ok else 1


def add_parser(sub: Any) -> None:
    r = sub.add_parser(
        "ready",
        help="exit 0 if this node can serve M free blocks of order N now (1 if not)",
        description=__doc__.splitlines()[0] if __doc__ else None,
    )
    r.add_argument("--order", type=int, required=True, help="the block order needed (0-12)")
    r.add_argument("--blocks", type=int, required=True, help="how many such blocks")
    r.add_argument("--numa-node", type=int, help="count only this NUMA node's blocks")
    r.add_argument(
        "--prepare",
        action="store_true",
        help="if short, first run the remediation ladder for the cause once, step by step, "
        "stopping as soon as the need is met (writes /proc/sys/vm: privileged)",
    )
    r.add_argument("--timeout", type=float, default=120.0, help="seconds for all preparation steps")
    r.add_argument("--config", help="YAML config file (remediation.allow_drop_caches is read)")
    r.add_argument("--proc-root", default="/proc")
    r.add_argument("--sys-root", default="/sys")
    r.add_argument("-o", "--output", choices=("table", "json"), default="table")
    r.set_defaults(func=cmd_ready)


def check_extras(
    args: argparse.Namespace, reader: ProcReader, obs: Observation
) -> tuple[HugepageReadiness, tuple[SignatureMatch, ...]]:
    """What `check` adds for issue 16: hugepage and THP readiness (a second vmstat look after
    --thp-interval seconds, else since boot) and the known signatures of --log."""
    targets = dict(parse_target(t) for t in args.hugepages)
    after, before = obs.vmstat, None
    if args.thp_interval > 0 and obs.vmstat is not None:
        time.sleep(args.thp_interval)
        before, after = obs.vmstat, reader.observe(with_pagetypeinfo=False).vmstat
    huge = readiness(
        obs.buddy,
        obs.zoneinfo,
        read_hugepages(reader.sys),
        obs.page_size,
        targets,
        vmstat_after=after,
        vmstat_before=before,
    )
    sigs: tuple[SignatureMatch, ...] = ()
    if args.log:
        kernel = _kernel_version(reader)
        seen: dict[str, SignatureMatch] = {}
        stream = open_log(args.log)
        with stream:
            for raw in bounded_lines(stream, args.log, lambda m: print(m, file=sys.stderr)):
                for m in match_line(raw.decode("utf-8", errors="replace"), kernel):
                    seen.setdefault(m.signature.id, m)
        sigs = tuple(seen.values())
    return huge, sigs


def _kernel_version(reader: ProcReader) -> Version | None:
    try:
        return parse_version(read_text(reader.proc / "sys" / "kernel" / "osrelease", limit=256))
    except OSError:
        return None


def open_log(path: str) -> BinaryIO:
    """A log file, or standard input for -; a MemfragError names what cannot be read."""
    if path == "-":
        return sys.stdin.buffer
    try:
        return open(path, "rb")
    except OSError as exc:
        raise MemfragError(f"{path}: cannot read: {exc.strerror or exc}") from exc
