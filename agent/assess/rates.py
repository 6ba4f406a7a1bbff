"""Rates from the kernel's event counters (vmstat) between two looks."""

from __future__ import annotations


def rate_per_minute(prev: int, cur: int, seconds: float) -> float | None:
    """Events per minute between two readings of a counter `seconds` apart; None when the span
    is empty or the counter went backwards (a reboot, a wrap: no rate, never a negative one)."""
    if seconds <= 0 or cur < prev:
        return None
    return (cur - prev) * 60.0 / seconds
