"""A real Kubernetes node beside the local control plane: kubelet, containerd, CNI, kube-proxy.

What users run is `helm install` onto nodes with a kubelet; this module makes this machine such a
node for the tests and the demo. kubelet and kube-proxy are built at the plane's pinned release
(`make tools`); containerd, runc and the CNI plugins are Debian's packages (tests/tools/host.sh).
Everything the node writes lives in its work directory where the components allow it; what they
write elsewhere (iptables chains, cgroups, a few fixed paths) is recorded in `node-state.json`
before it is created, and `teardown()` removes exactly that, even from another process (`python -m
tests.cluster down`) or after a crash.

The pod network is a bridge private to this machine: no masquerading, forwarding off the bridge
rejected, so pod traffic goes only to the node itself and to other pods. Pods reach the API server
(which listens on loopback) through a DNAT from the `kubernetes` Service address, with
`route_localnet` on the bridge alone; kube-proxy routes the other Services to their pods.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.cluster.plane import (
    DEFAULT_BIN_DIR,
    ControlPlane,
    ControlPlaneError,
    free_port,
    pid_alive,
)

NODE_NAME = "memfrag-node"
BRIDGE = "mfnode0"
POD_CIDR = "10.217.0.0/24"
NODE_IP = "10.217.0.1"
SERVICE_IP = "10.0.0.1"  # the `kubernetes` Service (first address of the plane's range)
CNI_BIN_DIR = Path("/usr/lib/cni")  # Debian's containernetworking-plugins
RUNC = Path("/usr/sbin/runc")
DEFAULT_PAUSE_IMAGE = "localhost/memfrag-pause:3.10.1"  # the release's, by tests.cluster.image
FAILING_HANDLER = "memfrag-failing"  # a RuntimeClass handler whose sandboxes fail on demand
IPTABLES_COMMENT = "memfrag-agent test node"
IPTABLES_TABLES = [(b, t) for b in ("iptables", "ip6tables") for t in ("mangle", "nat", "filter")]
NODE_BINARIES = ("kubelet", "kube-proxy")
HOST_BINARIES = ("containerd", "containerd-shim-runc-v2", "ctr", "runc", "iptables", "ip")
# Paths kubelet or containerd write whatever their configuration says: removed at teardown
# when this node created them (present before: left as they were, our entries removed).
FIXED_PATHS = (
    "/var/lib/kubelet",
    "/var/log/containers",
    "/var/log/pods",
    "/var/lib/cni",
    "/run/containerd",
    "/etc/cni",
    "/opt/cni",
)
_CGROUP_MOUNTS = Path("/sys/fs/cgroup")


class NodeUnavailable(ControlPlaneError):
    """This host cannot run the real node (not root, no cgroups, a missing package)."""


def node_unavailable_reason(bin_dir: Path = DEFAULT_BIN_DIR) -> str | None:
    """Why this host cannot run a real node, or None: the exact reason a test skips with."""
    if os.geteuid() != 0:
        return "the real node needs root (kubelet, containerd, iptables, cgroups)"
    if (
        not (_CGROUP_MOUNTS / "memory").is_dir()
        and not (_CGROUP_MOUNTS / "cgroup.controllers").exists()
    ):
        return f"no memory cgroup under {_CGROUP_MOUNTS}"
    missing = [b for b in HOST_BINARIES if shutil.which(b) is None]
    missing += [b for b in NODE_BINARIES if not os.access(bin_dir / b, os.X_OK)]
    if missing:
        return f"missing {', '.join(missing)}: run `make tools` as root"
    return None


@dataclass
class NodeState:
    """What the node changed outside its work directory, written down before each change."""

    workdir: str
    bridge: str = BRIDGE
    iptables: list[list[str]] = field(default_factory=list)  # [table, chain, *rule]
    sysctls: dict[str, str] = field(default_factory=dict)  # path -> value before
    created: list[str] = field(default_factory=list)  # fixed paths that did not exist
    cgroup_root: str = "memfrag-node"
    pids: dict[str, int] = field(default_factory=dict)
    chains_before: list[str] = field(default_factory=list)  # "binary table chain" KUBE-* chains

    @classmethod
    def load(cls, workdir: Path) -> NodeState | None:
        path = workdir / "node-state.json"
        try:
            data: dict[str, Any] = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return cls(**data)

    def save(self) -> None:
        path = Path(self.workdir) / "node-state.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=1))
        os.replace(tmp, path)


def _run(argv: list[str], what: str, check: bool = True, timeout: float = 60) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ControlPlaneError(f"real node: {what}: {' '.join(argv)}: {exc}") from exc
    if check and out.returncode != 0:
        raise ControlPlaneError(
            f"real node: {what} failed ({' '.join(argv)}): {(out.stderr or out.stdout)[-2000:]}"
        )
    return out.stdout


def _spawn(name: str, argv: list[str], logs: Path) -> subprocess.Popen[bytes]:
    with (logs / f"{name}.log").open("ab") as log:
        return subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip


def _wait(pred: Any, what: str, timeout: float, logs: Path | None = None, log: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            tail = ""
            if logs is not None and log:
                with contextlib.suppress(OSError):
                    tail = "\n" + "\n".join((logs / log).read_text().splitlines()[-30:])
            raise ControlPlaneError(f"real node: timed out after {timeout:.0f} s: {what}{tail}")
        time.sleep(0.25)


FAILING_RUNC = """#!/bin/sh
# Test-only runtime of RuntimeClass {handler}: see tests/cluster/failing_runc.py.
exec {python} {script} {switch} {runc} "$@"
"""


class RealNode:
    """kubelet + containerd + kube-proxy registered as Node `name` with `plane`.

    `start()` returns once the Node is Ready and schedulable; `stop()` (or `teardown(workdir)`
    from another process) removes every process, mount, cgroup, iptables rule, bridge and path
    it created.
    """

    def __init__(
        self,
        plane: ControlPlane,
        workdir: Path,
        *,
        images: tuple[Path, ...] = (),
        pause_image: str = DEFAULT_PAUSE_IMAGE,
        name: str = NODE_NAME,
        bin_dir: Path = DEFAULT_BIN_DIR,
        timeout: float = 120.0,
    ) -> None:
        if not plane.for_real_node:
            raise ControlPlaneError("RealNode needs a ControlPlane(for_real_node=True)")
        reason = node_unavailable_reason(bin_dir)
        if reason:
            raise NodeUnavailable(reason)
        self.plane = plane
        self.workdir = Path(workdir).resolve()
        self.images = images
        self.pause_image = pause_image
        self.name = name
        self.bin_dir = Path(bin_dir).resolve()
        self.timeout = timeout
        self.logs = self.workdir / "logs"
        self.sock = self.workdir / "containerd" / "containerd.sock"
        self.switch = self.workdir / "failing-sandboxes"
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self.image_refs: list[str] = []
        self.state = NodeState(workdir=str(self.workdir))

    # --- public ---

    def start(self) -> RealNode:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(exist_ok=True)
        old = NodeState.load(self.workdir)
        if old is not None:
            teardown(self.workdir)  # a previous run crashed: clean up after it first
        try:
            self._record_fixed_paths()
            self._network()
            self._containerd()
            self._import_images()
            self._cluster_objects()
            self._kubelet()
            self._kube_proxy()
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for proc in self._procs.values():
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGTERM)
        teardown(self.workdir)
        self._procs.clear()

    def __enter__(self) -> RealNode:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def fail_sandboxes(self, on: bool) -> None:
        """Turn sandbox failures of RuntimeClass `memfrag-failing` on or off (kubelet retries a
        failed sandbox about every 10 s, so a pod runs soon after the switch goes off)."""
        self.switch.write_text("on\n" if on else "off\n")

    def running(self, component: str) -> bool:
        proc = self._procs.get(component)
        return proc is not None and proc.poll() is None

    def ctr(self, *args: str) -> str:
        """`ctr` against this node's containerd, namespace k8s.io."""
        return _run(["ctr", "-a", str(self.sock), "-n", "k8s.io", *args], "ctr " + args[0])

    # --- set-up steps ---

    def _record_fixed_paths(self) -> None:
        self.state.created = [p for p in FIXED_PATHS if not os.path.lexists(p)]
        self.state.chains_before = sorted(_kube_chains())
        self.state.save()

    def _sysctl(self, path: str, value: str) -> None:
        p = Path("/proc/sys") / path
        self.state.sysctls.setdefault(path, p.read_text().strip())
        self.state.save()
        p.write_text(value)

    def _iptables(self, table: str, chain: str, *rule: str) -> None:
        entry = [table, chain, *rule, "-m", "comment", "--comment", IPTABLES_COMMENT]
        self.state.iptables.append(entry)
        self.state.save()
        _run(["iptables", "-w", "-t", table, "-I", chain, "1", *entry[2:]], f"iptables {chain}")

    def _network(self) -> None:
        self.state.bridge = BRIDGE
        self.state.save()
        _run(["ip", "link", "add", BRIDGE, "type", "bridge"], "bridge")
        _run(["ip", "addr", "add", f"{NODE_IP}/24", "dev", BRIDGE], "bridge address")
        _run(["ip", "link", "set", BRIDGE, "up"], "bridge up")
        port = self.plane.server.rsplit(":", 1)[1]
        # Pods -> the `kubernetes` Service -> the loopback API server. route_localnet lets the
        # kernel route a DNAT to 127.0.0.1 that came in on this bridge (and only this bridge).
        self._sysctl(f"net/ipv4/conf/{BRIDGE}/route_localnet", "1")
        for chain, iface in (("PREROUTING", ["-i", BRIDGE]), ("OUTPUT", [])):
            self._iptables(
                "nat", chain, *iface, "-d", f"{SERVICE_IP}/32", "-p", "tcp", "--dport", "443",
                "-j", "DNAT", "--to-destination", f"127.0.0.1:{port}",
            )  # fmt: skip
        # Nothing leaves the machine from the pod network, nothing enters it from outside:
        # forwarding is needed between pods through Service addresses (kube-proxy), no further.
        self._iptables("filter", "FORWARD", "-i", BRIDGE, "!", "-o", BRIDGE, "-j", "REJECT")
        self._iptables("filter", "FORWARD", "!", "-i", BRIDGE, "-o", BRIDGE, "-j", "REJECT")
        self._sysctl("net/ipv4/ip_forward", "1")
        self._sysctl("net/bridge/bridge-nf-call-iptables", "1")  # kube-proxy sees bridged pods
        cni = self.workdir / "cni"
        (cni / "net.d").mkdir(parents=True, exist_ok=True)
        conf = {
            "cniVersion": "1.0.0",
            "name": "memfrag-node",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": BRIDGE,
                    "isGateway": True,
                    "ipMasq": False,  # no masquerading: pods have no way off this machine
                    "hairpinMode": True,  # a pod reaches itself through its Service
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": POD_CIDR, "rangeStart": "10.217.0.10"}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": str(cni / "ipam"),
                    },
                }
            ],
        }
        (cni / "net.d" / "10-memfrag-node.conflist").write_text(json.dumps(conf, indent=1))

    def _containerd(self) -> None:
        root = self.workdir / "containerd"
        root.mkdir(exist_ok=True)
        wrapper = self.workdir / "bin" / "runc-failing"
        wrapper.parent.mkdir(exist_ok=True)
        wrapper.write_text(
            FAILING_RUNC.format(
                handler=FAILING_HANDLER,
                python=sys.executable,
                script=Path(__file__).with_name("failing_runc.py"),
                switch=self.switch,
                runc=RUNC,
            )
        )
        wrapper.chmod(0o755)
        self.fail_sandboxes(False)
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        runtimes = f"{cri}.containerd.runtimes"
        runc_root = self.workdir / "runc"
        config = f"""version = 2
root = "{root / "root"}"
state = "{root / "state"}"
[grpc]
  address = "{self.sock}"
[ttrpc]
  address = "{self.sock}.ttrpc"
[debug]
  level = "info"
[plugins."io.containerd.internal.v1.opt"]
  path = "{root / "opt"}"
[{cri}]
  sandbox_image = "{self.pause_image}"
  # No CAP_SYS_RESOURCE in this VM: runc cannot lower oom_score_adj below the shim's, and
  # without this every sandbox fails with "can't get final child's PID from pipe: EOF".
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
[{cri}.cni]
  bin_dir = "{CNI_BIN_DIR}"
  conf_dir = "{self.workdir / "cni" / "net.d"}"
[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"
[{runtimes}.runc]
  runtime_type = "io.containerd.runc.v2"
[{runtimes}.runc.options]
  SystemdCgroup = false
  Root = "{runc_root}"
[{runtimes}.{FAILING_HANDLER}]
  runtime_type = "io.containerd.runc.v2"
[{runtimes}.{FAILING_HANDLER}.options]
  SystemdCgroup = false
  Root = "{runc_root}"
  BinaryName = "{wrapper}"
"""
        self._containerd_config = root / "config.toml"
        self._containerd_config.write_text(config)
        self._start("containerd", ["containerd", "--config", str(self._containerd_config)])
        _wait(
            lambda: self.sock.exists() and _ok(["ctr", "-a", str(self.sock), "version"]),
            "containerd answering on its socket",
            self.timeout,
            self.logs,
            "containerd.log",
        )

    def _import_images(self) -> None:
        from tests.cluster.image import import_image

        for archive in self.images:
            self.image_refs.append(import_image(archive, self.sock))

    def _cluster_objects(self) -> None:
        """The RBAC a kubeadm cluster has for its kubelets, and the failing RuntimeClass."""
        objects = [
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": "memfrag-test:apiserver-kubelet-client"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": "system:kubelet-api-admin",
                },
                "subjects": [
                    {
                        "apiGroup": "rbac.authorization.k8s.io",
                        "kind": "User",
                        "name": "kube-apiserver-kubelet-client",
                    }
                ],
            },
            {
                "apiVersion": "node.k8s.io/v1",
                "kind": "RuntimeClass",
                "metadata": {"name": FAILING_HANDLER},
                "handler": FAILING_HANDLER,
            },
        ]
        path = self.workdir / "cluster-objects.yaml"
        path.write_text(yaml.safe_dump_all(objects))
        _run(
            [str(self.bin_dir / "kubectl"), "--kubeconfig", str(self.plane.kubeconfig),
             "apply", "--server-side", "-f", str(path)],
            "cluster objects",
        )  # fmt: skip

    def _kubelet(self) -> None:
        root = self.workdir / "kubelet"
        root.mkdir(exist_ok=True)
        kubeconfig = self.plane.client_kubeconfig(
            f"node-{self.name}",
            f"/O=system:nodes/CN=system:node:{self.name}",
            self.workdir / "kubelet.kubeconfig",
        )
        self.state.cgroup_root = "memfrag-node"
        self.state.save()
        _make_cgroup_root(self.state.cgroup_root)
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            # This VM is cgroup v1 (with a v2 hierarchy beside it): 1.35 refuses v1 by default.
            "failCgroupV1": False,
            "cgroupDriver": "cgroupfs",  # no systemd here
            "cgroupRoot": f"/{self.state.cgroup_root}",  # our pods' cgroups, in one subtree
            "failSwapOn": False,
            "containerRuntimeEndpoint": f"unix://{self.sock}",
            "address": NODE_IP,
            "port": free_port(),
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": free_port(),
            "podLogsDir": str(self.workdir / "pod-logs"),
            "staticPodPath": "",
            "resolvConf": "",  # no cluster DNS, and no off-machine resolver for pods
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(self.plane.ca_file)},
            },
            "authorization": {"mode": "Webhook"},
            "registerNode": True,
            # The test images are imported, never pulled: keep them whatever the disk says.
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%",
                             "imagefs.available": "1%"},
            "syncFrequency": "10s",
            "fileCheckFrequency": "10s",
            "nodeStatusReportFrequency": "30s",
            "serializeImagePulls": False,
            "maxPods": 30,
        }  # fmt: skip
        path = self.workdir / "kubelet.yaml"
        path.write_text(yaml.safe_dump(config))
        self._start(
            "kubelet",
            [
                str(self.bin_dir / "kubelet"),
                f"--config={path}",
                f"--kubeconfig={kubeconfig}",
                f"--root-dir={root}",
                f"--cert-dir={root / 'pki'}",
                f"--hostname-override={self.name}",
                f"--node-ip={NODE_IP}",  # the bridge: the only address pods and the API use
                "--v=2",
            ],
        )

    def _kube_proxy(self) -> None:
        kubeconfig = self.plane.client_kubeconfig(
            "kube-proxy", "/CN=system:kube-proxy", self.workdir / "kube-proxy.kubeconfig"
        )
        config = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(kubeconfig)},
            "hostnameOverride": self.name,
            "mode": "iptables",
            "clusterCIDR": POD_CIDR,
            "bindAddress": NODE_IP,
            "healthzBindAddress": f"127.0.0.1:{free_port()}",
            "metricsBindAddress": f"127.0.0.1:{free_port()}",
            # Leave the host's sysctls alone: no conntrack table resizing or timeouts, and no
            # route_localnet on every interface for NodePorts on 127.0.0.1.
            "conntrack": {"maxPerCore": 0, "tcpEstablishedTimeout": "0s",
                          "tcpCloseWaitTimeout": "0s"},
            "iptables": {"localhostNodePorts": False},
            "nodePortAddresses": [f"{NODE_IP}/32"],
        }  # fmt: skip
        path = self.workdir / "kube-proxy.yaml"
        path.write_text(yaml.safe_dump(config))
        self._start("kube-proxy", [str(self.bin_dir / "kube-proxy"), f"--config={path}", "--v=1"])

    def _wait_ready(self) -> None:
        def ready() -> bool:
            for proc in ("containerd", "kubelet", "kube-proxy"):
                if not self.running(proc):
                    raise ControlPlaneError(
                        f"real node: {proc} exited while starting; see {self.logs}/{proc}.log:\n"
                        + "\n".join((self.logs / f"{proc}.log").read_text().splitlines()[-30:])
                    )
            out = subprocess.run(
                [str(self.bin_dir / "kubectl"), "--kubeconfig", str(self.plane.kubeconfig),
                 "get", "node", self.name, "-o", "json"],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            if out.returncode != 0:
                return False
            node = json.loads(out.stdout)
            conds = {c["type"]: c["status"] for c in node["status"].get("conditions", [])}
            taints = [t["key"] for t in node["spec"].get("taints", [])]
            return conds.get("Ready") == "True" and not any(
                k.startswith("node.kubernetes.io/") for k in taints
            )

        _wait(
            ready, f"Node {self.name} Ready and untainted", self.timeout, self.logs, "kubelet.log"
        )

    def _start(self, name: str, argv: list[str]) -> None:
        proc = _spawn(name, argv, self.logs)
        self._procs[name] = proc
        self.state.pids[name] = proc.pid
        self.state.save()


def _ok(argv: list[str]) -> bool:
    return subprocess.run(argv, capture_output=True, check=False).returncode == 0


# --- teardown ------------------------------------------------------------------------------


def host_footprint(under: Path) -> dict[str, Any]:
    """What a node working under `under` could leave behind on this host, to compare before and
    after a run: its processes and mounts, and everything host-wide it touches."""
    rules = {f"{b} {t}": sorted(_iptables_rules(b, t)) for b, t in IPTABLES_TABLES}
    procs = []
    for pid_dir in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):
            cmdline = (
                (pid_dir / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            )
            if str(under) in cmdline:
                procs.append(cmdline)
    sysctls = {}
    for path in ("net/ipv4/ip_forward", "net/bridge/bridge-nf-call-iptables"):
        with contextlib.suppress(OSError):
            sysctls[path] = (Path("/proc/sys") / path).read_text().strip()
    return {
        "iptables": rules,
        "processes": sorted(procs),
        "mounts": _mounts_under(under),
        "links": sorted(p.name for p in Path("/sys/class/net").iterdir()),
        "cgroups": sorted(str(d) for d in _cgroup_dirs("memfrag-node")),
        "paths": {p: os.path.lexists(p) for p in FIXED_PATHS},
        "sysctls": sysctls,
        "routes": _run(["ip", "route"], "ip route", check=False).splitlines(),
    }


def _mounts_under(root: Path) -> list[str]:
    out = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            target = line.split()[4].replace("\\040", " ")
            if target == str(root) or target.startswith(f"{root}/"):
                out.append(target)
    return sorted(out, key=len, reverse=True)


def _cgroup_dirs(name: str) -> list[Path]:
    """Every hierarchy's `<mount>/<name>` (v1 controllers and the v2 tree beside them)."""
    return [m / name for m in _cgroup_mounts() if (m / name).is_dir()]


def _cgroup_mounts() -> list[Path]:
    mounts = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            fields = line.split()
            if fields[fields.index("-") + 1] in ("cgroup", "cgroup2"):
                mounts.append(Path(fields[4]))
    return mounts


def _make_cgroup_root(name: str) -> None:
    """kubelet's cgroupRoot must exist in every hierarchy before it starts (it makes the rest)."""
    for mount in _cgroup_mounts():
        d = mount / name
        d.mkdir(exist_ok=True)
        for knob in ("cpuset.cpus", "cpuset.mems"):  # v1 cpuset: empty until copied from above
            if (d / knob).exists() and not (d / knob).read_text().strip():
                (d / knob).write_text((mount / knob).read_text())


def _walk_bottom_up(root: Path) -> Iterator[Path]:
    for dirpath, _dirs, _files in os.walk(root, topdown=False):
        yield Path(dirpath)


def _kill_cgroup_tree(dirs: list[Path]) -> None:
    for _ in range(50):
        pids: set[int] = set()
        for d in dirs:
            for sub in _walk_bottom_up(d):
                with contextlib.suppress(OSError, ValueError):
                    pids.update(int(p) for p in (sub / "cgroup.procs").read_text().split())
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)


