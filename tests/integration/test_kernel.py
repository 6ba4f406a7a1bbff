"""Against this machine's real kernel (root in a VM): the indices equal the kernel's own, the
remediation writes really run and move the kernel's counters, /dev/kmsg behaves as we claim."""

from __future__ import annotations

import errno
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.assess.indices import fragmentation_index_milli, kernel_format, unusable_index_milli
from agent.kernel.buddyinfo import parse_buddyinfo
from agent.kernel.kmsg import Finding
from agent.kernel.kmsgfollow import KmsgFollower
from agent.kernel.vmstat import parse_vmstat
from tests.chart_tools import AGENT_BIN
from tests.cluster.waiting import wait_for

DEBUGFS = Path("/sys/kernel/debug")


@pytest.fixture(scope="module")
def debugfs() -> Iterator[Path]:
    mounted = (DEBUGFS / "extfrag").exists()
    if not mounted:
        subprocess.run(["mount", "-t", "debugfs", "none", str(DEBUGFS)], check=True)
    yield DEBUGFS / "extfrag"
    if not mounted:
        subprocess.run(["umount", str(DEBUGFS)], check=False)


@pytest.fixture
def devkmsg_unlimited() -> Iterator[None]:
    """Writes to /dev/kmsg are rate-limited by default (printk_devkmsg=ratelimit)."""
    path = Path("/proc/sys/kernel/printk_devkmsg")
    old = path.read_text().strip()
    path.write_text("on\n")
    yield
    path.write_text(old + "\n")


def _rows(text: str) -> dict[tuple[str, str], list[str]]:
    out = {}
    for line in text.splitlines():
        head, _, rest = line.partition("zone")
        parts = rest.split()
        out[(head.split()[1].rstrip(","), parts[0])] = parts[1:]
    return out


def test_indices_equal_the_kernels_debugfs(debugfs: Path) -> None:
    """Read buddyinfo, the kernel's indices, buddyinfo again: when both buddyinfo reads agree,
    the kernel computed its indices from the same free lists we did."""
    for _ in range(50):
        before = Path("/proc/buddyinfo").read_text()
        extfrag = (debugfs / "extfrag_index").read_text()
        unusable = (debugfs / "unusable_index").read_text()
        if Path("/proc/buddyinfo").read_text() == before:
            break
    else:
        pytest.fail("buddyinfo never held still for one read of debugfs")
    ext, unu = _rows(extfrag), _rows(unusable)
    compared = 0
    for z in parse_buddyinfo(before):
        key = (str(z.node), z.zone)
        for order in range(len(z.free)):
            assert kernel_format(fragmentation_index_milli(z.free, order)) == ext[key][order]
            assert kernel_format(unusable_index_milli(z.free, order)) == unu[key][order]
            compared += 2
    assert compared >= 2 * 11 * 2  # at least two zones of 11 orders on x86-64


def _vmstat() -> dict[str, int]:
    return parse_vmstat(Path("/proc/vmstat").read_text())


def _remediate(action: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(AGENT_BIN), "remediate", "--action", action],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_real_compaction_moves_the_kernels_counters() -> None:
    before = _vmstat()
    r = _remediate("compact")
    assert r.returncode == 0, r.stderr
    after = _vmstat()
    scanned = sum(after[k] - before[k] for k in ("compact_migrate_scanned", "compact_free_scanned"))
    assert scanned > 0
    assert "compact: wrote '1' to /proc/sys/vm/compact_memory" in r.stdout


