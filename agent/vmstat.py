"""/proc/vmstat: the kernel's event counters (compaction, stalls, drop_caches)."""

from __future__ import annotations

from agent.errors import ParseError


def parse_vmstat(text: str, source: str = "/proc/vmstat") -> dict[str, int]:
    """Parse `name value` lines into a dict of counters."""
    out: dict[str, int] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise ParseError(source, lineno, f"expected 'name value', got {line!r:.80}")
        out[parts[0]] = int(parts[1])
    return out
