"""Long-term pinned memory: VmPin from /proc/PID/status, and the node's FOLL_PIN count from
/proc/vmstat.

VmPin is mm->pinned_vm: pages a driver pinned for the process for a long time (io_uring
registered buffers, RDMA memory regions), which neither compaction nor reclaim can move or free
(kernel 6.1: io_uring/rsrc.c io_account_mem adds to it whatever CAP_IPC_LOCK says). vmstat's
nr_foll_pin_acquired - nr_foll_pin_released counts every FOLL_PIN page pinned now, for the whole
node (mm/gup.c), short-lived O_DIRECT pins included."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from agent.base.errors import ParseError
from agent.kernel.limits import lines
from agent.kernel.numbers import is_int

MAX_STATUS_LINES = 200  # /proc/PID/status has ~60 lines on 6.x


class SkipReason(StrEnum):
    """Why one process's status was not counted (a metric label: bounded)."""

    VANISHED = "vanished"  # exited between the listing and the read
    UNREADABLE = "unreadable"  # any other OSError
    MALFORMED = "malformed"  # a Name or VmPin line that does not parse
    NO_MM = "no_mm"  # a kernel thread: no Vm* lines at all


@dataclass(frozen=True)
class PinHolder:
    pid: int
    comm: str
    pinned_bytes: int
    pod_uid: str | None = None  # the kubelet pod it runs in, where the daemon could tell


def parse_status_pin(text: str, source: str = "/proc/PID/status") -> tuple[str, int] | None:
    """(comm, VmPin in bytes) of one process; None for a kernel thread (no VmPin line). A
    malformed Name or VmPin line, or no Name, is a ParseError."""
    comm: str | None = None
    pin: int | None = None
    for lineno, line in enumerate(lines(text), 1):
        if lineno > MAX_STATUS_LINES:
            raise ParseError(source, lineno, f"more than {MAX_STATUS_LINES} lines")
        if line.startswith("Name:"):
            comm = line[5:].strip()[:64]
        elif line.startswith("VmPin:"):
            parts = line[6:].split()
            if len(parts) != 2 or parts[1] != "kB" or not is_int(parts[0]):
                raise ParseError(source, lineno, f"expected 'VmPin: N kB', got {line!r:.80}")
            pin = int(parts[0]) * 1024
    if comm is None:
        raise ParseError(source, None, "no Name line")
    return None if pin is None else (comm, pin)


def foll_pinned_pages(vmstat: Mapping[str, int] | None) -> int | None:
    """Pages pinned with FOLL_PIN now, node-wide; None where the kernel has no such counters
    (before 5.8) or vmstat was not read."""
    if vmstat is None:
        return None
    acquired = vmstat.get("nr_foll_pin_acquired")
    released = vmstat.get("nr_foll_pin_released")
    if acquired is None or released is None:
        return None
    return max(0, acquired - released)
