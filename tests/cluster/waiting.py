"""Waiting for a condition the way every test and the demo do: poll, then fail naming it."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(
    pred: Callable[[], T | None], what: str, timeout: float = 30.0, every: float = 0.2
) -> T:
    """Poll until pred() is truthy; fail naming what we waited for (a wait, not a timing claim)."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")
