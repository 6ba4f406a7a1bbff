"""deploy/image-lock.txt: every pin exact and hashed, and together what memfrag-agent needs."""

from __future__ import annotations

import importlib.metadata
import tomllib

import pytest
from packaging.requirements import Requirement

from deploy.image_prune import UNINSTALLED_REQUIREMENTS
from tests.image_lock import (
    ARCHES,
    BUILD_TOOLS,
    HEADER,
    LOCK,
    REPO,
    lock_text,
    norm,
    parse_lock,
    platforms,
    runtime_closure,
)

PINS = parse_lock(LOCK.read_text())


def test_every_pin_is_exact_and_hashed() -> None:
    assert len(PINS) > 15
    for name, (version, hashes) in PINS.items():
        assert version and hashes, f"{name}: no hash"
    # A compiled wheel differs per architecture: one hash per platform the image is built for.
    assert len(PINS["pydantic-core"][1]) >= len(ARCHES)
    assert LOCK.read_text().startswith("".join(f"# {line}\n" for line in HEADER.splitlines()))
    assert "python -m tests.image_lock > deploy/image-lock.txt" in HEADER


def test_pins_satisfy_pyproject() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    for text in [*pyproject["project"]["dependencies"], *pyproject["build-system"]["requires"]]:
        req = Requirement(text)
        version = PINS[norm(req.name)][0]
        assert req.specifier.contains(version, prereleases=True), f"{req.name}=={version}: {req}"
    for tool, version in BUILD_TOOLS.items():
        assert PINS[tool][0] == version


def test_pins_are_the_closure_less_what_is_left_out() -> None:
    kept = runtime_closure()
    full = runtime_closure(cut=())
    assert set(PINS) == set(kept) | set(BUILD_TOOLS), "regenerate: see the lock's header"
    left_out = set(full) - set(kept)
    assert {"aiohttp", "aiohttp-retry", "yarl", "multidict"} <= left_out
    assert not left_out & set(PINS)
    assert "kubernetes" in kept and "pydantic" in kept, "cut only at the aio requirements"


def test_pins_satisfy_each_other() -> None:
    """Each pinned distribution's requirements (as this venv's copy of the same version states
    them) are pinned at a version they accept, bar the deliberately uninstalled ones."""
    checked = 0
    for name, (version, _) in PINS.items():
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        if dist.version != version:
            continue
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                continue
            if norm(req.name) in UNINSTALLED_REQUIREMENTS:
                continue
            assert norm(req.name) in PINS, f"{name} requires {req}: not pinned"
            pinned = PINS[norm(req.name)][0]
            assert req.specifier.contains(pinned, prereleases=True), f"{name}: {req} ≠ {pinned}"
            checked += 1
    assert checked > 10


def test_lock_text_round_trips() -> None:
    text = lock_text({"a-b": "1.0", "c": "2"}, {"a-b": {"1" * 64, "2" * 64}, "c": {"3" * 64}})
    assert parse_lock(text) == {"a-b": ("1.0", ["1" * 64, "2" * 64]), "c": ("2", ["3" * 64])}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("requests>=2\n", "not an exact pin"),
        ("requests==2.0 --hash=md5:abc\n", "not a sha256 hash option"),
        ("requests==2.0 \\\n", "continues into nothing"),
    ],
)
def test_parse_lock_rejects_what_is_not_a_hashed_pin(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_lock(text)


def test_platforms_cover_old_and_new_manylinux() -> None:
    tags = platforms("aarch64")
    assert "manylinux_2_17_aarch64" in tags and "manylinux2014_aarch64" in tags
    assert "manylinux_2_36_aarch64" in tags and not any("x86_64" in t for t in tags)
    assert "manylinux1_x86_64" in platforms("x86_64")
