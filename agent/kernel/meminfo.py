"""/proc/meminfo: totals used to say how much page cache a remedy may cost."""

from __future__ import annotations

from agent.base.errors import ParseError
from agent.kernel.limits import MAX_COUNTERS, lines
from agent.kernel.numbers import is_uint


def parse_meminfo(text: str, source: str = "/proc/meminfo") -> dict[str, int]:
    """Parse `Key:  value [kB]` lines; values in kB as printed (HugePages_* are counts)."""
    out: dict[str, int] = {}
    for lineno, line in enumerate(lines(text), 1):
        if lineno > MAX_COUNTERS:
            raise ParseError(source, lineno, f"more than {MAX_COUNTERS} lines")
        if not line.strip():
            continue
        key, sep, rest = line.partition(":")
        parts = rest.split()
        if not sep or not key.strip() or not parts or not is_uint(parts[0]) or len(parts) > 2:
            raise ParseError(source, lineno, f"expected 'Key: value [kB]', got {line!r:.80}")
        out[key.strip()] = int(parts[0])
    return out
