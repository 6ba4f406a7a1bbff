"""Turns an assessment into what people and programs read: a table and a stable JSON document.

The JSON schema (schema_version 1) is documented in the README; keys are only ever added.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from agent.assess.hugepages import HugepageReadiness
from agent.assess.indices import kernel_format
from agent.assess.signatures import (
    SignatureMatch,
    Version,
    decode_gfp,
    match_line,
    version_in_line,
)
from agent.assess.tunables import Recommendation
from agent.assess.verdict import Assessment, CauseKind, Verdict
from agent.decide.ladder import Step
from agent.kernel.kmsg import parse_record, scan

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


def hugepages_json(r: HugepageReadiness) -> dict[str, Any]:
    """check's `hugepages` key: pools against their targets, per NUMA node, THP."""
    thp = r.thp
    return {
        "pools": [
            {
                "size_kib": p.size_kib,
                "order": p.order,
                "nr_hugepages": p.nr,
                "free_hugepages": p.free,
                "surplus_hugepages": p.surplus,
                "nr_overcommit_hugepages": p.overcommit,
                "target": p.target,
                "allocatable_now": p.allocatable,
                "can_grow": p.can_grow,
                "message": p.message,
            }
            for p in r.pools
        ],
        "numa_nodes": [
            {
                "node": n.node,
                "size_kib": n.size_kib,
                "order": n.order,
                "allocatable_now": n.allocatable,
                "nr_hugepages": n.nr,
                "free_hugepages": n.free,
            }
            for n in r.nodes
        ],
        "thp": {
            "enabled": r.thp_enabled,
            "defrag": r.thp_defrag,
            "faults": thp.faults if thp else None,
            "fallbacks": thp.fallbacks if thp else None,
            "fallback_rate": thp.fallback_rate if thp else None,
            "since_boot": thp.since_boot if thp else None,
        },
        "gaps": list(r.gaps),
    }


def hugepages_lines(r: HugepageReadiness) -> list[str]:
    """check's hugepage section: one line per pool, plainly saying when one cannot grow."""
    lines = ["Hugepages (allocatable now: free blocks above the low watermark, before reclaim):"]
    for p in r.pools:
        held = "" if p.nr is None else f" [pool {p.nr}, free {p.free}]"
        flag = "CANNOT GROW: " if p.can_grow is False else ""
        lines.append(f"  {flag}{p.message}{held}")
    if r.thp is not None and r.thp.fallback_rate is not None:
        span = "since boot" if r.thp.since_boot else "over the interval"
        lines.append(
            f"  THP faults {span}: {r.thp.faults} huge, {r.thp.fallbacks} fell back to small "
            f"pages ({r.thp.fallback_rate:.0%} fallback; enabled={r.thp_enabled}, "
            f"defrag={r.thp_defrag})"
        )
    elif r.thp_enabled is not None:
        span = "" if r.thp is None else " since boot" if r.thp.since_boot else " over the interval"
        lines.append(f"  THP: enabled={r.thp_enabled}, defrag={r.thp_defrag}, no THP faults{span}")
    lines += [f"  not read: {g}" for g in r.gaps]
    return lines


def signature_lines(matches: tuple[SignatureMatch, ...]) -> list[str]:
    """check's known-signature section (from --log)."""
    lines = ["Known signatures in the log:" if matches else "Known signatures in the log: none"]
    for m in matches:
        s = m.signature
        scope = (
            ""
            if s.kernels is None
            else f" (kernels {s.kernels}"
            + ("" if m.kernel_confirmed else "; this kernel's version unknown")
            + ")"
        )
        lines.append(f"  {s.id}: {s.title}{scope}")
        lines.append(f"    why: {s.explanation}")
        lines.append(f"    fix: {s.fix}")
    return lines


def annotate_findings(
    lines: Iterable[bytes], kernel: Version | None
) -> Iterator[dict[str, object]]:
    """What scan-log writes: each finding with the known signatures its line matches (`id`s)
    and, for a hex-only GFP mask, the decoded names; a line that is no finding but a known
    signature (runc's `exit status 6`) as kind `signature`. The kernel's version, unless given,
    is taken from the log itself where it says it (boot banner, warning headers)."""
    state: dict[str, Version | None] = {"kernel": kernel}
    given = kernel is not None
    extra: list[dict[str, object]] = []

    def watch() -> Iterator[bytes]:
        for raw in lines:
            text = raw.decode("utf-8", errors="replace")
            if not given and ("Linux version" in text or "Comm: " in text):
                state["kernel"] = version_in_line(text) or state["kernel"]
            matches = tuple(m for m in match_line(text, state["kernel"]) if m.signature.standalone)
            if matches:
                record = parse_record(raw)
                if record is not None:
                    extra.append(
                        {
                            "kind": "signature",
                            "signatures": [m.to_json() for m in matches],
                            "text": record.text,
                        }
                    )
            yield raw

    for finding in scan(watch()):
        yield from extra
        extra.clear()
        doc = finding.to_json()
        matches = match_line(finding.record.text, state["kernel"])
        doc["signatures"] = [
            {"id": m.signature.id, "kernel_confirmed": m.kernel_confirmed} for m in matches
        ]
        if finding.mode and not finding.gfp_flags:
            decoded = decode_gfp(finding.mode, state["kernel"])
            doc["gfp_decoded"] = (
                None
                if decoded is None
                else {
                    "flags": list(decoded.flags),
                    "table": decoded.table,
                    "assumed": decoded.assumed,
                }
            )
        yield doc
    yield from extra
