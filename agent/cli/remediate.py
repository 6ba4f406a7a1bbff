"""`memfrag-agent remediate`: one action, measured before and after: what the daemon does, by
hand (or, with --dry-run, what it would write)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from agent.assess.verdict import assess
from agent.cli.common import EXIT_OK, EXIT_UNKNOWN, PROC_ROOT_HELP, SYS_ROOT_HELP, add_command
from agent.cli.output import add_output, emit
from agent.config.model import Config
from agent.decide.ladder import Step
from agent.kernel.actions import ActionKind, parse_action, target
from agent.kernel.procfs import ProcReader
from agent.kernel.writes import run_step


def _snapshot(reader: ProcReader, order: int) -> dict[str, int]:
    obs = reader.observe(with_pagetypeinfo=False)
    a = assess(obs, Config().assessment, order)
    vm = obs.vmstat or {}
    return {
        "blocks": sum(n.blocks_at_target for n in a.numa),
        "cached_mib": (obs.meminfo or {}).get("Cached", 0) // 1024,
        "free_mib": (obs.meminfo or {}).get("MemFree", 0) // 1024,
        **{k: v for k, v in vm.items() if k.startswith(("compact_", "drop_"))},
    }


def cmd_remediate(args: argparse.Namespace) -> int:
    kind, arg = parse_action(args.action)
    step = Step(kind, arg, "requested on the command line")
    reader = ProcReader(args.proc_root, args.sys_root)
    path, value = target(step, reader.proc, reader.sys)
    before = _snapshot(reader, args.order)
    sync = step.action == ActionKind.DROP_CACHES
    doc: dict[str, Any] = {
        "action": step.name,
        "path": str(path),
        "value": value,
        "dry_run": args.dry_run,
        "order": args.order,
    }
    if args.dry_run:
        doc["before"] = before

        def said(_wide: bool) -> str:
            return (
                f"dry-run: would write {value!r} to {path}" + (" after sync" if sync else "") + "\n"
                f"now: {before['blocks']} free blocks of order>={args.order}, "
                f"page cache {before['cached_mib']} MiB\n"
            )

        emit(args.output, doc, said)
        return EXIT_OK
    res = run_step(step, reader.proc, reader.sys, args.timeout)
    after = _snapshot(reader, args.order)
    rows = [(k, before.get(k, 0), after.get(k, 0)) for k in sorted(set(before) | set(after))]
    doc.update(
        ok=res.ok, seconds=round(res.seconds, 3), error=res.error, before=before, after=after
    )

    def measured(_wide: bool) -> str:
        width = max(len(k) for k, _, _ in rows)
        lines = [
            f"{step.name}: wrote {value!r} to {path} in {res.seconds:.2f}s"
            + ("" if res.ok else f": {res.error}"),
            f"{'':{width}}  {'before':>12}  {'after':>12}  {'change':>10}",
        ]
        for k, b, a in rows:
            label = f"blocks order>={args.order}" if k == "blocks" else k
            lines.append(f"{label:{width}}  {b:>12}  {a:>12}  {a - b:>+10}")
        return "\n".join(lines) + "\n"

    emit(args.output, doc, measured)
    if not res.ok:
        print(f"memfrag-agent remediate: {step.name}: {res.error}", file=sys.stderr)
    return EXIT_OK if res.ok else EXIT_UNKNOWN


def add_parser(sub: Any) -> None:
    m = add_command(sub, "remediate", "run one remediation action, measured before/after")
    m.add_argument("--action", required=True, help="compact | compact-node=N | drop-caches=N")
    m.add_argument(
        "--dry-run", action="store_true", help="say what would be written, write nothing"
    )
    m.add_argument("--order", type=int, default=4, help="order to count free blocks at")
    m.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the kernel")
    m.add_argument("--proc-root", default="/proc", help=PROC_ROOT_HELP)
    m.add_argument("--sys-root", default="/sys", help=SYS_ROOT_HELP)
    add_output(m)
    m.set_defaults(func=cmd_remediate)
