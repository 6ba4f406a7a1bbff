"""What the image leaves out of its Python dependencies, and the check that nothing else is.

The `kubernetes` client ships a second, asyncio copy of itself (`kubernetes.aio`, on aiohttp)
beside the synchronous one, and generated API classes and models for every API group; the agent
sends raw JSON through `ApiClient.call_api` and imports none of them (tests/unit/image and the
image's own import check show it). The builder stage runs this with the venv's Python:

    python image_prune.py /opt/memfrag-agent

It deletes the files below (each rule must still match something: a kubernetes release that
moved them is looked at again, not pruned blindly), lets `pip check` report only the
requirements deliberately not installed, and imports every agent module in the pruned venv.
Standard library only: it runs before pip is uninstalled, in a venv with nothing else.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

# kubernetes requires these for kubernetes.aio alone; the lock (deploy/image-lock.txt) leaves
# them and everything only they require (aiohttp's own closure) out.
UNINSTALLED_REQUIREMENTS = ("aiohttp", "aiohttp-retry")

# Files under site-packages the agent never imports: (regex on the posix path, why).
LEFT_OUT = (
    (r"kubernetes/aio/.*", "the asyncio client (needs aiohttp, which is not installed)"),
    (r"kubernetes/client/api/.*", "generated API classes: the agent calls ApiClient.call_api"),
    (
        r"kubernetes/client/models/(?!__init__\.py$)[^/]+",
        "generated models (their package's __init__ stays: api_client imports it; its "
        "names are loaded lazily, on first use, which the agent never makes)",
    ),
    (r"kubernetes/(?:.+/)?(?:[^/]+_test|test_[^/]+)\.py", "the client's own unit tests"),
)
_RULES = [(re.compile(pattern), why) for pattern, why in LEFT_OUT]
_PIP_MISSING = re.compile(r"^(\S+) \S+ requires (\S+), which is not installed\.$")


class PruneError(RuntimeError):
    """The venv is not what the rules expect; the message names what and where."""


def left_out(relpath: str) -> bool:
    """Whether a path relative to site-packages is one the image leaves out."""
    return any(rule.fullmatch(relpath) for rule, _ in _RULES)


def site_packages(venv: Path) -> Path:
    found = sorted(venv.glob("lib/python3*/site-packages"))
    if len(found) != 1:
        raise PruneError(f"{venv}: expected one lib/python3*/site-packages, found {found}")
    return found[0]


def prune(site: Path) -> dict[str, int]:
    """Delete the left-out files; {rule: bytes removed}. A rule that matches nothing fails."""
    removed = {pattern: 0 for pattern, _ in LEFT_OUT}
    for path in sorted(site.rglob("*")):
        if not path.is_file() or path.is_symlink():
            continue
        rel = path.relative_to(site).as_posix()
        for (pattern, _), (rule, _) in zip(LEFT_OUT, _RULES, strict=True):
            if rule.fullmatch(rel):
                removed[pattern] += path.stat().st_size
                path.unlink()
                break
    for path in sorted(site.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if path.is_dir() and not any(path.iterdir()):
            path.rmdir()
    stale = [pattern for pattern, size in removed.items() if size == 0]
    if stale:
        raise PruneError(f"{site}: nothing matches {stale}; has the kubernetes layout changed?")
    return removed


def unexpected_pip_check(output: str) -> list[str]:
    """The lines of `pip check` that are not a deliberately uninstalled requirement."""
    bad = []
    for line in output.splitlines():
        match = _PIP_MISSING.match(line.strip())
        if not line.strip() or line.strip() == "No broken requirements found.":
            continue
        if match is None or match.group(2).lower() not in UNINSTALLED_REQUIREMENTS:
            bad.append(line.strip())
    return bad


# Run with the venv's Python: imports every agent module and sends one request through the
# client (to a closed port: it fails as unreachable), so lazy imports on the request path run
# too; prints the loaded modules' files as JSON (tests/unit/image compares them to LEFT_OUT).
PROBE = """
import importlib, json, pkgutil, sys, tempfile
import agent
for m in pkgutil.walk_packages(agent.__path__, "agent."):
    if not m.name.endswith("__main__"):
        importlib.import_module(m.name)
from agent.kube.client import ApiError, Kube
with tempfile.NamedTemporaryFile("w", suffix=".yaml") as cfg:
    cfg.write(
        "apiVersion: v1\\nkind: Config\\ncurrent-context: c\\n"
        "clusters: [{name: c, cluster: {server: 'https://127.0.0.1:9'}}]\\n"
        "users: [{name: u, user: {token: t}}]\\n"
        "contexts: [{name: c, context: {cluster: c, user: u}}]\\n"
    )
    cfg.flush()
    kube = Kube.from_environment(cfg.name)
try:
    kube.request("GET", "/api/v1/nodes", timeout=2)
    raise SystemExit("a request to a closed port answered")
except ApiError as exc:
    assert exc.status == 0, exc
files = {n: getattr(m, "__file__", None) for n, m in list(sys.modules.items())}
print(json.dumps({n: f for n, f in files.items() if f}))
"""


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python image_prune.py VENV", file=sys.stderr)
        return 2
    venv = Path(argv[0])
    python = venv / "bin" / "python"
    try:
        site = site_packages(venv)
        for pattern, size in prune(site).items():
            print(f"left out {size / 1e6:6.1f} MB: {pattern}")
        check = subprocess.run(
            [python, "-m", "pip", "check"], capture_output=True, text=True, check=False
        )
        bad = unexpected_pip_check(check.stdout + check.stderr)
        if bad:
            raise PruneError("pip check: " + "; ".join(bad))
        probe = subprocess.run([python, "-c", PROBE], capture_output=True, text=True, check=False)
        if probe.returncode != 0:
            raise PruneError(f"the agent in the pruned venv failed:\n{probe.stderr[-2000:]}")
        loaded = json.loads(probe.stdout.splitlines()[-1])
        print(f"the agent and its request path ran in the pruned venv ({len(loaded)} modules)")
    except (PruneError, OSError) as exc:
        print(f"image_prune: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
