"""/metrics and /healthz under idle and slow connections (issue 13, item 3), on a real started
server on a loopback port: one thread whatever the number of connections, connections bounded
and timed out, /healthz still answering."""

from __future__ import annotations

import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from agent.base.errors import MemfragError
from agent.daemon.httpserver import MAX_CONNECTIONS, BoundedHTTPServer
from agent.daemon.metrics import Health, Metrics, serve


@pytest.fixture
def server() -> Iterator[tuple[str, int]]:
    srv = serve(Metrics(), Health(max_age=60), "127.0.0.1", 0)
    try:
        yield srv.server_address
    finally:
        srv.shutdown()


def get(address: tuple[str, int], path: str) -> tuple[int, bytes]:
    host, port = address
    try:
        with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def closed_by_peer(sock: socket.socket, wait: float = 30.0) -> bool:
    """True once the server closed the connection (recv returns b'' or resets)."""
    sock.settimeout(wait)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_endpoints(server: tuple[str, int]) -> None:
    status, body = get(server, "/healthz")
    assert (status, body) == (200, b"ok\n")
    status, body = get(server, "/metrics")
    assert status == 200 and b"memfrag_build_info" in body
    assert get(server, "/nope")[0] == 404


@pytest.mark.timeout(120)
def test_many_idle_connections_hold_no_threads_and_healthz_answers(
    server: tuple[str, int],
) -> None:
    before = threading.active_count()
    idle = [socket.create_connection(server) for _ in range(10 * MAX_CONNECTIONS)]
    try:
        # half-open: a request line and no end of headers
        for s in idle[::2]:
            s.sendall(b"GET /metrics HTTP/1.1\r\n")
        assert get(server, "/healthz") == (200, b"ok\n")
        assert threading.active_count() <= before  # ThreadingHTTPServer: one thread each
        # the oldest were dropped to stay within the bound
        assert closed_by_peer(idle[0])
        assert get(server, "/metrics")[0] == 200
    finally:
        for s in idle:
            s.close()


@pytest.mark.timeout(120)
def test_a_slow_client_is_dropped_at_its_deadline() -> None:
    srv = BoundedHTTPServer("127.0.0.1", 0, lambda path: (200, "text/plain", b"ok\n"), 8, 0.5)
    srv.start()
    try:
        slow = socket.create_connection(srv.server_address)
        slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
        assert closed_by_peer(slow)
        slow.close()
        wait_until = time.monotonic() + 30
        while srv.connections and time.monotonic() < wait_until:
            time.sleep(0.05)
        assert srv.connections == 0
    finally:
        srv.shutdown()


def test_an_oversized_request_is_refused(server: tuple[str, int]) -> None:
    with socket.create_connection(server) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nX-Junk: " + b"a" * 20000)
        s.settimeout(30)
        answer = s.recv(4096)
    assert answer.startswith(b"HTTP/1.1 431 ")


@pytest.mark.parametrize(
    ("request_line", "status"),
    [
        (b"POST /metrics HTTP/1.1", b"405"),
        (b"garbage", b"400"),
        (b"HEAD /healthz HTTP/1.1", b"200"),
    ],
)
def test_bad_requests(server: tuple[str, int], request_line: bytes, status: bytes) -> None:
    with socket.create_connection(server) as s:
        s.sendall(request_line + b"\r\n\r\n")
        s.settimeout(30)
        answer = s.recv(4096)
    assert answer.split(b" ")[1] == status
    if request_line.startswith(b"HEAD"):
        assert answer.endswith(b"\r\n\r\n")  # headers only


def test_ipv6_address(server: tuple[str, int]) -> None:
    srv = serve(Metrics(), Health(max_age=60), "::1", 0)
    try:
        host, port = srv.server_address
        with urllib.request.urlopen(f"http://[{host}]:{port}/healthz", timeout=10) as r:
            assert r.read() == b"ok\n"
    finally:
        srv.shutdown()


def test_an_address_this_host_does_not_have_is_a_clear_error() -> None:
    """Was a traceback out of the daemon's start (socket.gaierror / OSError)."""
    with pytest.raises(MemfragError) as info:
        serve(Metrics(), Health(max_age=60), "192.0.2.1", 0)  # TEST-NET-1: never local
    assert str(info.value) == (
        "cannot listen on 192.0.2.1:0 (reporting.metrics_address, reporting.metrics_port): "
        "Cannot assign requested address"
    )
