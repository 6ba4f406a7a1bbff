"""What the agent needs of the API server, as a Protocol: `client.Kube` is the real one; a test
passes an in-memory fake (tests/unit/kube/fakekube.py) and needs no server."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any, Protocol

from agent.kube.errors import ApiError

JSON = dict[str, Any]
SMP = "application/strategic-merge-patch+json"
MERGE = "application/merge-patch+json"


class Api(Protocol):
    # Told the outcome of every request and watch (None: answered), for memfrag_api_up.
    observer: Callable[[ApiError | None], None] | None
    # Told the HTTP method of every request sent ("WATCH": a watch), for memfrag_api_requests.
    on_request: Callable[[str], None] | None

    def request(
        self,
        method: str,
        path: str,
        query: dict[str, Any] | None = None,
        body: Any = None,
        content_type: str | None = None,
        timeout: float | None = None,
    ) -> JSON: ...

    def watch(
        self, path: str, query: dict[str, Any], timeout_seconds: int = 300
    ) -> Iterator[JSON]: ...

    def with_retries(self, fn: Any, *args: Any, attempts: int = 5, **kwargs: Any) -> JSON: ...

    def budget(self, seconds: float) -> AbstractContextManager[None]: ...
