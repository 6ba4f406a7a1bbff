"""/proc/vmstat: the kernel's event counters (compaction, stalls, drop_caches)."""

from __future__ import annotations

from agent.base.errors import ParseError
from agent.kernel.limits import MAX_COUNTERS, lines
from agent.kernel.numbers import is_int


def parse_vmstat(text: str, source: str = "/proc/vmstat") -> dict[str, int]:
    """Parse `name value` lines into a dict of counters."""
    out: dict[str, int] = {}
    for lineno, line in enumerate(lines(text), 1):
        if lineno > MAX_COUNTERS:
            raise ParseError(source, lineno, f"more than {MAX_COUNTERS} lines")
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or not is_int(parts[1]):
            raise ParseError(source, lineno, f"expected 'name value', got {line!r:.80}")
        out[parts[0]] = int(parts[1])
    return out
