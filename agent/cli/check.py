"""`memfrag-agent check`: assess this host (or a /proc snapshot) once, with the plan, the vm
tunables review, hugepage readiness and the known signatures of a kernel log."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from agent.assess.hugepages import HugepageReadiness, readiness
from agent.assess.signatures import SignatureMatch, match_line
from agent.assess.tunables import recommend
from agent.assess.verdict import assess
from agent.cli.common import EXIT, SYS_ROOT_HELP, add_command
from agent.cli.inputs import kernel_version, open_log
from agent.cli.output import add_output, emit
from agent.cli.render import (
    assessment_json,
    assessment_table,
    hugepages_json,
    hugepages_lines,
    signature_lines,
)
from agent.config.load import load
from agent.config.targets import parse_target
from agent.decide.ladder import ladder
from agent.kernel.boundedlines import bounded_lines
from agent.kernel.hugepages import read_hugepages
from agent.kernel.observation import Observation
from agent.kernel.procfs import ProcReader


def cmd_check(args: argparse.Namespace) -> int:
    cfg = load(args.config)
    reader = ProcReader(args.proc_root, args.sys_root)
    obs = reader.observe(with_pagetypeinfo=True)
    a = assess(obs, cfg.assessment, args.order)
    plan = ladder(a, reader.numa_nodes_with_compact(), cfg.remediation.allow_drop_caches)
    tunables = recommend(obs.sysctl, (obs.meminfo or {}).get("MemTotal"))
    huge, sigs = check_extras(args, reader, obs)
    doc = assessment_json(a, plan, args.proc_root, tunables)
    doc["hugepages"] = hugepages_json(huge)
    doc["signatures"] = [m.to_json() for m in sigs]

    def text(_wide: bool) -> str:
        more = hugepages_lines(huge) + (signature_lines(sigs) if args.log else [])
        return (
            assessment_table(a, plan, args.proc_root, cfg.remediation.mode, tunables)
            + "\n".join(more)
            + "\n"
        )

    emit(args.output, doc, text)
    return EXIT[a.verdict]


def check_extras(
    args: argparse.Namespace, reader: ProcReader, obs: Observation
) -> tuple[HugepageReadiness, tuple[SignatureMatch, ...]]:
    """What `check` adds to the assessment: hugepage and THP readiness (a second vmstat look after
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
        kernel = kernel_version(reader)
        seen: dict[str, SignatureMatch] = {}
        stream = open_log(args.log)
        with stream:
            for raw in bounded_lines(stream, args.log, lambda m: print(m, file=sys.stderr)):
                for m in match_line(raw.decode("utf-8", errors="replace"), kernel):
                    seen.setdefault(m.signature.id, m)
        sigs = tuple(seen.values())
    return huge, sigs


def add_parser(sub: Any) -> None:
    c = add_command(sub, "check", "assess this host (or a /proc snapshot) once")
    c.add_argument("--proc-root", default="/proc", help="a /proc or a snapshot laid out like it")
    c.add_argument("--sys-root", default="/sys", help=SYS_ROOT_HELP)
    c.add_argument("--config", help="YAML config file (the daemon's ConfigMap format)")
    c.add_argument("--order", type=int, help="target order (default: from the config, 4)")
    add_output(c)
    c.add_argument(
        "--hugepages",
        action="append",
        default=[],
        metavar="SIZE=COUNT",
        help="a hugepage pool's target, e.g. 2M=1024 or 1G=4 (repeatable)",
    )
    c.add_argument(
        "--thp-interval",
        type=float,
        default=0.0,
        help="seconds between two vmstat looks for the THP fallback rate (0: since boot)",
    )
    c.add_argument("--log", help="a kernel log (or - for stdin) to match known signatures in")
    c.set_defaults(func=cmd_check)