def teardown(workdir: Path) -> list[str]:
    """Remove everything the node in `workdir` created; returns what it did (for `down`)."""
    workdir = Path(workdir).resolve()
    state = NodeState.load(workdir)
    if state is None:
        return []
    done: list[str] = []
    # 1. Processes: kubelet first (it would restart pods), then pods, shims, containerd.
    for name in ("kubelet", "kube-proxy", "containerd"):
        pid = state.pids.get(name, 0)
        if pid and pid_alive(pid):
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGTERM)
            deadline = time.monotonic() + 15
            while pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGKILL)
            done.append(f"stopped {name}")
    _kill_cgroup_tree(_cgroup_dirs(state.cgroup_root))
    sock = str(workdir / "containerd" / "containerd.sock")
    for pid_dir in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):
            cmd = (pid_dir / "cmdline").read_bytes().split(b"\0")
            if cmd and cmd[0].endswith(b"containerd-shim-runc-v2") and sock.encode() in cmd:
                os.kill(int(pid_dir.name), signal.SIGKILL)
                done.append(f"killed shim {pid_dir.name}")
    time.sleep(0.2)
    # 2. Mounts (rootfs overlays, netns, volumes) under the work directory, deepest first.
    for target in _mounts_under(workdir):
        subprocess.run(["umount", "-l", target], capture_output=True, check=False)
    # 3. Cgroups, bottom up, in every hierarchy.
    for d in _cgroup_dirs(state.cgroup_root):
        for sub in _walk_bottom_up(d):
            with contextlib.suppress(OSError):
                sub.rmdir()
        done.append(f"removed cgroup {d}")
    # 4. Network: kube-proxy's chains, our rules, the bridge, the sysctls as they were.
    proxy = Path(str(DEFAULT_BIN_DIR / "kube-proxy"))
    if "kube-proxy" in state.pids and os.access(proxy, os.X_OK):
        subprocess.run([str(proxy), "--cleanup"], capture_output=True, check=False, timeout=60)
    for entry in reversed(state.iptables):
        table, chain, *rule = entry
        while _ok(["iptables", "-w", "-t", table, "-C", chain, *rule]):
            _run(["iptables", "-w", "-t", table, "-D", chain, *rule], "iptables -D", check=False)
    _remove_new_kube_chains(set(state.chains_before))
    if Path(f"/sys/class/net/{state.bridge}").exists():
        _run(["ip", "link", "del", state.bridge], "bridge del", check=False)
        done.append(f"removed bridge {state.bridge}")
    for path, value in state.sysctls.items():
        with contextlib.suppress(OSError):
            (Path("/proc/sys") / path).write_text(value)
    # 5. Paths outside the work directory that kubelet and containerd write regardless.
    for path in state.created:
        if os.path.lexists(path):
            shutil.rmtree(path, ignore_errors=True)
            done.append(f"removed {path}")
    for link in (
        Path("/var/log/containers").glob("*.log") if Path("/var/log/containers").is_dir() else ()
    ):
        with contextlib.suppress(OSError):
            if str(workdir) in os.readlink(link):
                link.unlink()
    (workdir / "node-state.json").unlink(missing_ok=True)
    return done


