"""Carries out one remediation step on the kernel, and nothing else: the writes operators do by
hand today, with a time bound and a plain 'not permitted' when /proc/sys is read-only."""

from __future__ import annotations

import errno
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from agent.kernel.actions import ActionKind, KernelAction, target


@dataclass(frozen=True)
class ActionResult:
    ok: bool
    seconds: float
    error: str | None = None
    timed_out: bool = False


def _write(path: Path, value: str) -> None:
    # O_WRONLY without O_CREAT/O_TRUNC: these are kernel files; never create one by mistake.
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def run_step(step: KernelAction, proc_root: Path, sys_root: Path, timeout: float) -> ActionResult:
    """Run synchronously in a worker thread (the kernel cannot be interrupted mid-compaction);
    if it outlasts `timeout`, report that and let it finish in the background."""
    path, value = target(step, proc_root, sys_root)
    outcome: list[BaseException | None] = []
    start = time.monotonic()

    def work() -> None:
        try:
            if step.action == ActionKind.DROP_CACHES:
                os.sync()  # dirty pages are not dropped: write them back first
            _write(path, value)
            outcome.append(None)
        except OSError as exc:
            outcome.append(exc)

    worker = threading.Thread(target=work, name=f"remediate-{step.name}", daemon=True)
    worker.start()
    worker.join(timeout)
    seconds = time.monotonic() - start
    if not outcome:
        return ActionResult(
            False, seconds, f"{path}: still running after {timeout:g}s", timed_out=True
        )
    exc = outcome[0]
    if exc is None:
        return ActionResult(True, seconds)
    assert isinstance(exc, OSError)
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return ActionResult(
            False,
            seconds,
            f"not permitted: cannot write {path} ({exc.strerror}); the agent needs a privileged "
            "container (writable /proc/sys) to remediate; detection goes on",
        )
    if exc.errno == errno.ENOENT:
        return ActionResult(False, seconds, f"{path} does not exist on this kernel")
    return ActionResult(False, seconds, f"{path}: {exc.strerror or exc}")


def write_tunable(proc_root: Path, name: str, value: int) -> str | None:
    """Write /proc/sys/vm/<name>; the error in words, or None."""
    path = proc_root / "sys" / "vm" / name
    try:
        _write(path, f"{value}\n")  # as `echo` writes it
    except OSError as exc:
        return f"not written: {path}: {exc.strerror or exc}"
    return None


def read_tunable(proc_root: Path, name: str) -> int | None:
    """/proc/sys/vm/<name> as an integer; None when absent or not one number."""
    try:
        words = (proc_root / "sys" / "vm" / name).read_text()[:64].split()
    except OSError:
        return None
    return int(words[0]) if words and words[0].isdigit() else None


def set_tunable(proc_root: Path, name: str, value: int) -> str | None:
    """Write /proc/sys/vm/<name> and read it back: a kernel that clamps or ignores the value
    (the write succeeds, the knob does not move) is an error too. The error in words, or None."""
    err = write_tunable(proc_root, name, value)
    if err is not None:
        return err
    back = read_tunable(proc_root, name)
    if back != value:
        return f"{proc_root / 'sys' / 'vm' / name}: wrote {value}, reads back {back}"
    return None
