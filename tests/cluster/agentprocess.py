"""Runs the real `memfrag-agent run` as a subprocess against a control plane, over a /proc tree
the caller controls (`FakeHost`) and a FIFO standing in for /dev/kmsg."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from tests.chart_tools import AGENT_BIN
from tests.cluster.fakehost import FakeHost
from tests.cluster.plane import free_port
from tests.cluster.scrape import scrape
from tests.cluster.waiting import wait_for


def kmsg_line(text: str, seq: int = 1, facility: int = 0, level: int = 4) -> bytes:
    """One /dev/kmsg record (`prio,seq,usec,flags;text`) as the kernel hands it to a reader."""
    return f"{facility * 8 + level},{seq},{int(time.monotonic() * 1e6)},-;{text}\n".encode()


SEED_LINE = "mysqld: page allocation failure. order:4, mode:0x10c0d0"


class AgentProcess:
    """One agent process with its own config file, metrics port, kmsg FIFO and log file."""

    def __init__(
        self,
        workdir: Path,
        node: str,
        kubeconfig: Path,
        host: FakeHost,
        config: dict[str, Any] | None = None,
    ) -> None:
        self.workdir, self.node, self.kubeconfig, self.host = workdir, node, kubeconfig, host
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.kmsg = workdir / "kmsg"
        self.config_path = workdir / "config.yaml"
        self.config: dict[str, Any] = {
            "sources": {
                "poll_interval_seconds": 1,
                "pagetypeinfo_interval_seconds": 60,
                "kmsg_path": str(self.kmsg),
            },
            "reporting": {
                "fragmented_for_seconds": 2,
                "healthy_for_seconds": 2,
                "heartbeat_seconds": 30,
                "metrics_port": self.port,
                "metrics_address": "127.0.0.1",
                # Tests share one API server and many nodes; the cap has its own test.
                "max_tainted_percent": 100,
            },
        }
        for section, values in (config or {}).items():
            self.config.setdefault(section, {}).update(values)
        self.fifo = self.config["sources"]["kmsg_path"] == str(self.kmsg)
        if self.fifo and not self.kmsg.exists():
            os.mkfifo(self.kmsg)
        self.write_config()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "agent.log"
        self._kmsg_fd: int | None = None

    def write_config(self, text: str | None = None) -> None:
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(text if text is not None else yaml.safe_dump(self.config))
        os.replace(tmp, self.config_path)

    def start(self) -> AgentProcess:
        env = dict(os.environ, NODE_NAME=self.node, KUBECONFIG=str(self.kubeconfig))
        env.pop("KUBERNETES_SERVICE_HOST", None)
        self.proc = subprocess.Popen(
            [
                str(AGENT_BIN),
                "run",
                "--config",
                str(self.config_path),
                "--proc-root",
                str(self.host.root),
                "--log-format",
                "json",
            ],
            env=env,
            stdout=open(self.log_path, "ab"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
        )
        # Hold the FIFO open for writing so the agent's reader never sees EOF between writes.
        if self.fifo:
            self._kmsg_fd = os.open(self.kmsg, os.O_RDWR)
        # Start-up is imports and a first tick: seconds when idle, but a CI machine running the
        # whole suite beside other work has been seen to need more than 30 s. An agent that
        # died fails at once with its log instead of waiting out the timeout.
        wait_for(self._started, "the agent's /healthz", timeout=90)
        return self

    def _started(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            rc, tail = self.proc.returncode, self.log()[-4000:]
            raise AssertionError(f"the agent exited ({rc}) before /healthz:\n{tail}")
        return self.healthz()

    def reopen_kmsg_writer(self) -> None:
        """Close the FIFO's only writer (the agent reads EOF), then open a new one."""
        assert self._kmsg_fd is not None
        os.close(self._kmsg_fd)
        time.sleep(0.5)
        self._kmsg_fd = os.open(self.kmsg, os.O_WRONLY)

    def write_kmsg(self, line: bytes) -> None:
        assert self._kmsg_fd is not None
        os.write(self._kmsg_fd, line)

    def healthz(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def metrics(self) -> dict[str, float]:
        return scrape(f"http://127.0.0.1:{self.port}/metrics")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self._kmsg_fd is not None:
            os.close(self._kmsg_fd)
            self._kmsg_fd = None
        if self.proc is None:
            return 0
        self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait(5)
        self.proc = None
        return rc
