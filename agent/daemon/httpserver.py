"""A small HTTP/1.1 server for /metrics and /healthz: one thread, bounded connections.

http.server's ThreadingHTTPServer gives every connection a thread and waits on it forever:
3,000 half-open connections made 3,000 threads and 104 MB, and a client that sends nothing
holds its thread for good. Here one thread multiplexes every connection (selectors), each
connection has a deadline for its whole life (request in, response out), requests are bounded in
size, and past `max_connections` the oldest connection is dropped for the new one, so a probe
or a scrape still gets through while idle sockets pile up.
"""

from __future__ import annotations

import contextlib
import http
import selectors
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

# (status, content type, body) for a request path (the query string included).
Handler = Callable[[str], tuple[int, str, bytes]]

MAX_CONNECTIONS = 64
REQUEST_TIMEOUT = 10.0  # seconds for a connection's whole life: Prometheus' default scrape timeout
MAX_REQUEST_BYTES = 8192  # request line and headers; these endpoints take no body


@dataclass
class _Conn:
    sock: socket.socket
    deadline: float
    inbuf: bytes = b""
    out: bytes = field(default=b"")
    responding: bool = False


class BoundedHTTPServer:
    def __init__(
        self,
        address: str,
        port: int,
        handler: Handler,
        max_connections: int = MAX_CONNECTIONS,
        request_timeout: float = REQUEST_TIMEOUT,
    ) -> None:
        self.handler = handler
        self.max_connections = max_connections
        self.request_timeout = request_timeout
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        self._listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._listener.bind((address, port))
            self._listener.listen(128)
        except OSError:
            self._listener.close()
            raise
        self._listener.setblocking(False)
        self._wake_r, self._wake_w = socket.socketpair()
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self._conns: dict[socket.socket, _Conn] = {}
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="http", daemon=True)

    @property
    def server_address(self) -> tuple[str, int]:
        host, port = self._listener.getsockname()[:2]
        return str(host), int(port)

    @property
    def connections(self) -> int:
        return len(self._conns)

    def start(self) -> None:
        self._thread.start()

    def shutdown(self) -> None:
        """Stop serving, close every connection and the listening socket."""
        self._stopping = True
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        for conn in list(self._conns.values()):
            self._close(conn)
        self._selector.close()
        for s in (self._listener, self._wake_r, self._wake_w):
            s.close()

    # --- the loop ------------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stopping:
            # Idle, it sleeps until a connection or shutdown's wake-up (no timeout: an idle
            # agent must not wake once a second); else until the nearest deadline.
            now = time.monotonic()
            nearest = min((c.deadline for c in self._conns.values()), default=None)
            timeout = None if nearest is None else max(0.0, nearest - now)
            for key, mask in self._selector.select(timeout):
                if key.fileobj is self._listener:
                    self._accept()
                elif key.fileobj is self._wake_r:
                    return
                else:
                    conn: _Conn = key.data
                    try:
                        if mask & selectors.EVENT_READ:
                            self._read(conn)
                        if mask & selectors.EVENT_WRITE and conn.sock in self._conns:
                            self._write(conn)
                    except Exception:  # one bad connection never stops the endpoint
                        self._close(conn)
            now = time.monotonic()
            for conn in [c for c in self._conns.values() if c.deadline <= now]:
                self._close(conn)

    def _accept(self) -> None:
        for _ in range(self.max_connections):  # a burst at most; the rest waits in the backlog
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # e.g. EMFILE: leave it in the backlog, serve the others
                return
            if len(self._conns) >= self.max_connections:
                self._close(min(self._conns.values(), key=lambda c: c.deadline))
            sock.setblocking(False)
            conn = _Conn(sock, time.monotonic() + self.request_timeout)
            self._conns[sock] = conn
            self._selector.register(sock, selectors.EVENT_READ, conn)

    def _read(self, conn: _Conn) -> None:
        try:
            data = conn.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        if not data:
            self._close(conn)
            return
        if conn.responding:
            return  # a pipelined or trailing request: this connection closes after its answer
        conn.inbuf += data
        end = conn.inbuf.find(b"\r\n\r\n")
        if end < 0:
            end = conn.inbuf.find(b"\n\n")
        if end >= 0:
            self._respond(conn, conn.inbuf[:end])
        elif len(conn.inbuf) > MAX_REQUEST_BYTES:
            self._reply(conn, 431, "text/plain", b"request header too large\n", True)

    def _respond(self, conn: _Conn, head: bytes) -> None:
        parts = head.split(b"\n", 1)[0].strip().split()
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
            self._reply(conn, 400, "text/plain", b"bad request\n", True)
            return
        method, target = parts[0], parts[1].decode("latin-1")
        if method not in (b"GET", b"HEAD"):
            self._reply(conn, 405, "text/plain", b"only GET and HEAD\n", True)
            return
        try:
            status, ctype, body = self.handler(target)
        except Exception:
            status, ctype, body = 500, "text/plain", b"internal error\n"
        self._reply(conn, status, ctype, body, method == b"GET")

    def _reply(self, conn: _Conn, status: int, ctype: str, body: bytes, with_body: bool) -> None:
        reason = http.HTTPStatus(status).phrase
        head = (
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode("latin-1")
        conn.out = head + (body if with_body else b"")
        conn.inbuf = b""
        conn.responding = True
        self._selector.modify(conn.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, conn)

    def _write(self, conn: _Conn) -> None:
        try:
            sent = conn.sock.send(conn.out)
        except (BlockingIOError, InterruptedError):
            return
        conn.out = conn.out[sent:]
        if not conn.out:
            with contextlib.suppress(OSError):
                conn.sock.shutdown(socket.SHUT_WR)
            self._close(conn)

    def _close(self, conn: _Conn) -> None:
        if self._conns.pop(conn.sock, None) is None:
            return
        with contextlib.suppress(KeyError, ValueError, OSError):
            self._selector.unregister(conn.sock)
        conn.sock.close()
