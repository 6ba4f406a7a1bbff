"""`memfrag-agent trace`'s renderers and argument checks (the run itself is in
tests/integration/test_tracing.py, on the real kernel)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.assess.tracing import TraceSummary, summarize
from agent.cli.main import main
from agent.cli.trace import _plain, table
from agent.kernel.cgroupinfo import CgroupPaths
from agent.kernel.trace import gfp_names, nowarn_names, parse_line

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "trace"
POD = "0f1e2d3c-aaaa-bbbb-cccc-0123456789ab"


def _summary() -> TraceSummary:
    names = nowarn_names(gfp_names((FIXTURES / "mm_page_alloc.format").read_text()))
    events = []
    for name in ("hugetlb-exhausted-thp.trace", "pipes-and-compact-memory.trace"):
        for line in (FIXTURES / name).read_text().splitlines():
            e = parse_line(line, names)
            assert e is not None
            events.append(e)
    cgroups = {29035: CgroupPaths(f"/kubepods/pod{POD}/c", "/")}
    return summarize(events, 120, 4, cgroups, {0x1: 0, 0x1000: 0, 0x100000: 0}, top_n=2)


def test_table_names_failures_polluters_and_compaction() -> None:
    text = table(_summary(), 1, 7, [{"pod_uid": POD, "memory": {"total": 4 << 20}}])
    assert text.startswith(
        "300 high-order allocations failed in the last 2 minutes, 300 of them silent.\n"
    )
    assert "Failures counted: always, for the whole run (the daemon's default, at-risk," in text
    assert "25 allocations at or above order 4 entered the slow path." in text  # direct compaction
    assert "printed 1 allocation failure lines (and said 7 more were suppressed)" in text
    assert "  order 9: 300 failed, 300 silent (__GFP_NOWARN)" in text
    assert f"  polluter: python (pod {POD}): " in text
    assert "  polluter: others: " in text  # top 2 of more
    assert "compaction node 0 manual: 3 runs" in text
    assert f"pod {POD}: 4096 KiB unmovable kernel memory" in text


def test_json_is_plain_data_with_enum_names() -> None:
    data = json.loads(json.dumps(_plain(_summary())))
    assert data["steals_by_type"][0]["alloc"] == "unmovable"
    assert {c["kind"] for c in data["compaction"]} >= {"direct", "manual"}


def test_seconds_out_of_range_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["trace", "--seconds", "0"]) == 3
    assert "--seconds must be above 0" in capsys.readouterr().err
