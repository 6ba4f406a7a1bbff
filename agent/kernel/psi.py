"""/proc/pressure/memory: pressure stall information, to avoid remediating on a thrashing node."""

from __future__ import annotations

from dataclasses import dataclass

from agent.base.errors import ParseError
from agent.base.excerpt import excerpt
from agent.kernel.limits import lines
from agent.kernel.numbers import is_uint


@dataclass(frozen=True)
class Pressure:
    """Share of wall time (percent) some/all tasks stalled on memory, and the µs totals."""

    some_avg10: float
    some_avg60: float
    some_avg300: float
    some_total_us: int
    full_avg10: float | None
    full_avg60: float | None
    full_avg300: float | None
    full_total_us: int | None


def _line(parts: list[str], source: str, lineno: int) -> tuple[float, float, float, int]:
    try:
        kv = dict(p.split("=", 1) for p in parts[1:])
        avgs = (float(kv["avg10"]), float(kv["avg60"]), float(kv["avg300"]))
        total = int(kv["total"]) if is_uint(kv["total"]) else -1
    except (KeyError, ValueError) as exc:
        raise ParseError(
            source, lineno, f"bad pressure line ({excerpt(exc)}): {excerpt(' '.join(parts))}"
        ) from exc
    # NaN would pass every `psi > limit` guard: a share of time is 0..100, a total a count.
    if not all(0 <= a <= 100 for a in avgs) or total < 0:
        raise ParseError(source, lineno, f"pressure out of range: {excerpt(' '.join(parts))}")
    return (*avgs, total)


def parse_pressure(text: str, source: str = "/proc/pressure/memory") -> Pressure:
    """Parse the `some` and (optional, kernel >= 5.2 for memory) `full` lines."""
    rows: dict[str, tuple[float, float, float, int]] = {}
    for lineno, line in enumerate(lines(text), 1):
        parts = line.split()
        if not parts:
            continue
        if parts[0] not in ("some", "full"):
            raise ParseError(source, lineno, f"expected 'some' or 'full', got {parts[0]!r:.40}")
        rows[parts[0]] = _line(parts, source, lineno)
    if "some" not in rows:
        raise ParseError(source, None, "no 'some' line")
    s = rows["some"]
    f = rows.get("full")
    return Pressure(
        some_avg10=s[0],
        some_avg60=s[1],
        some_avg300=s[2],
        some_total_us=s[3],
        full_avg10=f[0] if f else None,
        full_avg60=f[1] if f else None,
        full_avg300=f[2] if f else None,
        full_total_us=f[3] if f else None,
    )
