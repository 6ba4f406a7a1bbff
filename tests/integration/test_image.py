"""The images the real node runs (tests/cluster/image.py), built here and looked into.

The agent's image is built from the Dockerfile with buildah on Debian's Python; what matters in
it: the CLI and the daemon run without what deploy/image_prune.py leaves out, its labels and
MEMFRAG_REVISION are the commit's even on a cached build, and no import compiles in memory
(issue 11: stale .pyc after the multi-stage COPY made the uninstall hook peak near its memory
limit). The pause image is the release's own
pause.c; both import into a containerd under the names the node uses.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import struct
import subprocess
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agent import __version__
from agent.kube.client import Kube
from deploy.image_prune import PROBE, left_out
from tests.cluster import ControlPlane
from tests.cluster.image import (
    AGENT_REF,
    PAUSE_REPO,
    REPO_ROOT,
    Buildah,
    ImageBuildError,
    archive_refs,
    build_agent_image,
    build_pause_image,
    cache_dir,
    import_image,
    mirror_from_sources,
    pause_version,
)
from tests.cluster.plane import free_port
from tests.cluster.rbac import NAMESPACE
from tests.cluster.waiting import wait_for
from tests.integration.harness import condition

# A cold build (debootstrap, pip from the index) takes minutes on a shared 2-core machine.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]
VENV = "/opt/memfrag-agent"
IMPORTS = "import agent.cli.main, kubernetes.client"
TOOLS = ("buildah", "debootstrap", "gcc", "go", "containerd", "ctr")


def _needs_root() -> None:
    """Building needs root (debootstrap, overlay mounts); as another user say so and skip."""
    if os.geteuid() != 0:
        pytest.skip("building images needs root: debootstrap and buildah's overlay storage")
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    assert not missing, f"not installed: {', '.join(missing)} (run `make tools` as root)"


@pytest.fixture(scope="module")
def agent_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _needs_root()
    return build_agent_image(REPO_ROOT, tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="module")
def pause_image(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    _needs_root()
    return build_pause_image(tmp_path_factory.mktemp("images"))


Run = Callable[..., str]


@contextlib.contextmanager
def working_container(ref: str) -> Iterator[Run]:
    """A buildah working container of `ref`; run(*argv, user=...) runs a command in it."""
    buildah = Buildah(cache_dir())
    ctr = buildah("buildah from", "from", "--pull=never", ref).strip().splitlines()[-1]

    def run(*argv: str, user: str | None = None, mounts: tuple[str, ...] = ()) -> str:
        opts = ["--user", user] if user else []
        for mount in mounts:  # host:container:ro; with the host's network, as a node's agent
            opts += ["--volume", mount, "--network", "host"]
        return buildah(
            f"buildah run {argv[0]}", "run", "--isolation", "chroot", *opts, ctr, "--", *argv
        )

    try:
        yield run
    finally:
        buildah("buildah rm", "rm", ctr)


# Runs in the image, with its Python: every source under the venv has a .pyc that is valid for
# it by content (hash-based, the hash of the source as it is now), whatever its mtime.
PYC_CHECK = """
import importlib.util, pathlib, sys
sources = sorted(pathlib.Path(sys.argv[1]).rglob("*.py"))
bad = []
for src in sources:
    pyc = pathlib.Path(importlib.util.cache_from_source(str(src)))
    head = pyc.read_bytes()[:16] if pyc.exists() else b""
    flags = int.from_bytes(head[4:8], "little")
    if head[:4] != importlib.util.MAGIC_NUMBER:
        bad.append(f"{src}: no .pyc for this Python")
    elif not flags & 1:
        bad.append(f"{src}: its .pyc is validated by mtime (flags {flags})")
    elif head[8:16] != importlib.util.source_hash(src.read_bytes()):
        bad.append(f"{src}: its .pyc is for another source")
