"""Turns an assessment into what people and programs read: a table and a stable JSON document.

The JSON schema (schema_version 1) is documented in the README; keys are only ever added.
"""

from __future__ import annotations

from typing import Any

from agent.assess.indices import kernel_format
from agent.assess.tunables import Recommendation
from agent.assess.verdict import Assessment, CauseKind, Verdict
from agent.decide.ladder import Step

SCHEMA_VERSION = 1


def assessment_json(
    a: Assessment,
    plan: tuple[Step, ...],
    source: str,
    tunables: tuple[Recommendation, ...] = (),
) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "source": source,
        "verdict": a.verdict,
        "reason": a.reason,
        "message": a.message,
        "order": a.order,
        "page_size": a.page_size,
        "exhausted": a.exhausted,
        "cause": {
            "kind": a.cause.kind,
            "stranded_share": {t: round(s, 4) for t, s in a.cause.stranded_share},
            "explanation": a.cause.explanation,
        },
        "numa_nodes": [
            {
                "node": n.node,
                "state": n.state,
                "blocks_at_order": n.blocks_at_target,
                "free_pages": n.free_pages,
                "zones": list(n.zones),
            }
            for n in a.numa
        ],
        "zones": [
            {
                "node": z.node,
                "zone": z.zone,
                "free_blocks": list(z.free),
                "free_pages": z.free_pages,
                "managed_pages": z.managed_pages,
                "workload": z.workload,
                "blocks_at_order": z.blocks_at_target,
                "unusable_index": z.unusable_milli / 1000,
                "fragmentation_index": z.fragindex_milli / 1000,
                "watermark_pages": z.watermark_pages,
                "exhausted": z.exhausted,
            }
            for z in a.zones
        ],
        "plan": [{"action": s.action, "arg": s.arg, "why": s.why} for s in plan],
        "tunables": [
            {
                "name": f"vm.{t.name}",
                "current": t.current,
                "recommended": t.recommended,
                "why": t.why,
            }
            for t in tunables
        ],
        "gaps": list(a.gaps),
    }


def _pages(pages: int, page_size: int) -> str:
    mib = pages * page_size / (1 << 20)
    return f"{mib:.0f}M" if mib >= 10 else f"{mib:.1f}M"


def assessment_table(
    a: Assessment,
    plan: tuple[Step, ...],
    source: str,
    mode: str,
    tunables: tuple[Recommendation, ...] = (),
) -> str:
    orders = max(len(z.free) for z in a.zones)
    head = ["NODE", "ZONE", "USE"] + [str(o) for o in range(orders)]
    head += [f">={a.order}", "UNUSABLE", "FRAGIDX", "FREE", "WMARK"]
    rows = [head]
    for z in a.zones:
        rows.append(
            [str(z.node), z.zone, "yes" if z.workload else "no"]
            + [str(n) for n in z.free]
            + [""] * (orders - len(z.free))
            + [
                str(z.blocks_at_target),
                kernel_format(z.unusable_milli),
                kernel_format(z.fragindex_milli),
                _pages(z.free_pages, a.page_size),
                _pages(z.watermark_pages, a.page_size) if z.watermark_pages is not None else "-",
            ]
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    block_kib = (a.page_size << a.order) // 1024
    lines = [f"memfrag-agent check: {source}, target order {a.order} ({block_kib} KiB blocks)"]
    lines.append("")
    for r in rows:
        cells = [
            c.ljust(w) if i < 3 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    lines.append("")
    lines.append("USE: zone drives the verdict; >=N: free blocks usable by an order-N request;")
    lines.append("UNUSABLE/FRAGIDX: the kernel's unusable free space and fragmentation indices")
    lines.append("at order N (FRAGIDX -1.000: the request succeeds; near 0: lack of memory; near")
    lines.append("1: fragmentation); FREE and WMARK in MiB.")
    lines.append("")
    lines.append(f"Verdict: {a.verdict.upper()} ({a.reason})")
    lines.append(f"  {a.message}")
    if a.verdict != Verdict.HEALTHY:
        lines.append(f"Cause: {a.cause.kind}: {a.cause.explanation}")
    if plan:
        lines.append(
            f"Would do (remediation mode {mode}), least disruptive first, stopping once recovered:"
        )
        lines += [f"  {i}. {s.name}: {s.why}" for i, s in enumerate(plan, 1)]
        if a.cause.kind == CauseKind.UNMOVABLE:
            lines.append(
                "  then nothing more: draining or rebooting the node is the operator's call."
            )
    elif a.verdict == Verdict.FRAGMENTED:
        lines.append("Would do: nothing (no remediation step is allowed by the config).")
    elif a.exhausted:
        lines.append("Would do: nothing; free memory is short (kubelet's MemoryPressure).")
    else:
        lines.append("Would do: nothing.")
    if tunables:
        lines.append("Prevention (vm tunables; applied only with remediation.apply_tunables):")
        lines += [f"  vm.{t.name}: {t.current} -> {t.recommended}: {t.why}" for t in tunables]
    if a.gaps:
        lines.append("Not read (the report is narrower):")
        lines += [f"  - {g}" for g in a.gaps]
    return "\n".join(lines) + "\n"
