"""Runs the real `memfrag-agent run` as a subprocess against the local control plane, over a
/proc tree the test controls and a FIFO standing in for /dev/kmsg."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from agent.kube.client import Kube
from tests.cluster.scrape import scrape

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "proc"
AGENT = Path(sys.executable).parent / "memfrag-agent"
HELM = REPO / ".tools" / "bin" / "helm"
KUBECTL = REPO / ".tools" / "bin" / "kubectl"
NAMESPACE = "memfrag-system"
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Clock:
    """A clock a test moves by hand (monotonic) or offsets from the real one (wall)."""

    def __init__(self, t: float = 0.0, real: bool = False) -> None:
        self.t, self.real = t, real

    def __call__(self) -> float:
        return self.t + (time.time() if self.real else 0.0)


class FakeHost:
    """A /proc tree holding buddyinfo only: healthy (this machine's) or fragmented (the seed's)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.healthy()

    def _put(self, fixture: str) -> None:
        """Take buddyinfo (and pagetypeinfo, where the fixture has one) from a real capture."""
        for name in ("buddyinfo", "pagetypeinfo"):
            src, dst = FIXTURES / fixture / name, self.root / name
            if not src.exists():
                dst.unlink(missing_ok=True)
                continue
            tmp = self.root / f"{name}.tmp"
            shutil.copy(src, tmp)
            os.replace(tmp, dst)  # atomic, as the kernel's file is coherent

    def unmovable(self) -> None:
        """A production machine fragmented by unmovable kernel memory (linux-mm, 2016)."""
        self._put("fb-prod-2node-4.0-fragmented")

    def healthy(self) -> None:
        self._put("vm-6.18-x86_64")

    def fragmented(self) -> None:
        self._put("seed-incident")

    def garbage(self) -> None:
        (self.root / "buddyinfo").write_text("Node 0, zone Normal 1 2 x\n")


def kmsg_line(text: str, seq: int = 1, facility: int = 0, level: int = 4) -> bytes:
    return f"{facility * 8 + level},{seq},{int(time.monotonic() * 1e6)},-;{text}\n".encode()


SEED_LINE = "mysqld: page allocation failure. order:4, mode:0x10c0d0"
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


