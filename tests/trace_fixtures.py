"""The recorded trace_pipe lines of tests/fixtures/trace, parsed: for the unit tests of the parts
that take the tracing source's events (the daemon's, the tick's decision)."""

from __future__ import annotations

from pathlib import Path

from agent.kernel.trace import TraceEvent, gfp_names, nowarn_names, parse_line

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "trace"
POLLUTER_PID = 29035  # the process filling pipes in pipes-and-compact-memory.trace
ZONES = {0x1: 0, 0x1000: 0, 0x100000: 0}  # zone start pfn -> NUMA node on that VM


def recorded(name: str) -> list[TraceEvent]:
    names = nowarn_names(gfp_names((FIXTURES / "mm_page_alloc.format").read_text()))
    out = []
    for line in (FIXTURES / name).read_text().splitlines():
        e = parse_line(line, names)
        assert e is not None, line
        out.append(e)
    return out
