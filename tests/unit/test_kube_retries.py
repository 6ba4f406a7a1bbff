"""Retry and backoff decisions of the API transport (no server: the call is a stand-in)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.kube import ApiError, Kube, backoff_delay


def flaky(statuses: list[int]) -> Any:
    calls: list[int] = []

    def call() -> dict[str, Any]:
        calls.append(1)
        if statuses:
            raise ApiError("PATCH", "/api/v1/nodes/n", statuses.pop(0), "injected")
        return {"ok": len(calls)}

    return call


@pytest.mark.parametrize("status", [0, 429, 500, 503, 504])
def test_retryable_errors_are_retried_with_backoff(status: int) -> None:
    slept: list[float] = []
    kube = Kube(api_client=None)
    out = kube.with_retries(flaky([status, status]), attempts=5, sleep=slept.append)
    assert out == {"ok": 3}
    assert len(slept) == 2 and all(0 <= s <= 30 for s in slept)


@pytest.mark.parametrize("status", [400, 403, 404, 409, 422])
def test_other_errors_are_final(status: int) -> None:
    slept: list[float] = []
    with pytest.raises(ApiError) as err:
        Kube(api_client=None).with_retries(flaky([status]), sleep=slept.append)
    assert err.value.status == status and slept == []


def test_gives_up_after_the_attempts() -> None:
    slept: list[float] = []
    with pytest.raises(ApiError):
        Kube(api_client=None).with_retries(flaky([503] * 10), attempts=3, sleep=slept.append)
    assert len(slept) == 2


@given(st.integers(min_value=0, max_value=200))
def test_backoff_is_full_jitter_under_the_cap(attempt: int) -> None:
    d = backoff_delay(attempt, base=0.5, cap=30.0)
    assert 0 <= d <= min(30.0, 0.5 * 2**attempt)
