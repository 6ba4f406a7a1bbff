"""A real local Kubernetes control plane for tests, the demo and benchmarks.

In the spirit of controller-runtime's envtest: real etcd and kube-apiserver binaries (built by
`make tools`), optionally kube-scheduler and kube-controller-manager, with real TLS, RBAC and
ServiceAccount tokens, so the agent is exercised against the API it meets in production. By
default there is no kubelet: nodes are registered by hand and pods bound to them stay Pending;
`tests.cluster.node.RealNode` adds a real kubelet, containerd and kube-proxy to a plane started
with `for_real_node=True`.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import ctypes
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import yaml
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_BIN_DIR = REPO_ROOT / ".tools" / "bin"
BINARIES = ("etcd", "kube-apiserver", "kube-scheduler", "kube-controller-manager")
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"
DEFAULT_CONTROLLERS = "*,-nodelifecycle,-nodeipam"
# TaintNodesByCondition admission adds this taint to every new Node; only the node lifecycle
# controller (off here: there is no kubelet to report) would ever remove it.
NOT_READY_TAINT = "node.kubernetes.io/not-ready"
_LOOPBACK = "127.0.0.1"
_PR_SET_PDEATHSIG = 1


def node_labels(name: str, labels: Mapping[str, str] | None = None) -> dict[str, str]:
    """The labels a kubelet gives its Node, and `labels`."""
    return {
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        **(labels or {}),
    }


def node_status(name: str, cpu: str = "2", memory: str = "24Gi") -> dict[str, Any]:
    """The status a kubelet reports for a Ready node (capacity, the kubelet's conditions)."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    resources = {"cpu": cpu, "memory": memory, "pods": "110"}

    def condition(kind: str, status: str, reason: str) -> dict[str, str]:
        return {
            "type": kind,
            "status": status,
            "reason": reason,
            "message": "registered by tests.cluster (no kubelet)",
            "lastHeartbeatTime": now,
            "lastTransitionTime": now,
        }

    return {
        "capacity": resources,
        "allocatable": resources,
        "conditions": [
            condition("Ready", "True", "KubeletReady"),
            condition("MemoryPressure", "False", "KubeletHasSufficientMemory"),
            condition("DiskPressure", "False", "KubeletHasNoDiskPressure"),
            condition("PIDPressure", "False", "KubeletHasSufficientPID"),
        ],
        "addresses": [{"type": "Hostname", "address": name}],
        "nodeInfo": {
            "architecture": "amd64",
            "operatingSystem": "linux",
            "kubeletVersion": "v1.35.4",
        },
    }


class ControlPlaneError(RuntimeError):
    """The control plane could not be set up, started or stopped; the message says why."""


# --- process handling -------------------------------------------------------------------------

_LIVE: set[ControlPlane] = set()
_LIVE_LOCK = threading.Lock()
try:
    _PRCTL: Callable[..., int] | None = ctypes.CDLL(None, use_errno=True).prctl
except (AttributeError, OSError):  # not Linux: rely on atexit alone
    _PRCTL = None


def _stop_all_at_exit() -> None:
    """Stop every plane this process still owns, so a crashed test run leaves nothing behind."""
    with _LIVE_LOCK:
        planes = list(_LIVE)
    for plane in planes:
        with contextlib.suppress(Exception):
            plane.stop()


atexit.register(_stop_all_at_exit)


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGKILL it if the spawning thread dies (e.g. kill -9)."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL)


def free_port() -> int:
    """A loopback port that is free right now (the OS picks it; a tiny race is accepted)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def _log_tail(path: Path, lines: int = 40) -> str:
    """The end of a component's log, to put in an error message."""
    try:
        data = path.read_bytes()[-16384:]
    except OSError:
        return "(no log)"
    return "\n".join(data.decode(errors="replace").splitlines()[-lines:])


def pid_alive(pid: int) -> bool:
    """Whether `pid` still runs (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped) counts as gone.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _terminate_group(pid: int, grace: float, popen: subprocess.Popen[bytes] | None = None) -> None:
    """SIGTERM the process group led by `pid`, then SIGKILL it after `grace` seconds."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if popen is not None:
                try:
                    popen.wait(timeout=0.1)
                    return
                except subprocess.TimeoutExpired:
                    continue
            if not pid_alive(pid):
                return
            time.sleep(0.1)
    if popen is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            popen.wait(timeout=1)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def read_pids(workdir: Path) -> dict[str, int]:
    """The component -> pid map a plane writes to `workdir/pids` (for `down` and `status`)."""
    pids: dict[str, int] = {}
    path = workdir / "pids"
    if path.exists():
        for line in path.read_text().splitlines():
            name, _, pid = line.partition(" ")
            if pid.strip().isdigit():
                pids[name] = int(pid)
    return pids


def stop_from_pids(workdir: Path, grace: float = 10.0) -> list[str]:
    """Stop a plane started by another process (`up`), by its pids file; returns what it stopped.

    A pid is only signalled if it still runs the recorded binary, so a reused pid is left alone.
    """
    stopped = []
    for name, pid in reversed(list(read_pids(workdir).items())):
        if pid_alive(pid) and name in _cmdline(pid):
            _terminate_group(pid, grace)
            stopped.append(name)
    with contextlib.suppress(FileNotFoundError):
        (workdir / "pids").unlink()
    return stopped


# --- PKI -------------------------------------------------------------------------------------


def _openssl(*args: str) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise ControlPlaneError("ControlPlane: the `openssl` CLI is needed to create test certs")
    result = subprocess.run([openssl, *args], capture_output=True, check=False)
    if result.returncode != 0:
        raise ControlPlaneError(
            f"openssl {' '.join(args[:2])} failed: {result.stderr.decode(errors='replace')}"
        )


def api_client_for(kubeconfig: Path) -> k8s_client.ApiClient:
    """An ApiClient for a kubeconfig (admin or ServiceAccount); a typed wrapper for the client."""
    api: k8s_client.ApiClient = k8s_config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=str(kubeconfig)
    )
    return api


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