print(len(sources), len(bad))
print(*bad[:5], sep="\\n")
"""
# Moves every source's mtime one second on, as the builder of the incident did.
SHIFT_MTIMES = """
import os, pathlib, sys
for src in pathlib.Path(sys.argv[1]).rglob("*.py"):
    st = src.stat()
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
"""
PEAK_RSS = f"{IMPORTS}, resource; print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"


def recompiled(run: Run) -> list[str]:
    """The venv's modules that `IMPORTS` compiled from source (python -v names each)."""
    out = run("python", "-v", "-c", IMPORTS)
    return re.findall(rf"^# code object from ({VENV}/\S+\.py)$", out, re.MULTILINE)


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", "-C", REPO_ROOT, *args], capture_output=True, text=True, check=True
    ).stdout.strip()


# --- the agent image --------------------------------------------------------------------------


def test_agent_image_is_the_dockerfile_on_debian_python(agent_archive: Path) -> None:
    assert archive_refs(agent_archive) == [AGENT_REF]
    info = Buildah(cache_dir()).inspect(AGENT_REF)
    assert info is not None
    config = info["OCIv1"]["config"]
    assert config["User"] == "65532:65532" and config["Entrypoint"] == ["memfrag-agent"]
    labels = config["Labels"]
    head = _git("rev-parse", "HEAD")
    assert labels["org.opencontainers.image.revision"] == head
    assert labels["org.opencontainers.image.created"] == _git("show", "-s", "--format=%cI")
    assert labels["org.opencontainers.image.source"].startswith("https://github.com/")
    assert f"MEMFRAG_REVISION={head}" in config["Env"]
    assert labels["org.opencontainers.image.base.name"].startswith(
        "localhost/memfrag-debian-python:bookworm-"
    )
    with working_container(AGENT_REF) as run:
        assert run("memfrag-agent", "--version").strip() == f"memfrag-agent {__version__}"
        assert run("id", "-u").strip() == "65532"


def test_agent_image_bytecode_is_valid_whatever_the_mtimes(agent_archive: Path) -> None:
    """Fails on the Dockerfile before issue 11: its .pyc were validated by mtime alone."""
    with working_container(AGENT_REF) as run:
        (counts, *examples) = run("python", "-c", PYC_CHECK, VENV).splitlines()
        counted, bad = counts.split()
        assert int(counted) > 400, "every source of the venv (pruned, kubernetes keeps 44)"
        assert int(bad) == 0, "\n".join(examples)
        valid_rss = run("python", "-c", PEAK_RSS).strip()
        assert recompiled(run) == []
        run("python", "-c", SHIFT_MTIMES, VENV, user="0:0")
        shifted_rss = run("python", "-c", PEAK_RSS).strip()
        assert recompiled(run) == []
    # A measurement for the report (make bench owns targets), not an assertion.
    print(f"peak RSS of `{IMPORTS}`: {valid_rss} KiB; sources one second on: {shifted_rss} KiB")


# Runs in the image: what deploy/image_prune.py left out cannot be imported.
GONE = """
import importlib
gone = ("kubernetes.aio", "aiohttp", "kubernetes.client.api", "kubernetes.client.models.v1_pod")
for name in gone:
    try:
        importlib.import_module(name)
        print("present", name)
    except ImportError:
        pass
import kubernetes.client
try:
    kubernetes.client.CoreV1Api
    print("present CoreV1Api")
except ImportError:
    pass
"""
METRICS = "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1]).read().decode())"


def test_agent_runs_without_what_the_image_leaves_out(agent_archive: Path) -> None:
    """Every agent module, a client request, `check` and a standalone daemon, in the image."""
    site = f"{VENV}/lib/python3.11/site-packages/"
    port = free_port()
    config = (
        "sources: {poll_interval_seconds: 1}\n"
        f"reporting: {{metrics_port: {port}, metrics_address: 127.0.0.1}}\n"
    )
    daemon = (
        f"printf '{config}' > /tmp/config.yaml; "
        "memfrag-agent run --standalone --config /tmp/config.yaml --log-format json & pid=$!; "
        f"sleep 5; python -c '{METRICS}' http://127.0.0.1:{port}/metrics; "
        'kill -TERM "$pid"; wait "$pid"; echo "exit status $?"'
    )
    with working_container(AGENT_REF) as run:
        assert run("python", "-c", GONE).strip() == ""
        files = json.loads(run("python", "-c", PROBE).splitlines()[-1])
        loaded = [f.removeprefix(site) for f in files.values() if f.startswith(site)]
        assert "kubernetes/client/rest.py" in loaded  # the narrowed client (agent.kube.client)
        assert [f for f in loaded if left_out(f)] == []
        report = json.loads(run("memfrag-agent", "check", "--output", "json"))
        assert report["zones"], "check read this machine's zones"
        out = run("sh", "-c", daemon)
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert any(line.get("msg") == "started" for line in lines), out
    assert any(line.get("msg", "").startswith("assessment ") for line in lines), out
    revision = _git("rev-parse", "HEAD")
    assert f'memfrag_build_info{{revision="{revision}",version="{__version__}"}} 1.0' in out
    assert out.strip().endswith("exit status 0"), out