def _iptables_rules(binary: str, table: str) -> list[str]:
    """`iptables -S` of one table: its chains (`-N`) and rules (`-A`), one a line."""
    return subprocess.run(
        [binary, "-w", "-t", table, "-S"], capture_output=True, text=True, check=False
    ).stdout.splitlines()


def _kube_chains() -> set[str]:
    """The KUBE-* chains in every table, as "binary table chain"."""
    return {
        f"{binary} {table} {line.split()[1]}"
        for binary, table in IPTABLES_TABLES
        for line in _iptables_rules(binary, table)
        if line.startswith("-N KUBE-")
    }


def _remove_new_kube_chains(before: set[str]) -> None:
    """kubelet's own chains (KUBE-FIREWALL, KUBE-IPTABLES-HINT, KUBE-KUBELET-CANARY, ...) and
    whatever kube-proxy --cleanup left: the KUBE-* chains that were not there before this node
    started, with the rules that jump to them (a chain still referenced cannot be deleted)."""
    new = _kube_chains() - before
    for binary, table in {tuple(e.split()[:2]) for e in new}:
        chains = {e.split()[2] for e in new if e.startswith(f"{binary} {table} ")}
        for line in _iptables_rules(binary, table):
            words = line.split()
            if words[:1] == ["-A"] and "-j" in words and words[words.index("-j") + 1] in chains:
                subprocess.run([binary, "-w", "-t", table, "-D", *words[1:]],
                               capture_output=True, check=False)  # fmt: skip
        for op in ("-F", "-X"):
            for chain in sorted(chains):
                subprocess.run([binary, "-w", "-t", table, op, chain],
                               capture_output=True, check=False)  # fmt: skip
