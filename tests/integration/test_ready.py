"""`memfrag-agent ready` and the hugepage readiness numbers against this machine's real kernel
(root in a VM): the gate answers yes and no where it should, --prepare really compacts, and
the 2 MiB pool really grows by what the readiness report says it can."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.assess.hugepages import readiness
from agent.kernel.buddyinfo import parse_buddyinfo
from agent.kernel.hugepages import pool_path, read_hugepages
from agent.kernel.vmstat import parse_vmstat
from agent.kernel.zoneinfo import parse_zoneinfo
from tests.chart_tools import AGENT_BIN

pytestmark = pytest.mark.integration

POOL = pool_path("/sys", 2048)


def ready(*argv: str) -> tuple[int, dict[str, object]]:
    r = subprocess.run(
        [str(AGENT_BIN), "ready", "-o", "json", *argv],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.stderr == ""
    return r.returncode, json.loads(r.stdout)


def free_pages() -> int:
    return sum(z.free_pages for z in parse_buddyinfo(Path("/proc/buddyinfo").read_text()))


def test_ready_for_what_the_host_can_and_cannot_serve() -> None:
    code, doc = ready("--order", "4", "--blocks", "1")
    assert (code, doc["ready"]) == (0, True)
    assert isinstance(doc["blocks_available"], int) and doc["blocks_available"] >= 1
    too_many = free_pages() // 1024 + 1  # more order-10 blocks than all free memory holds
    code, doc = ready("--order", "10", "--blocks", str(too_many))
    assert (code, doc["ready"]) == (1, False)
    assert any("more than all free memory" in str(r) for r in doc["reasons"])  # type: ignore[attr-defined]


def test_prepare_really_compacts(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("remediation:\n  allow_drop_caches: false\n")  # compaction only, here
    vm = parse_vmstat(Path("/proc/vmstat").read_text())
    too_many = free_pages() // 1024 + 1
    code, doc = ready(
        "--order", "10", "--blocks", str(too_many), "--prepare", "--config", str(config)
    )
    after = parse_vmstat(Path("/proc/vmstat").read_text())
    assert code == 1  # nothing creates more blocks than there is free memory
    prepared = doc["prepared"]
    assert isinstance(prepared, list)
    assert [p["action"] for p in prepared] == ["compact"]  # the ladder, once, no drop_caches
    assert prepared[0]["ok"] is True
    scanned = ("compact_migrate_scanned", "compact_free_scanned")
    assert sum(after[k] for k in scanned) > sum(vm[k] for k in scanned)  # the kernel compacted


@pytest.fixture
def two_mib_pool() -> Iterator[int]:
    """The 2 MiB pool's size before the test; restored after it, whatever happens."""
    old = int(POOL.read_text())
    yield old
    POOL.write_text(f"{old}\n")
    assert int(POOL.read_text()) == old


def test_readiness_numbers_against_what_the_kernel_grants(two_mib_pool: int) -> None:
    buddy = parse_buddyinfo(Path("/proc/buddyinfo").read_text())
    zi = parse_zoneinfo(Path("/proc/zoneinfo").read_text())
    r = readiness(buddy, zi, read_hugepages("/sys"), 4096)
    pool = next(p for p in r.pools if p.size_kib == 2048)
    assert pool.order == 9 and pool.allocatable is not None
    # ask for what the report says is there now (at most 1 GiB: other sessions share the VM)
    grow = min(pool.allocatable, 512)
    assert grow > 0
    POOL.write_text(f"{two_mib_pool + grow}\n")
    granted = int(POOL.read_text()) - two_mib_pool
    assert granted == grow  # the kernel grants at least what the free blocks promised
    after = readiness(
        parse_buddyinfo(Path("/proc/buddyinfo").read_text()),
        parse_zoneinfo(Path("/proc/zoneinfo").read_text()),
        read_hugepages("/sys"),
        4096,
    )
    grown = next(p for p in after.pools if p.size_kib == 2048)
    assert grown.nr == two_mib_pool + grow
    node0 = next(n for n in after.nodes if n.size_kib == 2048 and n.node == 0)
    assert node0.nr == two_mib_pool + grow  # the per-node pool (one NUMA node here)