def test_agent_in_the_image_reports_to_a_real_api_server(
    agent_archive: Path, control_plane: ControlPlane, agent_kubeconfig: Path
) -> None:
    """The daemon of the image, with the chart's RBAC, sets its condition on a real Node: the
    client's whole request path (responses, watches, patches) without what is left out."""
    node = "image-node"
    control_plane.register_node(node)
    admin = Kube.from_environment(str(control_plane.kubeconfig))
    config = (
        "sources: {poll_interval_seconds: 1}\n"
        f"reporting: {{metrics_port: {free_port()}, metrics_address: 127.0.0.1}}\n"
    )
    kubeconfig = f"{agent_kubeconfig}:/k/agent.kubeconfig:ro"
    script = (
        f"printf '{config}' > /tmp/config.yaml; "
        "memfrag-agent run --config /tmp/config.yaml --log-format json "
        f"--kubeconfig /k/agent.kubeconfig --node-name {node} --namespace {NAMESPACE} & "
        'pid=$!; sleep 10; kill -TERM "$pid"; wait "$pid"; echo "exit status $?"'
    )
    with working_container(AGENT_REF) as run:
        out = run("sh", "-c", script, user="0:0", mounts=(kubeconfig,))
    assert not re.search(r"Traceback|ImportError|ModuleNotFoundError|AttributeError", out), out
    c = condition(admin, node)
    assert c is not None, out
    assert c["reason"] in {"ContiguousMemoryAvailable", "FreeMemoryFragmented"}, out
    assert out.strip().endswith("exit status 0"), out


def test_a_cached_build_carries_its_own_revision(agent_archive: Path, tmp_path: Path) -> None:
    """Fails on the Dockerfile's ENV/LABEL alone: buildah's layer cache kept the first build's
    revision in the second (a cached step is matched by its text, not the ARG it expands)."""
    buildah = Buildah(cache_dir())
    ref = "localhost/memfrag-agent:revision-test"
    try:
        for revision in ("1" * 40, "2" * 40):
            build_agent_image(REPO_ROOT, tmp_path / revision[:1], revision=revision, ref=ref)
            info = buildah.inspect(ref)
            assert info is not None
            config = info["OCIv1"]["config"]
            assert config["Labels"]["org.opencontainers.image.revision"] == revision
            assert f"MEMFRAG_REVISION={revision}" in config["Env"]
    finally:
        buildah("buildah rmi", "rmi", ref)


# --- the pause image --------------------------------------------------------------------------


def _elf_interpreter(binary: bytes) -> bool:
    """Whether an ELF64 little-endian binary asks for a dynamic loader (a PT_INTERP header)."""
    assert binary[:4] == b"\x7fELF" and binary[4] == 2, "an ELF64 binary"
    phoff, phentsize, phnum = (
        struct.unpack_from("<Q", binary, 0x20)[0],
        *struct.unpack_from("<HH", binary, 0x36),
    )
    types = [struct.unpack_from("<I", binary, phoff + i * phentsize)[0] for i in range(phnum)]
    return 3 in types  # PT_INTERP


