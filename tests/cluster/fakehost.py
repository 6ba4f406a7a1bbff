"""Stand-ins for the machine the agent watches: a /proc tree whose buddyinfo a test swaps
between real captures (`FakeHost`), and FIFOs in place of the vm sysctls that record what the
agent writes (`FakeKernel`)."""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import time
from pathlib import Path

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "proc"


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
