"""The one module that imports `kubernetes`: configuration, transport and raw JSON requests.

The official client provides kubeconfig/in-cluster loading, TLS, token refresh and the
connection pool; everything above this module works on plain JSON dicts, so no other module
depends on the client's generated models.

Only the parts used are imported (`_narrow_import`): `import kubernetes.client` runs the
package's __init__, which imports every generated API and model, 19 MiB of the daemon's 48; its
Configuration, RESTClientObject (urllib3 pool, TLS) and in-cluster loader alone cost 2 MiB (the
kubeconfig loader, never used in a pod, 5.5 more: oauthlib and requests).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import os
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlencode

from agent import __version__
from agent.base.errors import MemfragError
from agent.kube.api import JSON, MERGE, SMP
from agent.kube.errors import ApiError, BudgetSpent, backoff_delay


def _narrow_import() -> None:
    """Register the `kubernetes` packages whose __init__ is heavy (`kubernetes`, `.client`,
    `.config`, `.utils`) without running it, so importing one submodule loads that module
    alone. A package runs its __init__ the first time anything asks it for a name it lacks
    (PEP 562 __getattr__): `import kubernetes` elsewhere in the process still gets the whole
    client, only later. Nothing is done when the package is loaded already."""
    if "kubernetes" in sys.modules:
        return
    for name in ("kubernetes", "kubernetes.config", "kubernetes.utils"):
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return  # not installed: the imports below say so
        module = importlib.util.module_from_spec(spec)
        module.__dict__["__getattr__"] = _completer(module)
        sys.modules[name] = module
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(sys.modules[parent], child, module)


def _completer(module: types.ModuleType) -> Callable[[str], Any]:
    def complete(attr: str) -> Any:
        module.__dict__.pop("__getattr__", None)
        assert module.__spec__ is not None and module.__spec__.loader is not None
        module.__spec__.loader.exec_module(module)
        return getattr(module, attr)

    return complete


def _api_client(*args: Any, **kwargs: Any) -> Any:
    """Stands in for ApiClient in kubernetes.config.kube_config, which only constructs one (in
    new_client_from_config and an OIDC refresh): the real one, with every model, when called."""
    return importlib.import_module("kubernetes.client.api_client").ApiClient(*args, **kwargs)


def _kube_config() -> types.ModuleType:
    """kubernetes.config.kube_config without the 14 MiB of ApiClient's import (every model and
    pydantic): `from kubernetes.client import ApiClient` finds the stand-in while it loads,
    and the package's own lazy name again afterwards."""
    name = "kubernetes.config.kube_config"
    if name not in sys.modules:
        package = sys.modules["kubernetes.client"]
        standin = "ApiClient" not in vars(package)
        if standin:
            package.ApiClient = _api_client  # type: ignore[attr-defined]
        try:
            importlib.import_module(name)
        finally:
            if standin and vars(package).get("ApiClient") is _api_client:
                del package.ApiClient
    return sys.modules[name]


_narrow_import()
import kubernetes.client.configuration as k8s_configuration  # noqa: E402
import kubernetes.client.exceptions as k8s_exceptions  # noqa: E402
import kubernetes.client.rest as k8s_rest  # noqa: E402
import kubernetes.config.config_exception as k8s_config_exception  # noqa: E402

ApiException = k8s_exceptions.ApiException
ConfigException = k8s_config_exception.ConfigException
USER_AGENT = f"memfrag-agent/{__version__}"
WATCH_IDLE_SECONDS = 300  # a watch stream silent this long (bookmarks come every ~60 s) is dead

__all__ = ["JSON", "MERGE", "SMP", "ApiError", "BudgetSpent", "Kube", "Transport", "backoff_delay"]


class Transport:
    """What Kube needs of the client: the Configuration (server, TLS, credentials, token
    refresh) and one urllib3 pool (RESTClientObject), without ApiClient and its models."""

    def __init__(self, conf: Any) -> None:
        self.conf = conf
        self.rest = k8s_rest.RESTClientObject(conf)

    def call(
        self,
        method: str,
        url_path: str,
        headers: dict[str, str],
        body: Any,
        timeout: float | tuple[float, float],
    ) -> Any:
        """One request; the response unread (a RESTResponse: .status, .read(), .response)."""
        headers = dict(headers)
        for auth in self.conf.auth_settings().values():  # the bearer token, refreshed
            if auth["in"] == "header" and auth["value"]:
                headers[auth["key"]] = auth["value"]
        return self.rest.request(  # type: ignore[no-untyped-call]
            method, self.conf.host + url_path, headers=headers, body=body, _request_timeout=timeout
        )


class Kube:
    """Raw JSON access to the API server through the official client's transport."""

    def __init__(self, api_client: Any, timeout: float = 15.0) -> None:
        """`api_client`: a Transport (or a stand-in with its `call`)."""
        self.api = api_client
        self.timeout = timeout
        self.requests_total = 0  # for benchmarks
        # Told the HTTP method of every request sent ("WATCH": a watch opened), for
        # memfrag_api_requests_total: what the agent costs the API server, as it counts it.
        self.on_request: Callable[[str], None] | None = None
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

    def _count(self, method: str) -> None:
        self.requests_total += 1
        if self.on_request is not None:
            self.on_request(method)

    def _observe(self, err: ApiError | None) -> None:
        if self.observer is not None:
            self.observer(err)

    @classmethod
    def from_environment(cls, kubeconfig: str | None = None, context: str | None = None) -> Kube:
        """In-cluster config when running in a pod (and neither a file nor a context is named),
        else KUBECONFIG / the given file, with its current context or the one named."""
        conf = k8s_configuration.Configuration()
        try:
            if kubeconfig is None and context is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
                from kubernetes.config.incluster_config import load_incluster_config

                load_incluster_config(client_configuration=conf)  # type: ignore[no-untyped-call]
            else:
                _kube_config().load_kube_config(
                    config_file=kubeconfig, context=context, client_configuration=conf
                )
        except (ConfigException, OSError, TypeError) as exc:
            raise MemfragError(f"cannot load Kubernetes credentials: {exc}") from exc
        conf.retries = 0  # we back off ourselves, with jitter
        return cls(Transport(conf))

    def _call(
        self,
        method: str,
        path: str,
        query: dict[str, Any] | None,
        body: Any,
        content_type: str | None,
        timeout: float | tuple[float, float],
    ) -> Any:
        headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
        if body is not None:
            headers["Content-Type"] = content_type or "application/json"
        url_path = path + ("?" + urlencode(query) if query else "")
        assert self.api is not None, "Kube without a transport"
        return self.api.call(method, url_path, headers, body, timeout)

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
        self._count(method)
        try:
            resp = self._call(method, path, query, body, content_type, seconds)
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
        self._count("WATCH")
        q = dict(query, watch="1", timeoutSeconds=str(timeout_seconds), allowWatchBookmarks="true")
        idle = min(timeout_seconds + 30, WATCH_IDLE_SECONDS)
        try:
            resp = self._call("GET", path, q, None, None, (10, idle))
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
