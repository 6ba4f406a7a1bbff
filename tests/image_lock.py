"""deploy/image-lock.txt, generated: the image's Python packages pinned by version and hash.

    .venv/bin/python -m tests.image_lock > deploy/image-lock.txt

`pip download` fetches each pinned wheel for every platform the image is built for, and the lock
records their sha256 (what `pip hash` prints); HEADER says what is pinned and why.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import parse_wheel_filename

from deploy.image_prune import UNINSTALLED_REQUIREMENTS

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "deploy" / "image-lock.txt"
# The builder stage's tools, pinned with the rest: pip, and setuptools to build the agent's wheel
# (it writes wheels itself since 70.1 and vendors its own requirements: nothing else to pin).
BUILD_TOOLS = {"pip": "26.3", "setuptools": "84.2.1"}
PYTHON_VERSION = "3.11"
ARCHES = ("x86_64", "aarch64")
HEADER = """\
Every Python package of the image, pinned by version and sha256: the Dockerfile installs it with
`pip install --require-hashes --no-deps`. Generated; do not edit, regenerate:
  .venv/bin/python -m tests.image_lock > deploy/image-lock.txt
memfrag-agent's runtime closure in the dev venv, less kubernetes' asyncio half (aiohttp and what
only it requires; deploy/image_prune.py), plus the builder's tools. Hashes: every wheel pip
downloads for each pin on CPython 3.11 for Linux x86_64 and aarch64."""


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def runtime_closure(
    dist: str = "memfrag-agent", cut: tuple[str, ...] = UNINSTALLED_REQUIREMENTS
) -> dict[str, str]:
    """{normalized name: installed version} for `dist`'s runtime dependencies, transitively (no
    extras, markers evaluated for this interpreter), not following requirements named in `cut`."""
    found: dict[str, str] = {}
    todo = [dist]
    while todo:
        name = todo.pop()
        if norm(name) in found or norm(name) in cut:
            continue
        d = importlib.metadata.distribution(name)
        found[norm(name)] = d.version
        for text in d.requires or []:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    found.pop(norm(dist))
    return dict(sorted(found.items()))


def pins() -> dict[str, str]:
    return dict(sorted({**runtime_closure(), **BUILD_TOOLS}.items()))


def platforms(arch: str) -> list[str]:
    """Every manylinux tag a glibc 2.36 (bookworm) system of `arch` accepts, newest first."""
    tags = [f"manylinux_2_{minor}_{arch}" for minor in range(36, 4, -1)]
    return [*tags, f"manylinux2014_{arch}"] + ([f"manylinux1_{arch}"] if arch == "x86_64" else [])


def wheel_hashes(wanted: dict[str, str], work: Path) -> dict[str, set[str]]:
    """{name: sha256 of each wheel pip downloads for it}, over every architecture in ARCHES."""
    hashes: dict[str, set[str]] = {name: set() for name in wanted}
    for arch in ARCHES:
        dest = work / arch
        argv = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                "--only-binary", ":all:", "--python-version", PYTHON_VERSION,
                "--implementation", "cp", "--abi", f"cp{PYTHON_VERSION.replace('.', '')}",
                "--abi", "abi3", "--abi", "none", "--dest", str(dest)]  # fmt: skip
        for tag in platforms(arch):
            argv += ["--platform", tag]
        argv += [f"{name}=={version}" for name, version in wanted.items()]
        subprocess.run(argv, check=True, stdout=sys.stderr)
        for wheel in sorted(dest.glob("*.whl")):
            name, version, *_ = parse_wheel_filename(wheel.name)
            if str(version) != wanted.get(norm(name)):
                raise SystemExit(f"pip downloaded {wheel.name}, not a pinned version")
            hashes[norm(name)].add(hashlib.sha256(wheel.read_bytes()).hexdigest())
    missing = [name for name, found in hashes.items() if not found]
    if missing:
        raise SystemExit(f"no wheel downloaded for {missing}")
    return hashes


def lock_text(wanted: dict[str, str], hashes: dict[str, set[str]]) -> str:
    lines = [f"# {line}" for line in HEADER.splitlines()]
    for name, version in wanted.items():
        lines.append(f"{name}=={version} \\")
        ordered = sorted(hashes[name])
        lines += [f"    --hash=sha256:{h}" + (" \\" if h != ordered[-1] else "") for h in ordered]
    return "\n".join(lines) + "\n"


def parse_lock(text: str) -> dict[str, tuple[str, list[str]]]:
    """{normalized name: (version, [sha256, ...])}; ValueError for a line that is not a pin."""
    out: dict[str, tuple[str, list[str]]] = {}
    logical = ""
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if line.endswith("\\"):
            logical += line[:-1] + " "
            continue
        logical = (logical + line).strip()
        if not logical:
            continue
        spec, *options = logical.split()
        name, sep, version = spec.partition("==")
        if not sep or not version:
            raise ValueError(f"not an exact pin: {logical!r}")
        hashes = []
        for option in options:
            match = re.fullmatch(r"--hash=sha256:([0-9a-f]{64})", option)
            if match is None:
                raise ValueError(f"{name}: not a sha256 hash option: {option!r}")
            hashes.append(match.group(1))
        out[norm(name)] = (version, hashes)
        logical = ""
    if logical:
        raise ValueError(f"the last line continues into nothing: {logical!r}")
    return out


def main() -> int:
    wanted = pins()
    with tempfile.TemporaryDirectory() as work:
        sys.stdout.write(lock_text(wanted, wheel_hashes(wanted, Path(work))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
