"""The images the real node runs, built here without a Docker engine or a registry.

* The agent's, from the repository's Dockerfile with buildah. No registry is reachable, so its
  `PYTHON_IMAGE` is Debian's own Python: a debootstrap root (bookworm, minbase) committed as a
  local image, cached by what it is made from.
* The pause image: the pinned Kubernetes release's `build/pause/linux/pause.c`, compiled static
  as its Makefile does, on `scratch`.

Both are exported as docker-archive files (which carry their name, so `ctr images import` tags
them) and imported into a containerd with `import_image`. buildah's storage, run root, temporary
files and blob-info cache all live under ${XDG_CACHE_HOME:-~/.cache}/memfrag-agent/images.

    python -m tests.cluster.image build [--out out/images]
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
KUBE_MODULE = REPO_ROOT / "tests" / "tools" / "kube"  # its go.mod pins k8s.io/kubernetes
K8S_VERSION = "v1.35.4"
AGENT_REF = "localhost/memfrag-agent:test"
PAUSE_REPO = "localhost/memfrag-pause"
SUITE = "bookworm"
# What the Dockerfile's stages run: `python -m venv` (python3-venv brings ensurepip's wheels),
# `python` itself, and pip's HTTPS to the package index (ca-certificates).
BASE_PACKAGES = ("python3", "python3-venv", "python-is-python3", "ca-certificates")
# Bumped when the way the base is made changes, so its cache key changes with it.
_BASE_RECIPE = "1"
_SOURCE_HASH_LABEL = "io.memfrag-agent.source-hash"
_TAIL_LINES = 30


class ImageBuildError(RuntimeError):
    """A step of building, exporting or importing an image failed; names it and its output."""

    def __init__(self, step: str, detail: str, output: str = "") -> None:
        tail = "\n".join(output.strip().splitlines()[-_TAIL_LINES:])
        super().__init__(f"{step}: {detail}" + (f"\n--- last lines ---\n{tail}" if tail else ""))
        self.step = step


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "memfrag-agent" / "images"


def _run(
    step: str,
    argv: Sequence[str | Path],
    *,
    timeout: float,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    merge: bool = True,
) -> str:
    """Run one step; its stdout (+stderr if `merge`), or an ImageBuildError with their tail."""
    args = [str(a) for a in argv]
    try:
        result = subprocess.run(
            args,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if merge else subprocess.PIPE,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError as exc:
        raise ImageBuildError(step, f"{args[0]} is not installed (`make tools` as root)") from exc
    except subprocess.TimeoutExpired as exc:
        out = exc.output.decode(errors="replace") if isinstance(exc.output, bytes) else ""
        raise ImageBuildError(step, f"no result after {timeout:.0f} s", out) from exc
    output = result.stdout.decode(errors="replace")
    if result.returncode != 0:
        errors = "" if merge else result.stderr.decode(errors="replace")
        raise ImageBuildError(step, f"exit status {result.returncode}", output + errors)
    return output


def _sha256(*parts: str | bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() if isinstance(part, str) else part)
        digest.update(b"\0")
    return digest.hexdigest()


@contextlib.contextmanager
def _locked(cache: Path) -> Iterator[None]:
    """One build at a time per cache (the lead's node fixture and a test may build at once)."""
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / "lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


# --- buildah --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Buildah:
    """buildah with everything it writes under `cache`.

    `--root`/`--runroot` move the storage (overlay on this ext4 root; the kernel's overlayfs,
    no fuse-overlayfs) and its run state; the run root is per boot, as on the usual tmpfs, so a
    reboot never leaves stale mount counts. buildah 1.28 has no flag for its blob-info cache
    (/var/lib/containers/cache as root), so each call runs in a private mount namespace with a
    directory of the cache bound over /var/lib: nothing outside the cache is written.
    """

    cache: Path

    @property
    def storage(self) -> Path:
        return self.cache / "storage"

    def argv(self, *args: str | Path) -> list[str]:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        varlib = self.cache / "var-lib"
        for path in (varlib, self.cache / "tmp", self.cache / "run"):
            path.mkdir(parents=True, exist_ok=True)
        return [
            "unshare", "--mount", "--propagation", "private", "--",
            "sh", "-ec", 'mount --bind "$0" /var/lib; exec "$@"', str(varlib),
            "buildah",
            "--root", str(self.storage),
            "--runroot", str(self.cache / "run" / boot),
            "--storage-driver", "overlay",
            *(str(a) for a in args),
        ]  # fmt: skip

    def env(self) -> dict[str, str]:
        # Big temporary files (layer diffs, archives being written) go to TMPDIR.
        return {**os.environ, "TMPDIR": str(self.cache / "tmp")}

    def __call__(
        self, step: str, *args: str | Path, timeout: float = 600, merge: bool = True
    ) -> str:
        return _run(step, self.argv(*args), timeout=timeout, env=self.env(), merge=merge)

    def inspect(self, ref: str) -> dict[str, Any] | None:
        """`buildah inspect` of a local image, or None when the store has no such image."""
        try:
            # stdout alone: a warning on stderr must not spoil the JSON.
            out = self(f"buildah inspect {ref}", "inspect", "--type", "image", ref, merge=False)
        except ImageBuildError:
            return None
        info: dict[str, Any] = json.loads(out)
        return info

    def image_id(self, ref: str) -> str | None:
        info = self.inspect(ref)
        return None if info is None else str(info["FromImageID"])

    def label(self, ref: str, key: str) -> str | None:
        info = self.inspect(ref)
        labels = {} if info is None else info["OCIv1"].get("config", {}).get("Labels") or {}
        value = labels.get(key)
        return value if isinstance(value, str) else None

    def commit_scratch(
        self, ref: str, contents: Path, dest: str, config: Sequence[str], step: str
    ) -> None:
        """`ref` = scratch + `contents` (a tar, extracted, or a file) at `dest` + `config`."""
        ctr = self(f"{step}: buildah from scratch", "from", "scratch").strip().splitlines()[-1]
        try:
            verb = "add" if contents.name.endswith(".tar") else "copy"
            self(f"{step}: buildah {verb}", verb, ctr, contents, dest)
            self(f"{step}: buildah config", "config", *config, ctr)
            self(f"{step}: buildah commit", "commit", "--rm", ctr, ref)
        except ImageBuildError:
            with contextlib.suppress(ImageBuildError):
                self(f"{step}: buildah rm", "rm", ctr)
            raise

    def export(self, ref: str, archive: Path) -> Path:
        """`ref` as a docker-archive at `archive`; kept as is when it already holds this image."""
        image_id = self.image_id(ref)
        if image_id is None:
            raise ImageBuildError(f"export {ref}", "no such image in the build store")
        if _archive_config(archive) == f"{image_id}.json":
            return archive
        archive.parent.mkdir(parents=True, exist_ok=True)
        partial = archive.with_name(archive.name + ".partial")
        partial.unlink(missing_ok=True)
        self(f"export {ref}", "push", ref, f"docker-archive:{partial}:{ref}")
        partial.replace(archive)
        return archive


def _archive_manifest(archive: Path) -> list[dict[str, object]]:
    with tarfile.open(archive) as tar:
        member = tar.extractfile("manifest.json")
        if member is None:
            raise KeyError("manifest.json")
        manifest: list[dict[str, object]] = json.load(member)
        return manifest


def _archive_config(archive: Path) -> str | None:
    """The config blob name in a docker-archive (`<image id>.json`), None if unreadable."""
    try:
        return str(_archive_manifest(archive)[0]["Config"])
    except (OSError, tarfile.TarError, KeyError, IndexError, ValueError):
        return None


# --- the base: Debian's Python ----------------------------------------------------------------


def mirror_from_sources(texts: Iterable[str], suite: str = SUITE) -> str | None:
    """The Debian archive URI from apt sources (deb822 `.sources` or one-line `sources.list`).

    Prefers an entry for `suite` itself, then any `deb` entry that is not a -security or
    -updates suite (those are other archives); None when there is neither.
    """
    entries: list[tuple[str, list[str]]] = []  # (uri, suites)
    for text in texts:
        if re.search(r"^Types:", text, re.MULTILINE):
            for stanza in re.split(r"\n\s*\n", text):
                fields: dict[str, str] = {}
                for line in stanza.splitlines():
                    key, sep, value = line.partition(":")
                    if sep and not line.startswith(("#", " ", "\t")):
                        fields[key.strip().lower()] = value.strip()
                if "deb" in fields.get("types", "").split() and fields.get("enabled") != "no":
                    suites = fields.get("suites", "").split()
                    entries += [(uri, suites) for uri in fields.get("uris", "").split()]
        else:
            for line in text.splitlines():
                words = re.sub(r"\[[^]]*\]", " ", line.split("#", 1)[0]).split()
                if len(words) >= 3 and words[0] == "deb":
                    entries.append((words[1], [words[2]]))
    for wanted in (
        lambda s: s == suite,
        lambda s: not s.endswith(("-security", "-updates", "-backports")),
    ):
        for uri, suites in entries:
            if uri.startswith(("http://", "https://")) and any(wanted(s) for s in suites):
                return uri.rstrip("/")
    return None


def host_mirror(apt: Path = Path("/etc/apt")) -> str:
    """This machine's Debian mirror, read at run time (never written into the repository)."""
    files = sorted((apt / "sources.list.d").glob("*.sources"))
    files += [*sorted((apt / "sources.list.d").glob("*.list")), apt / "sources.list"]
    texts = [f.read_text() for f in files if f.is_file()]
    mirror = mirror_from_sources(texts)
    if mirror is None:
        names = ", ".join(str(f) for f in files if f.is_file()) or f"nothing under {apt}"
        raise ImageBuildError("base image", f"no Debian {SUITE} mirror in apt sources ({names})")
    return mirror


def base_image(buildah: Buildah, mirror: str | None = None) -> str:
    """A local image of Debian's Python (debootstrap, minbase); built once per set of inputs."""
    mirror = mirror or host_mirror()
    version = _run("debootstrap --version", ["debootstrap", "--version"], timeout=30).strip()
    key = _sha256(SUITE, " ".join(BASE_PACKAGES), mirror, version, _BASE_RECIPE)[:12]
    ref = f"localhost/memfrag-debian-python:{SUITE}-{key}"
    if buildah.image_id(ref) is not None:
        return ref
    work = buildah.cache / "tmp" / f"base-{key}"
    shutil.rmtree(work, ignore_errors=True)
    rootfs = work / "rootfs"
    try:
        _run(
            f"debootstrap {SUITE} from {mirror}",
            ["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
             SUITE, rootfs, mirror],
            timeout=1200,
        )  # fmt: skip
        # What an image never needs: the downloaded .debs and the package lists.
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for path in (rootfs / junk).glob("*"):
                if path.is_file():
                    path.unlink()
        tarball = work / "rootfs.tar"
        _run(
            "base image: tar the root",
            ["tar", "--numeric-owner", "--xattrs", "-C", rootfs, "-cf", tarball, "."],
            timeout=600,
        )
        buildah.commit_scratch(
            ref,
            tarball,
            "/",
            [
                "--env", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "--env", "LANG=C.UTF-8",
                "--cmd", '["python3"]',
                "--label", f"org.opencontainers.image.description=Debian {SUITE} minbase "
                f"with {' '.join(BASE_PACKAGES)} ({version})",
            ],
            "base image",
        )  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return ref


# --- the agent image ------------------------------------------------------------------------


def host_ca_bundle() -> Path:
    """The CA bundle this machine's own TLS trusts (pip in the build needs the same trust)."""
    paths = ssl.get_default_verify_paths()
    for candidate in (paths.cafile, paths.openssl_cafile, "/etc/ssl/certs/ca-certificates.crt"):
        if candidate and Path(candidate).is_file():
            return Path(candidate).resolve()
    raise ImageBuildError("agent image", "no CA bundle on this machine for pip's HTTPS")


def build_agent_image(
    repo: Path = REPO_ROOT,
    out: Path = REPO_ROOT / "out" / "images",
    *,
    revision: str | None = None,
    ref: str = AGENT_REF,
) -> Path:
    """Build `repo`'s Dockerfile as `ref`; the docker-archive it is exported to.

    `revision` defaults to `repo`'s HEAD; the created label is HEAD's commit time (so rebuilds
    of one commit are one image, and its archive is not written again)."""
    buildah = Buildah(cache_dir())
    git = ["git", "-C", str(repo)]
    head = _run("git rev-parse HEAD", [*git, "rev-parse", "HEAD"], timeout=30).strip()
    created = _run("git show", [*git, "show", "-s", "--format=%cI", head], timeout=30).strip()
    revision = revision or head
    with _locked(buildah.cache):
        base = base_image(buildah)
        buildah(
            "agent image: buildah bud",
            "bud",
            # chroot isolation: a RUN step needs no cgroup or runtime, and runc (oci, which also
            # works here) would create cgroups on this cgroup-v1 host beside the node's.
            "--isolation", "chroot",
            # The RUN steps pip-install from the package index, so they use the host's network...
            "--network", "host",
            # ...and its CA bundle, mounted for RUN steps only: it is not in the image.
            "--volume", f"{host_ca_bundle()}:/etc/ssl/certs/ca-certificates.crt:ro",
            "--layers",  # each step is cached in the store; an unchanged agent/ rebuilds nothing
            "--pull=never",
            "--format", "docker",
            "--build-arg", f"PYTHON_IMAGE={base}",
            "--build-arg", f"REVISION={revision}",
            "--build-arg", f"CREATED={created}",
            # buildah 1.28's layer cache keys a LABEL or ENV step by its text, not the ARG values
            # it expands, so a cached build kept an older commit's revision (label and the
            # MEMFRAG_REVISION that memfrag_build_info reports); set them at commit instead.
            *_commit_metadata(revision, created),
            "--tag", ref,
            "--file", repo / "Dockerfile",
            repo,
            timeout=1800,
        )  # fmt: skip
        return buildah.export(ref, out / "memfrag-agent.tar")


def _commit_metadata(revision: str, created: str) -> list[str]:
    """`buildah bud` options that set what varies per build on the committed image itself."""
    return [
        "--label", f"org.opencontainers.image.revision={revision}",
        "--label", f"org.opencontainers.image.created={created}",
        "--env", f"MEMFRAG_REVISION={revision}",
    ]  # fmt: skip


# --- the pause image ------------------------------------------------------------------------


def kubernetes_module_dir() -> Path:
    """The pinned k8s.io/kubernetes module's source directory (the Go module cache)."""
    out = _run(
        f"go mod download k8s.io/kubernetes@{K8S_VERSION}",
        ["go", "mod", "download", "-json", f"k8s.io/kubernetes@{K8S_VERSION}"],
        cwd=KUBE_MODULE,
        timeout=600,
    )
    try:
        return Path(json.loads(out)["Dir"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ImageBuildError("go mod download", "no module directory in its answer", out) from exc


def pause_version(makefile: str) -> str:
    """The pause image's version: the `TAG ?=` of the release's build/pause/Makefile."""
    match = re.search(r"^TAG\s*\?=\s*(\S+)\s*$", makefile, re.MULTILINE)
    if match is None:
        raise ImageBuildError("pause image", "no `TAG ?=` in build/pause/Makefile")
    return match.group(1)


def build_pause_image(out: Path = REPO_ROOT / "out" / "images") -> tuple[Path, str]:
    """Compile the release's pause.c and package it on scratch; (its archive, its reference)."""
    buildah = Buildah(cache_dir())
    pause = kubernetes_module_dir() / "build" / "pause"
    tag = pause_version((pause / "Makefile").read_text())
    ref = f"{PAUSE_REPO}:{tag}"
    source = (pause / "linux" / "pause.c").read_bytes()
    # As its Makefile: CFLAGS = -Os -Wall -Werror -static -DVERSION=v$(TAG)-$(REV), where REV
    # is `git describe` of the release, i.e. its tag; then strip.
    cflags = ["-Os", "-Wall", "-Werror", "-static", f"-DVERSION=v{tag}-{K8S_VERSION}"]
    gcc = _run("gcc --version", ["gcc", "--version"], timeout=30).splitlines()[0]
    key = _sha256(source, " ".join(cflags), gcc)[:16]
    with _locked(buildah.cache):
        if buildah.label(ref, _SOURCE_HASH_LABEL) != key:
            work = buildah.cache / "tmp" / f"pause-{key}"
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True)
            try:
                binary = work / "pause"
                source_path = pause / "linux" / "pause.c"
                _run("pause image: gcc", ["gcc", *cflags, "-o", binary, source_path], timeout=300)
                _run("pause image: strip", ["strip", binary], timeout=60)
                buildah.commit_scratch(
                    ref,
                    binary,
                    "/pause",
                    ["--user", "65535:65535", "--entrypoint", '["/pause"]',
                     "--label", f"{_SOURCE_HASH_LABEL}={key}",
                     "--label", f"org.opencontainers.image.version={tag}"],
                    "pause image",
                )  # fmt: skip
            finally:
                shutil.rmtree(work, ignore_errors=True)
        archive = buildah.export(ref, out / f"memfrag-pause-{tag}.tar")
    return archive, ref


# --- containerd -----------------------------------------------------------------------------


def archive_refs(archive: Path) -> list[str]:
    """The names a docker-archive carries (its manifest's RepoTags)."""
    try:
        manifest = _archive_manifest(archive)
    except (OSError, tarfile.TarError, KeyError, ValueError) as exc:
        raise ImageBuildError(f"import {archive}", f"not a docker-archive: {exc}") from exc
    tags = [
        str(tag)
        for entry in manifest
        if isinstance(entry.get("RepoTags"), list)
        for tag in entry["RepoTags"]  # type: ignore[attr-defined]
    ]
    if not tags:
        raise ImageBuildError(f"import {archive}", "the archive names no image (no RepoTags)")
    return tags


def import_image(archive: Path, address: Path, namespace: str = "k8s.io") -> str:
    """Import `archive` into the containerd at `address` (unpacked, for the CRI); its reference."""
    (ref,) = archive_refs(archive)[:1]
    ctr = ["ctr", "--address", str(address), "--namespace", namespace]
    _run(f"ctr images import {archive}", [*ctr, "images", "import", archive], timeout=600)
    listed = _run("ctr images ls", [*ctr, "images", "ls", "--quiet"], timeout=60).split()
    if ref not in listed:
        raise ImageBuildError(f"import {archive}", f"containerd lists no {ref} after the import")
    return ref


# --- CLI ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.cluster.image", description=__doc__)
    parser.add_argument("command", choices=["build"])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "out" / "images")
    args = parser.parse_args(argv)
    out: Path = args.out.resolve()
    try:
        started = time.monotonic()
        agent = build_agent_image(REPO_ROOT, out)
        print(f"{AGENT_REF}  {agent}  ({time.monotonic() - started:.0f} s)")
        started = time.monotonic()
        pause, ref = build_pause_image(out)
        print(f"{ref}  {pause}  ({time.monotonic() - started:.0f} s)")
    except ImageBuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
