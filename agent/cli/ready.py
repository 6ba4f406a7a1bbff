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
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agent.assess.readiness import Gate, Need, gate, where
from agent.base.errors import MemfragError
from agent.cli.common import (
    EXIT_NOT_READY,
    EXIT_OK,
    PROC_ROOT_HELP,
    SYS_ROOT_HELP,
    add_command,
)
from agent.cli.output import add_output, emit
from agent.config.load import load
from agent.decide.ladder import Step
from agent.decide.readiness import preparation
from agent.kernel.procfs import ProcReader
from agent.kernel.writes import ActionResult, run_step

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Prepared:
    step: Step
    result: ActionResult
    blocks_before: int
    blocks_after: int


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
        f"order {need.order} on {where(need)}"
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
    planned = args.prepare and not first.ok
    emit(
        args.output,
        ready_json(need, result, done, args.proc_root),
        lambda _wide: ready_text(need, result, done, planned=planned),
    )
    return EXIT_OK if result.ok else EXIT_NOT_READY


def add_parser(sub: Any) -> None:
    r = add_command(
        sub,
        "ready",
        "exit 0 if this node can serve M free blocks of order N now (1 if not)",
        __doc__.splitlines()[0] if __doc__ else None,
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
    r.add_argument("--proc-root", default="/proc", help=PROC_ROOT_HELP)
    r.add_argument("--sys-root", default="/sys", help=SYS_ROOT_HELP)
    add_output(r)
    r.set_defaults(func=cmd_ready)