class ControlPlane:
    """etcd + kube-apiserver (+ scheduler, controller-manager) on free loopback ports.

    Everything (certs, kubeconfigs, etcd data, logs) lives in `workdir`. Children run in their
    own process groups and are stopped with SIGTERM then SIGKILL; an atexit handler and (for
    children spawned from the main thread) PR_SET_PDEATHSIG make sure none outlives the test
    process. `detached=True` turns both off, for `python -m tests.cluster up`.
    """

    def __init__(
        self,
        workdir: Path,
        bin_dir: Path = DEFAULT_BIN_DIR,
        *,
        timeout: float = 90.0,
        grace: float = 10.0,
        detached: bool = False,
        for_real_node: bool = False,
    ) -> None:
        missing = [b for b in BINARIES if not os.access(bin_dir / b, os.X_OK)]
        if missing:
            raise ControlPlaneError(
                f"ControlPlane: missing {', '.join(missing)} in {bin_dir}; "
                "run `make tools` to build the pinned control-plane binaries"
            )
        self.workdir = Path(workdir).resolve()
        self.bin_dir = Path(bin_dir).resolve()
        self.timeout = timeout
        self.grace = grace
        self.detached = detached
        self.for_real_node = for_real_node
        self.pki = self.workdir / "pki"
        self.logs = self.workdir / "logs"
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._ports: dict[str, int] = {}
        self._lock = threading.RLock()

    # --- public properties ---

    @property
    def kubeconfig(self) -> Path:
        """The admin (system:masters) kubeconfig."""
        return self.workdir / "admin.kubeconfig"

    @property
    def ca_file(self) -> Path:
        """The test CA: it signed the serving cert and every client cert."""
        return self.pki / "ca.crt"

    @property
    def server(self) -> str:
        """The API server URL; the port stays the same across stop/start_apiserver()."""
        if "apiserver" not in self._ports:
            raise ControlPlaneError("ControlPlane: not started, there is no server URL yet")
        return f"https://{_LOOPBACK}:{self._ports['apiserver']}"

    def running(self, component: str) -> bool:
        """Whether `component` (etcd, kube-apiserver, kube-scheduler, ...) is running."""
        proc = self._procs.get(component)
        return proc is not None and proc.poll() is None

    # --- lifecycle ---

    def start(self) -> Self:
        """Generate PKI and kubeconfigs, start etcd and kube-apiserver, wait for /readyz."""
        with self._lock:
            if self.running("kube-apiserver"):
                return self
            try:
                self.workdir.mkdir(parents=True, exist_ok=True)
                self.logs.mkdir(exist_ok=True)
                self._ensure_pki()
                if not self._ports:
                    self._ports = {n: free_port() for n in ("etcd", "etcd-peer", "apiserver")}
                self._write_kubeconfigs()
                self._start_etcd()
                self.start_apiserver()
            except BaseException:
                self.stop()
                raise
        return self

    def start_apiserver(self) -> None:
        """(Re)start kube-apiserver on the same port against the same etcd; wait for /readyz."""
        with self._lock:
            if self.running("kube-apiserver"):
                return
            if not self.running("etcd"):
                raise ControlPlaneError("ControlPlane: etcd is not running; call start() first")
            pki = self.pki
            if self.for_real_node:
                node_flags = [
                    # A kubelet runs: pods get their ServiceAccount token projected (the
                    # controller-manager creates the `default` ServiceAccounts), and kubelets
                    # may touch only their own Node and its pods, as in production.
                    "--enable-admission-plugins=NodeRestriction",
                    # The node registers only an InternalIP (on the pod bridge): logs and exec
                    # go there, with a client cert the kubelet's webhook authorizes.
                    "--kubelet-preferred-address-types=InternalIP",
                    f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
                    f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
                ]
            else:
                node_flags = [
                    # The ServiceAccount admission plugin rejects every pod whose ServiceAccount
                    # does not exist yet, and only kube-controller-manager creates `default` SAs.
                    "--disable-admission-plugins=ServiceAccount",
                ]
            self._spawn(
                "kube-apiserver",
                [
                    f"--etcd-servers=http://{_LOOPBACK}:{self._ports['etcd']}",
                    f"--secure-port={self._ports['apiserver']}",
                    f"--bind-address={_LOOPBACK}",
                    f"--advertise-address={_LOOPBACK}",
                    f"--cert-dir={self.workdir / 'apiserver-certs'}",
                    f"--tls-cert-file={pki / 'apiserver.crt'}",
                    f"--tls-private-key-file={pki / 'apiserver.key'}",
                    f"--client-ca-file={pki / 'ca.crt'}",
                    "--authorization-mode=Node,RBAC",
                    f"--service-account-key-file={pki / 'sa.pub'}",
                    f"--service-account-signing-key-file={pki / 'sa.key'}",
                    f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
                    f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                    "--allow-privileged=true",
                    *node_flags,
                    # Endpoints may not hold loopback IPs: the default reconciler for the
                    # `kubernetes` Service would fail (and log) forever with 127.0.0.1.
                    "--endpoint-reconciler-type=none",
                    "--shutdown-watch-termination-grace-period=2s",
                ],
            )
            self._wait_ready("kube-apiserver", f"{self.server}/readyz", self.ssl_context())

    def stop_apiserver(self) -> None:
        """Stop kube-apiserver only (etcd keeps the data), e.g. to test an API outage."""
        with self._lock:
            self._stop("kube-apiserver")

    def start_scheduler(self) -> None:
        """Start kube-scheduler (as system:kube-scheduler) so pods get bound to nodes."""
        with self._lock:
            if self.running("kube-scheduler"):
                return
            port = self._ports.setdefault("kube-scheduler", free_port())
            kubeconfig = self.workdir / "kube-scheduler.kubeconfig"
            self._spawn(
                "kube-scheduler",
                [
                    f"--kubeconfig={kubeconfig}",
                    f"--authentication-kubeconfig={kubeconfig}",
                    f"--authorization-kubeconfig={kubeconfig}",
                    "--leader-elect=false",
                    f"--bind-address={_LOOPBACK}",
                    f"--secure-port={port}",
                ],
            )
            self._wait_ready("kube-scheduler", f"https://{_LOOPBACK}:{port}/healthz", None)

    def start_controller_manager(self, controllers: str = DEFAULT_CONTROLLERS) -> None:
        """Start kube-controller-manager (DaemonSets, ReplicaSets, GC, default SAs, ...).

        The node lifecycle controller is off by default: without kubelets it would taint every
        node unreachable and evict its pods.
        """
        with self._lock:
            if self.running("kube-controller-manager"):
                return
            port = self._ports.setdefault("kube-controller-manager", free_port())
            kubeconfig = self.workdir / "kube-controller-manager.kubeconfig"
            self._spawn(
                "kube-controller-manager",
                [
                    f"--kubeconfig={kubeconfig}",
                    f"--authentication-kubeconfig={kubeconfig}",
                    f"--authorization-kubeconfig={kubeconfig}",
                    "--leader-elect=false",
                    f"--bind-address={_LOOPBACK}",
                    f"--secure-port={port}",
                    f"--controllers={controllers}",
                    "--use-service-account-credentials=false",
                    f"--service-account-private-key-file={self.pki / 'sa.key'}",
                    f"--root-ca-file={self.ca_file}",
                ],
            )
            self._wait_ready("kube-controller-manager", f"https://{_LOOPBACK}:{port}/healthz", None)

    def stop(self) -> None:
        """Stop every component (controllers first, etcd last). Safe to call twice."""
        with self._lock:
            for name in ("kube-controller-manager", "kube-scheduler", "kube-apiserver", "etcd"):
                self._stop(name)
            self._procs.clear()
            self._write_pids()
        with _LIVE_LOCK:
            _LIVE.discard(self)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- API helpers ---

    def api_client(self) -> k8s_client.ApiClient:
        """A kubernetes ApiClient authenticated as the admin; close it (or use `with`)."""
        return api_client_for(self.kubeconfig)

    def register_node(
        self,
        name: str,
        labels: Mapping[str, str] | None = None,
        cpu: str = "2",
        memory: str = "24Gi",
    ) -> None:
        """Create a schedulable, Ready v1 Node (what a kubelet would do when it registers)."""
        all_labels = node_labels(name, labels)
        status = node_status(name, cpu, memory)
        node = k8s_client.V1Node(
            metadata=k8s_client.V1ObjectMeta(name=name, labels=all_labels),
        )
        with self.api_client() as api:
            core = k8s_client.CoreV1Api(api)
            core.create_node(node)
            # Through nodes/status, like a kubelet's status updates (Node authorizer/RBAC path).
            core.patch_node_status(name, {"status": status})
            spec = core.read_node(name).spec
            taints = [t for t in (spec.taints if spec else None) or [] if t.key != NOT_READY_TAINT]
            core.patch_node(
                name, {"spec": {"taints": [t.to_dict(serialize=True) for t in taints] or None}}
            )

    def service_account_kubeconfig(
        self,
        namespace: str,
        name: str,
        path: Path,
        bound_pod: str | None = None,
        expiration_seconds: int = 3600,
    ) -> Path:
        """Write a kubeconfig that authenticates as ServiceAccount `namespace/name`.

        The token comes from the TokenRequest API, exactly like a projected token; with
        `bound_pod` it is bound to that Pod (so it carries the pod and node name claims and dies
        with the pod), which is how the agent's RBAC and node scoping are tested for real.
        """
        with self.api_client() as api:
            core = k8s_client.CoreV1Api(api)
            bound = None
            if bound_pod is not None:
                meta = core.read_namespaced_pod(bound_pod, namespace).metadata
                bound = k8s_client.V1BoundObjectReference(
                    api_version="v1", kind="Pod", name=bound_pod, uid=meta.uid if meta else None
                )
            request = k8s_client.AuthenticationV1TokenRequest(
                spec=k8s_client.V1TokenRequestSpec(
                    audiences=[],  # empty: the API server's own audience
                    expiration_seconds=expiration_seconds,
                    bound_object_ref=bound,
                )
            )
            response = core.create_namespaced_service_account_token(name, namespace, request)
        if response.status is None or not response.status.token:
            raise ControlPlaneError(f"TokenRequest for {namespace}/{name} returned no token")
        token = response.status.token
        user = f"system:serviceaccount:{namespace}:{name}"
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._write_kubeconfig(path, user, {"token": token})
        return path

    def client_kubeconfig(self, name: str, subject: str, path: Path) -> Path:
        """A kubeconfig with a client certificate for `subject` (e.g. `/O=system:nodes/CN=
        system:node:n1`), signed by the plane's CA: how kubelets and kube-proxy authenticate."""
        if not (self.pki / f"{name}.crt").exists():
            self._leaf(name, subject, "clientAuth")
        user = subject.rsplit("CN=", 1)[-1]
        credentials = {
            "client-certificate-data": _b64(self.pki / f"{name}.crt"),
            "client-key-data": _b64(self.pki / f"{name}.key"),
        }
        self._write_kubeconfig(Path(path), user, credentials)
        return Path(path)

    # --- internals ---

    def _spawn(self, name: str, args: list[str]) -> None:
        log_path = self.logs / f"{name}.log"
        argv = [str(self.bin_dir / name), *args]
        with log_path.open("ab") as log:
            log.write(f"=== {datetime.now(UTC).isoformat()} {' '.join(argv)}\n".encode())
            log.flush()
            # PDEATHSIG follows the spawning *thread*: only arm it from the main thread, so a
            # restart from a helper thread (threading.Timer) does not die with that thread.
            arm = not self.detached and threading.current_thread() is threading.main_thread()
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                start_new_session=True,
                preexec_fn=_die_with_parent if arm else None,  # noqa: PLW1509
            )
        self._procs[name] = proc
        if not self.detached:
            with _LIVE_LOCK:
                _LIVE.add(self)
        self._write_pids()

    def _stop(self, name: str) -> None:
        proc = self._procs.pop(name, None)
        if proc is not None:
            _terminate_group(proc.pid, self.grace, proc)
            self._write_pids()

    def _write_pids(self) -> None:
        if self.workdir.exists():
            text = "".join(f"{n} {p.pid}\n" for n, p in self._procs.items() if p.poll() is None)
            (self.workdir / "pids").write_text(text)

    def _start_etcd(self) -> None:
        client_url = f"http://{_LOOPBACK}:{self._ports['etcd']}"
        peer_url = f"http://{_LOOPBACK}:{self._ports['etcd-peer']}"
        self._spawn(
            "etcd",
            [
                "--name=memfrag",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={client_url}",
                f"--advertise-client-urls={client_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=memfrag={peer_url}",
                "--unsafe-no-fsync=true",  # throwaway data: no need to pay for fsync
                "--log-level=warn",
            ],
        )
        self._wait_ready("etcd", f"{client_url}/health", None)

    def ssl_context(self) -> ssl.SSLContext:
        """Trusts the plane's CA and presents the admin client cert (for raw HTTPS calls)."""
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        ctx.load_cert_chain(str(self.pki / "admin.crt"), str(self.pki / "admin.key"))
        return ctx

    def _wait_ready(self, name: str, url: str, ctx: ssl.SSLContext | None) -> None:
        """Poll `url` until it answers 200, failing early (with the log) if the process dies."""
        if ctx is None and url.startswith("https"):
            # Scheduler and controller-manager serve /healthz with a self-signed cert.
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        deadline = time.monotonic() + self.timeout
        last = "no answer yet"
        while True:
            proc = self._procs[name]
            if proc.poll() is not None:
                raise ControlPlaneError(
                    f"ControlPlane: {name} exited with code {proc.returncode} while starting; "
                    f"log {self.logs / (name + '.log')} ends with:\n"
                    f"{_log_tail(self.logs / (name + '.log'))}"
                )
            try:
                with urllib.request.urlopen(url, timeout=2, context=ctx) as response:
                    if response.status == 200:
                        return
                    last = f"HTTP {response.status}"
            except urllib.error.HTTPError as err:
                last = f"HTTP {err.code}: {err.read()[-2000:].decode(errors='replace')}"
            except (OSError, ssl.SSLError) as err:
                last = str(err)
            if time.monotonic() > deadline:
                raise ControlPlaneError(
                    f"ControlPlane: {name} not ready at {url} after {self.timeout:.0f} s "
                    f"(last: {last}); log {self.logs / (name + '.log')} ends with:\n"
                    f"{_log_tail(self.logs / (name + '.log'))}"
                )
            time.sleep(0.2)

    def _ensure_pki(self) -> None:
        """CA, serving/client certs and the SA signing key; kept if a previous run made them."""
        pki = self.pki
        done = pki / ".complete"
        if done.exists():
            return
        pki.mkdir(parents=True, exist_ok=True)
        _openssl(
            "req", "-x509", "-new", "-nodes", "-newkey", "rsa:2048", "-sha256", "-days", "3650",
            "-subj", "/CN=memfrag-test-ca",
            "-keyout", str(pki / "ca.key"), "-out", str(pki / "ca.crt"),
        )  # fmt: skip
        server_sans = ",".join(
            [
                "IP:127.0.0.1",
                "DNS:localhost",
                "IP:10.0.0.1",  # the `kubernetes` Service IP in SERVICE_CLUSTER_IP_RANGE
                "DNS:kubernetes",
                "DNS:kubernetes.default",
                "DNS:kubernetes.default.svc",
                "DNS:kubernetes.default.svc.cluster.local",
            ]
        )
        self._leaf("apiserver", "/CN=kube-apiserver", "serverAuth", server_sans)
        self._leaf("admin", "/O=system:masters/CN=memfrag-admin", "clientAuth")
        # What the API server presents to kubelets (logs, exec); bound to the bootstrap
        # system:kubelet-api-admin role by the real-node set-up.
        self._leaf("apiserver-kubelet-client", "/CN=kube-apiserver-kubelet-client", "clientAuth")
        self._leaf("kube-scheduler", "/CN=system:kube-scheduler", "clientAuth")
        # With --use-service-account-credentials=false every controller acts as this identity,
        # and the bootstrap system:kube-controller-manager role cannot even create pods.
        self._leaf(
            "kube-controller-manager",
            "/O=system:masters/CN=system:kube-controller-manager",
            "clientAuth",
        )
        _openssl(
            "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
            "-out", str(pki / "sa.key"),
        )  # fmt: skip
        _openssl("pkey", "-in", str(pki / "sa.key"), "-pubout", "-out", str(pki / "sa.pub"))
        for key in pki.glob("*.key"):
            key.chmod(0o600)
        done.touch()

    def _leaf(self, name: str, subject: str, usage: str, sans: str | None = None) -> None:
        pki = self.pki
        ext = pki / f"{name}.ext"
        lines = [
            "basicConstraints=critical,CA:FALSE",
            "keyUsage=critical,digitalSignature,keyEncipherment",
            f"extendedKeyUsage={usage}",
            "subjectKeyIdentifier=hash",
            "authorityKeyIdentifier=keyid,issuer",
        ]
        if sans:
            lines.append(f"subjectAltName={sans}")
        ext.write_text("\n".join(lines) + "\n")
        _openssl(
            "req", "-new", "-nodes", "-newkey", "rsa:2048", "-subj", subject,
            "-keyout", str(pki / f"{name}.key"), "-out", str(pki / f"{name}.csr"),
        )  # fmt: skip
        _openssl(
            "x509", "-req", "-in", str(pki / f"{name}.csr"), "-sha256", "-days", "3650",
            "-CA", str(pki / "ca.crt"), "-CAkey", str(pki / "ca.key"),
            "-set_serial", f"0x{secrets.token_hex(16)}", "-extfile", str(ext),
            "-out", str(pki / f"{name}.crt"),
        )  # fmt: skip

    def _write_kubeconfigs(self) -> None:
        for name, user in (
            ("admin", "memfrag-admin"),
            ("kube-scheduler", "system:kube-scheduler"),
            ("kube-controller-manager", "system:kube-controller-manager"),
        ):
            self._write_kubeconfig(
                self.workdir / f"{name}.kubeconfig",
                user,
                {
                    "client-certificate-data": _b64(self.pki / f"{name}.crt"),
                    "client-key-data": _b64(self.pki / f"{name}.key"),
                },
            )
        (self.workdir / "env").write_text(
            f"KUBECONFIG={self.kubeconfig}\nKUBE_APISERVER={self.server}\n"
        )

    def _write_kubeconfig(self, path: Path, user: str, credentials: dict[str, str]) -> None:
        """Self-contained (data embedded) so it can be copied anywhere, e.g. into a container."""
        doc = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "memfrag",
                    "cluster": {
                        "server": self.server,
                        "certificate-authority-data": _b64(self.ca_file),
                    },
                }
            ],
            "users": [{"name": user, "user": credentials}],
            "contexts": [{"name": "memfrag", "context": {"cluster": "memfrag", "user": user}}],
            "current-context": "memfrag",
        }
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        path.chmod(0o600)
