"""What the integration tests ask the local control plane about a node (as the admin), the
objects they plant there, a hand-moved clock and a black-holing API proxy. The agent process,
the fake host and kernel, waiting and the chart's RBAC live in tests/cluster, shared with the
demo, the e2e tests and bench."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from agent.kube.client import Kube


class Clock:
    """A clock a test moves by hand (monotonic) or offsets from the real one (wall)."""

    def __init__(self, t: float = 0.0, real: bool = False) -> None:
        self.t, self.real = t, real

    def __call__(self) -> float:
        return self.t + (time.time() if self.real else 0.0)


TAINT = "memfrag.dev/fragmented"


# --- what the API server says about a node (as the admin) ----------------------------------


def condition(admin: Kube, node: str) -> dict[str, Any] | None:
    n = admin.request("GET", f"/api/v1/nodes/{node}")
    for c in n["status"].get("conditions") or []:
        if c["type"] == "MemoryFragmented":
            return dict(c)
    return None


def status_is(admin: Kube, node: str, status: str) -> bool:
    c = condition(admin, node)
    return c is not None and c["status"] == status


def taints(admin: Kube, node: str) -> list[dict[str, Any]]:
    return list(admin.request("GET", f"/api/v1/nodes/{node}")["spec"].get("taints") or [])


def our_taint(admin: Kube, node: str) -> bool:
    return any(t["key"] == TAINT for t in taints(admin, node))


def events(admin: Kube, node: str) -> dict[str, dict[str, Any]]:
    """The latest Event per reason on the Node."""
    items = admin.request(
        "GET",
        "/api/v1/events",
        {"fieldSelector": f"involvedObject.kind=Node,involvedObject.name={node}"},
    )["items"]
    return {e["reason"]: e for e in items}


def create_pod(admin: Kube, name: str, node: str) -> None:
    """A pod bound to `node` (no kubelet runs it: it stays Pending)."""
    admin.request(
        "POST",
        "/api/v1/namespaces/default/pods",
        body={
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name},
            "spec": {
                "nodeName": node,
                "automountServiceAccountToken": False,
                "containers": [{"name": "c", "image": "registry.example/app:1"}],
            },
        },
    )


def sandbox_event(
    admin: Kube, name: str, pod: str, host: str, message: str = 'caused "exit status 6"'
) -> None:
    """kubelet's FailedCreatePodSandBox Event about `pod` (namespace default) on node `host`."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    admin.request(
        "POST",
        "/api/v1/namespaces/default/events",
        body={
            "metadata": {"name": name},
            "involvedObject": {"kind": "Pod", "namespace": "default", "name": pod},
            "reason": "FailedCreatePodSandBox",
            "type": "Warning",
            "message": message,
            "source": {"component": "kubelet", "host": host},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        },
    )


class ApiProxy:
    """A loopback TCP proxy in front of the API server that can turn into a black hole: new
    connections are accepted and held, bytes on open ones are swallowed, nothing is ever
    answered (a hung API server or a dropped route, which a refused connection is not)."""

    def __init__(self, server: str) -> None:
        host, _, port = server.removeprefix("https://").partition(":")
        self.upstream = (host, int(port))
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(128)
        self.port = int(self.listener.getsockname()[1])
        self.black_hole = False
        self.held: list[socket.socket] = []
        self._closed = False
        threading.Thread(target=self._accept, name="proxy", daemon=True).start()

    def kubeconfig(self, src: Path, dst: Path) -> Path:
        """`src` with its server pointed at this proxy."""
        conf = yaml.safe_load(src.read_text())
        for c in conf["clusters"]:
            c["cluster"]["server"] = f"https://127.0.0.1:{self.port}"
        dst.write_text(yaml.safe_dump(conf))
        return dst

    def restore(self) -> None:
        """Forward again; connections held in the black hole are closed (clients reconnect)."""
        self.black_hole = False
        for s in self.held:
            with contextlib.suppress(OSError):
                s.close()
        self.held = []

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.black_hole:
                self.held.append(client)
                continue
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if self.black_hole:
                    self.held.extend((src, dst))
                    continue  # swallowed: the other side waits for an answer that never comes
                dst.sendall(data)
        except OSError:
            pass
        finally:
            if not self.black_hole:
                for s in (src, dst):
                    with contextlib.suppress(OSError):
                        s.close()

    def close(self) -> None:
        self._closed = True
        self.restore()
        with contextlib.suppress(OSError):
            self.listener.close()
