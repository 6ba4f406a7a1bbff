"""The lab's latency probe, a small workload that runs in the guest beside a strategy: every
iteration touches one page of its own 8 MiB (pages compaction may be migrating), maps, touches
and unmaps 64 KiB (fresh page allocations), then sleeps 1 ms. Its lateness (iteration time less
the 1 ms asked for) is the stall a running program sees while a fix runs.

    python3 lab/probe.py OUT [CPU [NODE]]

pins itself to CPU and its memory to NUMA node NODE (-1: anywhere), runs until SIGTERM, then
writes (start, lateness) pairs as float64 to OUT. Standard library only.
"""

from __future__ import annotations

import array
import ctypes
import mmap
import os
import signal
import sys
import time

PAGE = 4096
SYS_SET_MEMPOLICY, MPOL_BIND = 238, 2  # x86_64
BUF = 4 << 20
SLEEP = 0.001
MAX_SAMPLES = 2_000_000  # ~40 min of iterations: the arrays stay bounded


def bind_memory(node: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    mask = ctypes.c_ulong(1 << node)
    if libc.syscall(SYS_SET_MEMPOLICY, MPOL_BIND, ctypes.byref(mask), 64) != 0:
        raise OSError(ctypes.get_errno(), f"set_mempolicy(MPOL_BIND, node {node})")


def main(argv: list[str]) -> int:
    out = argv[0]
    cpu = int(argv[1]) if len(argv) > 1 else -1
    node = int(argv[2]) if len(argv) > 2 else -1
    if cpu >= 0:
        os.sched_setaffinity(0, {cpu})
    if node >= 0:
        bind_memory(node)
    stop = False

    def on_term(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    buf = mmap.mmap(-1, BUF)
    for off in range(0, BUF, PAGE):
        buf[off] = 1
    samples = array.array("d")
    with open(out + ".ready", "w"):
        pass  # the lab starts the strategy only now
    i = 0
    while not stop and len(samples) < 2 * MAX_SAMPLES:
        t0 = time.monotonic()
        buf[(i * PAGE) % BUF] = i & 0xFF
        m = mmap.mmap(-1, 16 * PAGE)
        for off in range(0, 16 * PAGE, PAGE):
            m[off] = 1
        m.close()
        time.sleep(SLEEP)
        samples.append(t0)
        samples.append(time.monotonic() - t0 - SLEEP)
        i += 1
    with open(out + ".tmp", "wb") as fh:
        samples.tofile(fh)
    os.replace(out + ".tmp", out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
