"""`memfrag-agent remediate`: one action, measured before and after: what the daemon does, by
hand (or, with --dry-run, what it would write)."""

from __future__ import annotations

import argparse
from typing import Any

from agent.assess.verdict import assess
from agent.cli.common import EXIT_UNKNOWN
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
    if args.dry_run:
        print(
            f"dry-run: would write {value!r} to {path}"
            + (" after sync" if step.action == ActionKind.DROP_CACHES else "")
        )
        print(
            f"now: {before['blocks']} free blocks of order>={args.order}, "
            f"page cache {before['cached_mib']} MiB"
        )
        return 0
    res = run_step(step, reader.proc, reader.sys, args.timeout)
    after = _snapshot(reader, args.order)
    rows = [(k, before.get(k, 0), after.get(k, 0)) for k in sorted(set(before) | set(after))]
    print(
        f"{step.name}: wrote {value!r} to {path} in {res.seconds:.2f}s"
        + ("" if res.ok else f": {res.error}")
    )
    width = max(len(k) for k, _, _ in rows)
    print(f"{'':{width}}  {'before':>12}  {'after':>12}  {'change':>10}")
    for k, b, a in rows:
        label = f"blocks order>={args.order}" if k == "blocks" else k
        print(f"{label:{width}}  {b:>12}  {a:>12}  {a - b:>+10}")
    return 0 if res.ok else EXIT_UNKNOWN


def add_parser(sub: Any) -> None:
    m = sub.add_parser("remediate", help="run one remediation action, measured before/after")
    m.add_argument("--action", required=True, help="compact | compact-node=N | drop-caches=N")
    m.add_argument(
        "--dry-run", action="store_true", help="say what would be written, write nothing"
    )
    m.add_argument("--order", type=int, default=4, help="order to count free blocks at")
    m.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the kernel")
    m.add_argument("--proc-root", default="/proc")
    m.add_argument("--sys-root", default="/sys")
    m.set_defaults(func=cmd_remediate)
