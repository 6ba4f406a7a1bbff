"""Test-only OCI runtime: runc, except that it fails pod sandboxes while a switch is on.

The real node's RuntimeClass `memfrag-failing` runs its pods through this. While the switch file
says `on`, creating a sandbox fails the way runc did in the seed incident (`running exec setns
process for init caused "exit status 6"`), so kubelet itself reports FailedCreatePodSandBox and
the pod stays in ContainerCreating; every other call, and every call while the switch is off, is
runc's own.

    failing_runc.py SWITCH_FILE RUNC [runc arguments...]
"""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

SEED_ERROR = (
    'container_linux.go:247: starting container process caused "process_linux.go:245: '
    'running exec setns process for init caused \\"exit status 6\\""'
)


def _option(args: list[str], *names: str) -> str | None:
    for i, arg in enumerate(args[:-1]):
        if arg in names:
            return args[i + 1]
    return None


def should_fail(args: list[str], switch: Path) -> bool:
    """Whether this runc call creates a pod sandbox while the switch is on."""
    bundle = _option(args, "--bundle", "-b")
    if "create" not in args or bundle is None:
        return False
    try:
        on = switch.read_text().strip() == "on"
        spec = json.loads((Path(bundle) / "config.json").read_text()) if on else {}
    except (OSError, ValueError):
        return False
    return (
        on and (spec.get("annotations") or {}).get("io.kubernetes.cri.container-type") == "sandbox"
    )


def main(argv: list[str]) -> int:
    switch, runc, args = Path(argv[1]), argv[2], argv[3:]
    if should_fail(args, switch):
        log = _option(args, "--log")
        if log:  # where the shim reads runc's error from (--log-format json)
            entry = {"level": "error", "msg": SEED_ERROR, "time": datetime.now(UTC).isoformat()}
            with open(log, "a") as f:
                f.write(json.dumps(entry) + "\n")
        print(SEED_ERROR, file=sys.stderr)
        return 1
    os.execv(runc, [runc, *args])
    return 127  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv))
