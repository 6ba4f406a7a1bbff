"""The API's failures and the backoff between retries, free of the `kubernetes` package so the
parts that only handle them (and the standalone daemon) need not import it."""

from __future__ import annotations

import random

from agent.base.errors import MemfragError


class ApiError(MemfragError):
    """An API call failed; status 0 means the server could not be reached."""

    def __init__(self, method: str, path: str, status: int, reason: str) -> None:
        self.method, self.path, self.status, self.reason = method, path, status, reason
        super().__init__(f"{method} {path}: {status or 'unreachable'} {reason}".strip())

    @property
    def retryable(self) -> bool:
        return self.status in (0, 429) or self.status >= 500


class BudgetSpent(ApiError):
    """Not sent: the caller's time budget for API calls ran out (see Kube.budget). Final, so no
    retry loop spins on it; the next cycle gets a new budget."""

    def __init__(self, method: str, path: str, seconds: float) -> None:
        super().__init__(method, path, 0, f"not sent: the {seconds:g}s API time budget is spent")

    @property
    def retryable(self) -> bool:
        return False


def backoff_delay(attempt: int, base: float = 0.5, cap: float = 30.0) -> float:
    """Exponential backoff with full jitter, so a fleet of agents does not retry in step."""
    return random.uniform(0, min(cap, base * (2**attempt)))
