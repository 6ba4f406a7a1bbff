"""The one module that imports `kubernetes`: configuration, transport and raw JSON requests.

The official client provides kubeconfig/in-cluster loading, TLS, token refresh and the
connection pool; everything above this module works on plain JSON dicts, so no other module
depends on the client's generated models.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlencode

from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from agent.base.errors import MemfragError
from agent.kube.api import JSON, MERGE, SMP
from agent.kube.errors import ApiError, BudgetSpent, backoff_delay

WATCH_IDLE_SECONDS = 300  # a watch stream silent this long (bookmarks come every ~60 s) is dead

__all__ = ["JSON", "MERGE", "SMP", "ApiError", "BudgetSpent", "Kube", "backoff_delay"]


class Kube:
    """Raw JSON access to the API server through the official client's transport."""

    def __init__(self, api_client: Any, timeout: float = 15.0) -> None:
        self.api = api_client
        self.timeout = timeout
        self.requests_total = 0  # for benchmarks and the api-load metric
        # Told the outcome of every request and watch (None: answered), for memfrag_api_up.
        self.observer: Callable[[ApiError | None], None] | None = None
        self._local = threading.local()

    @contextlib.contextmanager
    def budget(self, seconds: float) -> Iterator[None]:
        """Calls from this thread inside the block share `seconds` in all (timeouts shrink to
        what is left, then BudgetSpent): an API server that accepts and never answers costs
        the poll loop at most this, not 15 s per call times the retries."""
        outer = getattr(self._local, "deadline", None)
        deadline = time.monotonic() + seconds
        self._local.deadline = deadline if outer is None else min(outer, deadline)
        self._local.seconds = seconds
        try:
            yield
        finally:
            self._local.deadline = outer

    def _time_left(self, method: str, path: str, timeout: float | None) -> float:
        t = timeout or self.timeout
        deadline: float | None = getattr(self._local, "deadline", None)
        if deadline is None:
            return t
        left = deadline - time.monotonic()
        if left < 0.05:
            raise BudgetSpent(method, path, float(self._local.seconds))
        return min(t, left)

    def _observe(self, err: ApiError | None) -> None:
        if self.observer is not None:
            self.observer(err)

    @classmethod
    def from_environment(cls, kubeconfig: str | None = None) -> Kube:
        """In-cluster config when running in a pod, else KUBECONFIG / the given file."""
        conf = k8s_client.Configuration()
        try:
            if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
                k8s_config.load_incluster_config(client_configuration=conf)  # type: ignore[no-untyped-call]
            else:
                k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
                    config_file=kubeconfig, client_configuration=conf
                )
        except (ConfigException, OSError, TypeError) as exc:
            raise MemfragError(f"cannot load Kubernetes credentials: {exc}") from exc
        conf.retries = 0  # we back off ourselves, with jitter
        return cls(k8s_client.ApiClient(conf))

    def _prepare(
        self,
        method: str,
        path: str,
        query: dict[str, Any] | None,
        body: Any,
        content_type: str | None,
    ) -> tuple[Any, ...]:
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type or "application/json"
        url_path = path + ("?" + urlencode(query) if query else "")
        return tuple(
            self.api.param_serialize(
                method=method,
                resource_path=url_path,
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
            )
        )

    def request(
        self,
        method: str,
        path: str,
        query: dict[str, Any] | None = None,
        body: Any = None,
        content_type: str | None = None,
        timeout: float | None = None,
    ) -> JSON:
        """One call; raises ApiError with the status (0: unreachable) on any failure. A single
        timeout is urllib3's total for connect, TLS handshake and read."""
        seconds = self._time_left(method, path, timeout)  # BudgetSpent: nothing was sent
        self.requests_total += 1
        params = self._prepare(method, path, query, body, content_type)
        try:
            resp = self.api.call_api(*params, _request_timeout=seconds)
            data = resp.read()
        except ApiException as exc:
            raise self._failed(
                ApiError(method, path, exc.status or 0, str(exc.reason or ""))
            ) from exc
        except Exception as exc:  # urllib3 / socket errors: the server is unreachable
            raise self._failed(ApiError(method, path, 0, f"{type(exc).__name__}: {exc}")) from exc
        if not 200 <= resp.status < 300:
            raise self._failed(ApiError(method, path, resp.status, _status_message(data)))
        self._observe(None)
        try:
            out = json.loads(data) if data else {}
        except ValueError as exc:
            raise ApiError(method, path, resp.status, "response is not JSON") from exc
        return out if isinstance(out, dict) else {"items": out}

    def _failed(self, err: ApiError) -> ApiError:
        self._observe(err)
        return err

    def watch(self, path: str, query: dict[str, Any], timeout_seconds: int = 300) -> Iterator[JSON]:
        """Stream watch events ({type, object}) until the server ends the watch. An ERROR event
        with code 410 (Gone) means the resourceVersion expired: the caller re-lists. With
        bookmarks the server sends something at least every minute, so a stream silent for
        WATCH_IDLE_SECONDS is a dead connection: the read times out and the caller re-watches."""
        self.requests_total += 1
        q = dict(query, watch="1", timeoutSeconds=str(timeout_seconds), allowWatchBookmarks="true")
        params = self._prepare("GET", path, q, None, None)
        idle = min(timeout_seconds + 30, WATCH_IDLE_SECONDS)
        try:
            resp = self.api.call_api(*params, _request_timeout=(10, idle))
        except ApiException as exc:
            raise self._failed(
                ApiError("WATCH", path, exc.status or 0, str(exc.reason or ""))
            ) from exc
        except Exception as exc:
            raise self._failed(ApiError("WATCH", path, 0, f"{type(exc).__name__}: {exc}")) from exc
        raw = resp.response
        try:
            if not 200 <= resp.status < 300:
                raise self._failed(
                    ApiError("WATCH", path, resp.status, _status_message(raw.read()))
                )
            self._observe(None)
            buf = b""
            for chunk in raw.stream(amt=None, decode_content=False):
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if line.strip():
                        event = json.loads(line)
                        if isinstance(event, dict):
                            yield event
        except ApiError:
            raise
        except Exception as exc:
            raise self._failed(ApiError("WATCH", path, 0, f"{type(exc).__name__}: {exc}")) from exc
        finally:
            raw.release_conn()

    def with_retries(
        self, fn: Any, *args: Any, attempts: int = 5, sleep: Any = time.sleep, **kwargs: Any
    ) -> JSON:
        """Retry 429/5xx/unreachable with jittered backoff; other errors are final. Within a
        budget, a backoff that would outlast it is not slept: the error is final instead."""
        for attempt in range(attempts):
            try:
                result: JSON = fn(*args, **kwargs)
                return result
            except ApiError as exc:
                if not exc.retryable or attempt == attempts - 1:
                    raise
                delay = backoff_delay(attempt)
                deadline = getattr(self._local, "deadline", None)
                if deadline is not None and time.monotonic() + delay >= deadline:
                    raise
                sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover


def _status_message(data: bytes | None) -> str:
    """The API server's Status message, or the start of the body."""
    if not data:
        return ""
    try:
        status = json.loads(data)
        return str(status.get("message") or status.get("reason") or "")
    except (ValueError, AttributeError):
        return data[:200].decode("utf-8", errors="replace")