class AgentProcess:
    def __init__(
        self,
        workdir: Path,
        node: str,
        kubeconfig: Path,
        host: FakeHost,
        config: dict[str, Any] | None = None,
    ) -> None:
        self.workdir, self.node, self.kubeconfig, self.host = workdir, node, kubeconfig, host
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.kmsg = workdir / "kmsg"
        self.config_path = workdir / "config.yaml"
        self.config: dict[str, Any] = {
            "sources": {
                "poll_interval_seconds": 1,
                "pagetypeinfo_interval_seconds": 60,
                "kmsg_path": str(self.kmsg),
            },
            "reporting": {
                "fragmented_for_seconds": 2,
                "healthy_for_seconds": 2,
                "heartbeat_seconds": 30,
                "metrics_port": self.port,
                "metrics_address": "127.0.0.1",
                # Tests share one API server and many nodes; the cap has its own test.
                "max_tainted_percent": 100,
            },
        }
        for section, values in (config or {}).items():
            self.config.setdefault(section, {}).update(values)
        self.fifo = self.config["sources"]["kmsg_path"] == str(self.kmsg)
        if self.fifo and not self.kmsg.exists():
            os.mkfifo(self.kmsg)
        self.write_config()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "agent.log"
        self._kmsg_fd: int | None = None

    def write_config(self, text: str | None = None) -> None:
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(text if text is not None else yaml.safe_dump(self.config))
        os.replace(tmp, self.config_path)

    def start(self) -> AgentProcess:
        env = dict(os.environ, NODE_NAME=self.node, KUBECONFIG=str(self.kubeconfig))
        env.pop("KUBERNETES_SERVICE_HOST", None)
        self.proc = subprocess.Popen(
            [
                str(AGENT),
                "run",
                "--config",
                str(self.config_path),
                "--proc-root",
                str(self.host.root),
                "--log-format",
                "json",
            ],
            env=env,
            stdout=open(self.log_path, "ab"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
        )
        # Hold the FIFO open for writing so the agent's reader never sees EOF between writes.
        if self.fifo:
            self._kmsg_fd = os.open(self.kmsg, os.O_RDWR)
        wait_for(self.healthz, "the agent's /healthz", timeout=30)
        return self

    def reopen_kmsg_writer(self) -> None:
        """Close the FIFO's only writer (the agent reads EOF), then open a new one."""
        assert self._kmsg_fd is not None
        os.close(self._kmsg_fd)
        time.sleep(0.5)
        self._kmsg_fd = os.open(self.kmsg, os.O_WRONLY)

    def write_kmsg(self, line: bytes) -> None:
        assert self._kmsg_fd is not None
        os.write(self._kmsg_fd, line)

    def healthz(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def metrics(self) -> dict[str, float]:
        return scrape(f"http://127.0.0.1:{self.port}/metrics")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self._kmsg_fd is not None:
            os.close(self._kmsg_fd)
            self._kmsg_fd = None
        if self.proc is None:
            return 0
        self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait(5)
        self.proc = None
        return rc


def apply_chart_rbac(
    kubeconfig: Path, release: str = "memfrag-agent", sets: tuple[str, ...] = ()
) -> None:
    """Apply the chart's own ServiceAccount and RBAC (with `--set` values): the agent gets
    exactly what the chart grants, no more."""
    rendered = subprocess.run(
        [
            str(HELM),
            "template",
            release,
            str(REPO / "charts" / "memfrag-agent"),
            "--namespace",
            NAMESPACE,
            "--kube-version",
            "v1.35.4",
            "--show-only",
            "templates/serviceaccount.yaml",
            "--show-only",
            "templates/rbac.yaml",
            *(arg for s in sets for arg in ("--set", s)),
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    kubectl = [str(KUBECTL), "--kubeconfig", str(kubeconfig)]
    subprocess.run(
        [*kubectl, "create", "namespace", NAMESPACE], capture_output=True, text=True, check=False
    )
    subprocess.run(
        [*kubectl, "apply", "-f", "-"], input=rendered, check=True, capture_output=True, text=True
    )


class FakeKernel:
    """Stands in for /proc/sys/vm/{compact_memory,drop_caches}: FIFOs read by threads that
    record every write, and optionally heal the FakeHost when a given action arrives."""

    def __init__(self, host: FakeHost, heals_on: str | None = None, delay: float = 0.0) -> None:
        self.host, self.heals_on, self.delay = host, heals_on, delay
        self.writes: list[tuple[str, str]] = []
        vm = host.root / "sys" / "vm"
        vm.mkdir(parents=True, exist_ok=True)
        self._stop = False
        self.threads: list[threading.Thread] = []
        for name in ("compact_memory", "drop_caches"):
            path = vm / name
            os.mkfifo(path)
            t = threading.Thread(target=self._serve, args=(name, path), name=name, daemon=True)
            t.start()
            self.threads.append(t)

    def _serve(self, name: str, path: Path) -> None:
        while not self._stop:
            time.sleep(self.delay)  # a slow kernel: the agent's open() waits this long
            with open(path, "rb") as fh:  # blocks until the agent opens it to write
                value = fh.read().decode().strip()
            if self._stop:
                return
            self.writes.append((name, value))
            if self.heals_on == f"{name}={value}":
                self.host.healthy()

    def close(self) -> None:
        self._stop = True
        for t in self.threads:  # unblock readers waiting in open()
            with contextlib.suppress(OSError):
                fd = os.open(self.host.root / "sys" / "vm" / t.name, os.O_WRONLY | os.O_NONBLOCK)
                os.close(fd)


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
