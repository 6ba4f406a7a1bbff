"""Retry and backoff decisions of the API transport (no server: the call is a stand-in)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.daemon.metrics import API_DOWN_REASONS, Metrics, api_down_reason
from agent.kube.client import ApiError, BudgetSpent, Kube, backoff_delay


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


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_a_budget_stops_retries_that_would_outlast_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Within Kube.budget a backoff that would pass the deadline is not slept: the error is
    final (before: 15 s timeouts times up to 10 retries blocked the loop ~200 s)."""
    import agent.kube.client

    clock = Clock()
    monkeypatch.setattr(time, "monotonic", clock)
    monkeypatch.setattr(agent.kube.client, "backoff_delay", lambda attempt: 4.0)
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.t += seconds

    kube = Kube(api_client=None)
    with kube.budget(5.0), pytest.raises(ApiError) as err:
        kube.with_retries(flaky([0, 0, 0]), attempts=5, sleep=sleep)
    assert err.value.status == 0 and slept == [4.0]  # a second 4 s would pass the 5 s
    assert kube.with_retries(flaky([0, 0]), attempts=5, sleep=sleep) == {"ok": 3}  # no budget


def test_a_spent_budget_sends_nothing_and_is_final(monkeypatch: pytest.MonkeyPatch) -> None:

    clock = Clock()
    monkeypatch.setattr(time, "monotonic", clock)
    kube = Kube(api_client=None)  # no transport: a request that were sent would crash
    with kube.budget(5.0):
        assert kube._time_left("GET", "/x", None) == 5.0  # the timeout shrinks to what is left
        clock.t = 4.0
        assert kube._time_left("GET", "/x", None) == 1.0
        clock.t = 5.0
        with pytest.raises(BudgetSpent) as err:
            kube.request("GET", "/api/v1/nodes/n")
    assert not err.value.retryable and "budget is spent" in str(err.value)
    assert kube.requests_total == 0
    assert kube._time_left("GET", "/x", None) == 15.0  # outside the block: the full timeout


class Response:
    def __init__(self, status: int, data: bytes) -> None:
        self.status, self.data = status, data

    def read(self) -> bytes:
        return self.data


class Transport:
    """Stands in for the client's transport: answers with the statuses it is given."""

    def __init__(self, answers: list[int | None]) -> None:
        self.answers = answers

    def call(self, *args: Any, **kw: Any) -> Response:
        status = self.answers.pop(0)
        if status is None:
            raise ConnectionRefusedError("refused")
        return Response(status, b'{"message": "m"}')


def test_every_request_outcome_reaches_the_observer() -> None:
    """Reads included: memfrag_api_up is about the API server, not the last write."""
    seen: list[int | None] = []
    kube = Kube(api_client=Transport([200, None, 403, 404]))
    kube.observer = lambda err: seen.append(None if err is None else err.status)
    kube.request("GET", "/api/v1/nodes")
    for _ in range(3):
        with pytest.raises(ApiError):
            kube.request("GET", "/api/v1/nodes")
    assert seen == [None, 0, 403, 404]


def test_every_request_sent_is_told_by_method_failed_ones_too() -> None:
    """memfrag_api_requests_total counts what reached the wire (a 403 cost the server a
    request too); a call the budget refused sent nothing and is not counted."""
    sent: list[str] = []
    kube = Kube(api_client=Transport([200, 403, 200]))
    kube.on_request = sent.append
    kube.request("GET", "/api/v1/nodes/n")
    with pytest.raises(ApiError):
        kube.request("PATCH", "/api/v1/nodes/n/status", body={})
    kube.request("POST", "/api/v1/namespaces/x/events", body={})
    with pytest.raises(BudgetSpent), kube.budget(0.0):
        kube.request("GET", "/api/v1/nodes/n")
    assert sent == ["GET", "PATCH", "POST"]
    assert kube.requests_total == 3


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (None, None),
        (0, "unreachable"),
        (401, "unauthorized"),
        (403, "forbidden"),
        (429, "throttled"),
        (500, "server_error"),
        (503, "server_error"),
        (404, None),  # answers from a working API server
        (409, None),
        (422, None),
    ],
)
def test_api_down_reasons(status: int | None, reason: str | None) -> None:
    assert api_down_reason(status) == reason


def test_api_up_and_its_reason_follow_the_last_request() -> None:
    m = Metrics()
    m.api_result(403)
    assert m.api_up._value.get() == 0
    assert m.api_down.labels("forbidden")._value.get() == 1
    m.api_result(None)
    assert m.api_up._value.get() == 1
    assert all(m.api_down.labels(r)._value.get() == 0 for r in API_DOWN_REASONS)


def test_the_client_loads_only_the_kubernetes_modules_it_uses() -> None:
    """`import kubernetes.client` alone imported every generated model (19 MiB of the daemon's
    48); the agent loads Configuration, the REST pool and the loaders, and the rest of the
    package still works for whoever asks for it later in the process."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import agent.kube.client as c\n"
        "heavy = [m for m in sys.modules if m.startswith(('kubernetes.client.models', "
        "'kubernetes.client.api.', 'kubernetes.dynamic', 'pydantic', 'oauthlib'))]\n"
        "assert heavy == [], heavy\n"
        "c._kube_config()\n"
        "assert 'kubernetes.client.api_client' not in sys.modules\n"
        "from kubernetes import client, config\n"
        "import kubernetes\n"
        "assert client.CoreV1Api.__name__ == 'CoreV1Api'\n"
        "assert isinstance(client.ApiClient, type)\n"
        "assert config.new_client_from_config and kubernetes.watch.Watch\n"
        "print('ok')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0 and out.stdout == "ok\n", out.stderr


def test_the_transport_sends_the_refreshed_token_and_our_user_agent() -> None:
    from kubernetes.client.configuration import Configuration

    from agent.kube.client import USER_AGENT

    conf = Configuration(host="https://127.0.0.1:6443")
    conf.api_key = {"authorization": "t0"}
    conf.api_key_prefix = {"authorization": "Bearer"}
    tokens = iter(["t1", "t2"])
    conf.refresh_api_key_hook = lambda c: c.api_key.update(authorization=next(tokens))  # type: ignore[assignment]
    sent: list[tuple[Any, ...]] = []

    class Rest:
        def request(self, method: str, url: str, **kw: Any) -> Response:
            sent.append((method, url, kw["headers"], kw["body"], kw["_request_timeout"]))
            return Response(200, b'{"kind": "Node"}')

    from agent.kube.client import Transport

    t = Transport(conf)
    t.rest = Rest()  # type: ignore[assignment]
    kube = Kube(t)
    assert kube.request("PATCH", "/api/v1/nodes/n", {"a": "b c"}, {"x": 1}, "m/p") == {
        "kind": "Node"
    }
    kube.request("GET", "/api/v1/nodes")
    (m, url, headers, body, timeout), second = sent
    assert (m, url, body, timeout) == (
        "PATCH",
        "https://127.0.0.1:6443/api/v1/nodes/n?a=b+c",
        {"x": 1},
        15.0,
    )
    assert headers == {
        "Accept": "application/json",
        "User-Agent": USER_AGENT,
        "Content-Type": "m/p",
        "authorization": "Bearer t1",
    }
    assert second[2]["authorization"] == "Bearer t2" and "Content-Type" not in second[2]