def test_pause_image_is_the_release_pause_static(
    pause_image: tuple[Path, str], tmp_path: Path
) -> None:
    archive, ref = pause_image
    assert ref == f"{PAUSE_REPO}:3.10.1"
    assert archive_refs(archive) == [ref]
    info = Buildah(cache_dir()).inspect(ref)
    assert info is not None
    config = info["OCIv1"]["config"]
    assert config["User"] == "65535:65535" and config["Entrypoint"] == ["/pause"]
    with tarfile.open(archive) as outer:
        (entry,) = json.load(outer.extractfile("manifest.json"))  # type: ignore[arg-type]
        (layer_name,) = entry["Layers"]
        layer = outer.extractfile(layer_name)
        assert layer is not None
        with tarfile.open(fileobj=layer) as inner:
            assert [m.lstrip("./") for m in inner.getnames() if m.strip("./")] == ["pause"]
            member = inner.extractfile(next(m for m in inner.getmembers() if m.isfile()))
            assert member is not None
            binary = member.read()
    assert not _elf_interpreter(binary), "pause must be static: it runs on scratch"
    pause = tmp_path / "pause"
    pause.write_bytes(binary)
    pause.chmod(0o755)
    version = subprocess.run([pause, "-v"], capture_output=True, text=True, check=True).stdout
    assert version == "pause.c v3.10.1-v1.35.4\n", "-DVERSION as the release's Makefile sets it"


def test_pause_version_is_the_makefile_tag() -> None:
    assert pause_version("REGISTRY ?= x\nTAG ?= 3.10.1\nREV = $(shell git)\n") == "3.10.1"
    with pytest.raises(ImageBuildError, match="no `TAG"):
        pause_version("TAG = 3.10.1\n")


# --- apt sources: where the base comes from ---------------------------------------------------

DEB822 = """Types: deb
# a comment
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main

Types: deb
URIs: http://mirror.example/debian/
Suites: bookworm bookworm-updates
Components: main
"""


def test_mirror_from_apt_sources() -> None:
    assert mirror_from_sources([DEB822]) == "http://mirror.example/debian"
    one_line = (
        "# deb http://old.example/debian bookworm main\n"
        "deb [arch=amd64] https://m.example/d bookworm main\n"
    )
    assert mirror_from_sources([one_line]) == "https://m.example/d"
    # Another release's mirror is the same archive: used when no entry names bookworm.
    assert mirror_from_sources(["deb http://m.example/debian trixie main\n"]) == (
        "http://m.example/debian"
    )
    assert mirror_from_sources(["deb-src http://m.example/debian bookworm main\n"]) is None
    assert mirror_from_sources([DEB822.split("\n\n", maxsplit=1)[0]]) is None  # security only


# --- containerd -------------------------------------------------------------------------------


@pytest.fixture
def containerd(tmp_path: Path) -> Iterator[Path]:
    """A containerd of this test's own (root, state, socket under tmp_path), images only."""
    sock = tmp_path / "containerd.sock"
    config = tmp_path / "config.toml"
    # No CRI (the node's containerd has it) and no /opt/containerd (the `opt` plugin's path).
    config.write_text(
        "version = 2\n"
        f'root = "{tmp_path / "root"}"\nstate = "{tmp_path / "state"}"\n'
        'disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.internal.v1.opt"]\n'
        f'[grpc]\n  address = "{sock}"\n'
    )
    with (tmp_path / "containerd.log").open("wb") as log:
        proc = subprocess.Popen(
            ["containerd", "--config", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for(
            lambda: (
                subprocess.run(
                    ["ctr", "--address", str(sock), "version"], capture_output=True, check=False
                ).returncode
                == 0
            ),
            "containerd to answer on its socket",
        )
        yield sock
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        shutil.rmtree(tmp_path / "root", ignore_errors=True)  # the unpacked layers


def test_import_into_containerd(
    agent_archive: Path, pause_image: tuple[Path, str], containerd: Path
) -> None:
    pause_archive, pause_ref = pause_image
    assert import_image(agent_archive, containerd) == AGENT_REF
    assert import_image(pause_archive, containerd) == pause_ref
    listed = subprocess.run(
        ["ctr", "--address", str(containerd), "--namespace", "k8s.io", "images", "ls", "-q"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert set(listed) == {AGENT_REF, pause_ref}
    with pytest.raises(ImageBuildError, match="not a docker-archive"):
        import_image(containerd.parent / "config.toml", containerd)


def test_import_failure_names_the_step(agent_archive: Path, tmp_path: Path) -> None:
    with pytest.raises(ImageBuildError, match=r"ctr images import .*exit status") as caught:
        import_image(agent_archive, tmp_path / "no-containerd.sock")
    assert "last lines" in str(caught.value)