def test_real_drop_caches_drops_page_cache_and_slab(tmp_path: Path) -> None:
    big = tmp_path / "cache-me"
    big.write_bytes(os.urandom(1 << 20) * 64)  # 64 MiB of page cache
    with open(big, "rb") as fh:
        while fh.read(1 << 20):
            pass
    before = _vmstat()
    r1, r2 = _remediate("drop-caches=1"), _remediate("drop-caches=2")
    after = _vmstat()
    assert r1.returncode == 0 and r2.returncode == 0, r1.stderr + r2.stderr
    assert after["drop_pagecache"] == before["drop_pagecache"] + 1
    assert after["drop_slab"] == before["drop_slab"] + 1
    cached = [line for line in r1.stdout.splitlines() if line.startswith("cached_mib")]
    before_mib, after_mib = (int(x) for x in cached[0].split()[1:3])
    assert before_mib - after_mib >= 60


def test_read_only_proc_sys_says_not_permitted() -> None:
    """In a mount namespace where /proc/sys is read-only (an unprivileged container), the
    remediation says so plainly and fails; detection still works."""
    script = (
        f"mount -o remount,bind,ro /proc/sys 2>/dev/null || mount --bind -o ro /proc/sys "
        f"/proc/sys; {AGENT_BIN} remediate --action compact; echo rc=$?; "
        f"{AGENT_BIN} check --output json >/dev/null; echo check=$?"
    )
    r = subprocess.run(
        [
            "unshare",
            "-m",
            "--propagation",
            "private",
            "sh",
            "-c",
            f"mount --bind /proc/sys /proc/sys && {script}",
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "rc=3" in r.stdout, r.stdout + r.stderr
    assert "not permitted: cannot write /proc/sys/vm/compact_memory" in r.stdout
    assert "privileged container" in r.stdout
    assert "check=0" in r.stdout or "check=1" in r.stdout or "check=2" in r.stdout


def _follow(accept_user: bool) -> tuple[list[Finding], list[int]]:
    found: list[Finding] = []
    ignored: list[int] = []
    f = KmsgFollower(
        "/dev/kmsg",
        found.append,
        accept_user_facility=accept_user,
        on_ignored=lambda: ignored.append(1),
    )
    f.start()
    time.sleep(0.3)  # let it open and seek to the end
    marker = f"memfrag-test-{os.getpid()}-{accept_user}"
    with open("/dev/kmsg", "w") as k:
        k.write(f"<4>{marker}: page allocation failure: order:5, mode:0x40dc0\n")
    wait_for(lambda: found or ignored, "the follower to see the line", 10)
    f.stop()
    return [x for x in found if marker in (x.process or "")], ignored


def test_real_devkmsg_user_lines_are_ignored_unless_allowed() -> None:
    found, ignored = _follow(accept_user=False)
    assert found == [] and ignored == [1]
    found, ignored = _follow(accept_user=True)
    assert len(found) == 1 and found[0].order == 5 and found[0].record.facility == 1


def test_real_devkmsg_overrun_gives_epipe_and_is_counted(devkmsg_unlimited: None) -> None:
    """Flood the ring buffer while a reader is not reading: its next read fails with EPIPE;
    the follower counts the loss and carries on reading."""
    fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    os.lseek(fd, 0, os.SEEK_END)
    line = ("<6>memfrag-test flood " + "x" * 180 + "\n").encode()
    with open("/dev/kmsg", "wb", buffering=0) as k:
        for _ in range(20000):  # ~4 MiB: more than any default log buffer
            k.write(line)
    with pytest.raises(OSError) as err:
        os.read(fd, 16384)
    assert err.value.errno == errno.EPIPE
    lost: list[int] = []
    f = KmsgFollower("/dev/kmsg", lambda _: None, on_lost=lost.append)
    os.lseek(fd, 0, os.SEEK_SET)  # back to the oldest record: the next reads are fine
    with open("/dev/kmsg", "wb", buffering=0) as k:
        for _ in range(20000):
            k.write(line)
    t = threading.Thread(target=f._follow, args=(fd, False), daemon=True)
    t.start()
    wait_for(lambda: lost, "the follower to count the overrun", 10)
    f.stop()
    t.join(5)  # the non-blocking fd ends the follower's loop with EAGAIN once drained
    os.close(fd)
    assert sum(lost) >= 1
