"""`memfrag-agent run --standalone` on this machine's real kernel (root): no API server; the
daemon observes the real /proc, assesses, remediates on its policy with a real write, follows
/dev/kmsg, serves /metrics and /healthz and says what it did in JSON log lines."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.kernel.vmstat import parse_vmstat
from tests.chart_tools import AGENT_BIN as AGENT
from tests.cluster.plane import free_port
from tests.cluster.scrape import scrape
from tests.cluster.waiting import wait_for


def _lines(log: Path) -> list[dict[str, Any]]:
    out = []
    for line in log.read_text(errors="replace").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def _compactions() -> int:
    vm = parse_vmstat(Path("/proc/vmstat").read_text())
    return vm.get("compact_migrate_scanned", 0) + vm.get("compact_free_scanned", 0)


@pytest.fixture
def standalone(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path, int]]:
    port = free_port()
    config = {
        # Any real host is "fragmented" against this many blocks: the remediation must run.
        "assessment": {"fragmented_below_blocks": 10**9, "at_risk_below_blocks": 10**9},
        "sources": {"poll_interval_seconds": 1, "accept_user_facility": True},
        "reporting": {"metrics_port": port, "metrics_address": "127.0.0.1"},
        # compaction only: dropping the page cache of a shared machine is the other tests' call
        "remediation": {"mode": "on", "allow_drop_caches": False, "cooldown_seconds": 3600},
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    log = tmp_path / "agent.log"
    env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "NODE_NAME")}
    proc = subprocess.Popen(
        [str(AGENT), "run", "--standalone", "--config", str(tmp_path / "config.yaml")],
        env=env,
        stdout=open(log, "ab"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
    )
    try:
        yield proc, log, port
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def test_standalone_assesses_remediates_and_reports_without_an_api_server(
    standalone: tuple[subprocess.Popen[bytes], Path, int],
) -> None:
    proc, log, port = standalone
    before = _compactions()

    def healthz() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    wait_for(healthz, "the standalone agent's /healthz", 30)
    ran = wait_for(
        lambda: [
            x
            for x in _lines(log)
            if x.get("msg", "").startswith("remediation ") and x.get("result")
        ],
        "a remediation log line",
        60,
    )
    assert ran[0]["action"] == "compact" and ran[0]["result"] in ("ok", "no_effect")
    assert _compactions() > before  # the kernel really compacted
    m = scrape(f"http://127.0.0.1:{port}/metrics")
    assert m['memfrag_verdict{verdict="fragmented"}'] == 1
    assert sum(v for k, v in m.items() if k.startswith("memfrag_remediation_actions_total")) == 1
    started = next(x for x in _lines(log) if x.get("msg") == "started")
    assert started["standalone"] is True
    events = [x["event"]["reason"] for x in _lines(log) if "event" in x]
    assert "RemediationSucceeded" in events or "RemediationNoEffect" in events

    marker = f"memfrag-standalone-{os.getpid()}"
    with open("/dev/kmsg", "w") as k:
        k.write(f"<4>{marker}: page allocation failure: order:5, mode:0x40dc0\n")
    wait_for(
        lambda: [x for x in _lines(log) if x.get("msg") == "kernel log finding"],
        "the kernel-log finding",
        30,
    )
    wait_for(
        lambda: (
            "HighOrderAllocationFailed"
            in [x["event"]["reason"] for x in _lines(log) if "event" in x]
        ),
        "the finding's event line",
        30,
    )
    assert proc.poll() is None  # no API server, and still running
    assert not [x for x in _lines(log) if x.get("level") == "error"]
