"""`python -m bench.hostile`: time and peak memory of the CLI on hostile inputs (issue 13, item 11).

Each case builds a snapshot (or a log) in a temporary directory and runs `memfrag-agent check
--proc-root DIR` (or `scan-log`) in a child process under an address-space cap, so a case that
would exhaust memory fails inside the cap instead of taking the machine with it. Prints one row
per case: exit code, wall seconds, the child's peak RSS, and the first line of its stderr.
A benchmark, not a test: nothing asserts on a number.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

SEED = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "proc" / "vm-6.18-x86_64"
CAP_BYTES = 3 << 30  # the child's address-space cap
SECRET = "SECRET-FIRST-LINE-of-another-file"


def _snapshot(root: Path) -> Path:
    proc = root / "proc"
    shutil.copytree(SEED, proc)
    return proc


def case_fifo(root: Path) -> list[str]:
    proc = _snapshot(root)
    (proc / "buddyinfo").unlink(missing_ok=True)
    os.mkfifo(proc / "buddyinfo")
    return ["check", "--proc-root", str(proc), "--sys-root", str(root)]


def case_dev_zero(root: Path) -> list[str]:
    proc = _snapshot(root)
    (proc / "zoneinfo").unlink(missing_ok=True)
    if os.geteuid() == 0:
        os.mknod(proc / "zoneinfo", stat.S_IFCHR | 0o600, os.makedev(1, 5))
    else:  # pragma: no cover - a symlink is the next best thing without root
        (proc / "zoneinfo").symlink_to("/dev/zero")
    return ["check", "--proc-root", str(proc), "--sys-root", str(root)]


def case_1040_orders(root: Path) -> list[str]:
    proc = _snapshot(root)
    (proc / "buddyinfo").write_text("Node 0, zone Normal " + " ".join(["1"] * 1040) + "\n")
    for name in ("zoneinfo", "pagetypeinfo"):
        (proc / name).unlink(missing_ok=True)
    return ["check", "--proc-root", str(proc), "--sys-root", str(root)]


def case_47000_numa_rows(root: Path) -> list[str]:
    proc = _snapshot(root)
    rows = "".join(f"Node {n}, zone Normal 1 2 3 4 5 6 7 8 9 10 11\n" for n in range(47000))
    (proc / "buddyinfo").write_text(rows)
    for name in ("zoneinfo", "pagetypeinfo"):
        (proc / name).unlink(missing_ok=True)
    return ["check", "--proc-root", str(proc), "--sys-root", str(root)]


def case_8192_zone_rows(root: Path) -> list[str]:
    """The most rows the parser allows (1,024 NUMA nodes x 8 zones): the per-node pass over every
    zone made this quadratic."""
    proc = _snapshot(root)
    rows = "".join(
        f"Node {n}, zone Z{z} 1 2 3 4 5 6 7 8 9 10 11\n" for n in range(1024) for z in range(8)
    )
    (proc / "buddyinfo").write_text(rows)
    for name in ("zoneinfo", "pagetypeinfo"):
        (proc / name).unlink(missing_ok=True)
    return ["check", "--proc-root", str(proc), "--sys-root", str(root)]


def case_200mb_file(root: Path) -> list[str]:
    proc = _snapshot(root)
    line = b"nr_free_pages 12345\n"
    with open(proc / "vmstat", "wb") as fh:
        chunk = line * (1 << 16)
        for _ in range((200 << 20) // len(chunk)):
            fh.write(chunk)
    return ["check", "--proc-root", str(proc), "--sys-root", str(root)]


def case_symlink(root: Path) -> list[str]:
    proc = _snapshot(root)
    other = root / "other-file"
    other.write_text(f"{SECRET}\nsecond line\n")
    (proc / "buddyinfo").unlink(missing_ok=True)
    (proc / "buddyinfo").symlink_to(other)
    return ["check", "--proc-root", str(proc), "--sys-root", str(root)]


def case_scan_log_1gb_line(root: Path) -> list[str]:
    log = root / "one-line.log"
    with open(log, "wb") as fh:
        chunk = b"a" * (1 << 20)
        for _ in range(1024):
            fh.write(chunk)
        fh.write(b"\nmysqld: page allocation failure. order:4, mode:0x10c0d0\n")
    return ["scan-log", str(log)]


CASES: dict[str, Callable[[Path], list[str]]] = {
    "fifo": case_fifo,
    "dev-zero": case_dev_zero,
    "1040-orders": case_1040_orders,
    "47000-numa-rows": case_47000_numa_rows,
    "8192-zone-rows": case_8192_zone_rows,
    "200mb-file": case_200mb_file,
    "symlink": case_symlink,
    "scan-log-1gb-line": case_scan_log_1gb_line,
}


_HTTP_CHILD = """
import resource, sys, threading, time
resource.setrlimit(resource.RLIMIT_NOFILE, (8192, 8192))
from agent.daemon.metrics import Health, Metrics, serve
server = serve(Metrics(), Health(3600), "127.0.0.1", 0)
print(server.server_address[1], flush=True)
sys.stdin.readline()
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
print(threading.active_count(), status["VmRSS"].strip(), flush=True)
time.sleep(60)
"""


def http_idle(connections: int = 3000) -> dict[str, object]:
    """/metrics and /healthz with `connections` half-open clients (a request line, no end of
    headers): the server's threads and RSS, and whether /healthz still answers."""
    import urllib.request

    resource.setrlimit(resource.RLIMIT_NOFILE, (8192, 8192))
    child = subprocess.Popen(
        [sys.executable, "-c", _HTTP_CHILD],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdin is not None and child.stdout is not None
    try:
        port = int(child.stdout.readline())
        start = time.monotonic()
        socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(connections)]
        for s in socks:
            s.sendall(b"GET /metrics HTTP/1.1\r\n")
        time.sleep(3)
        child.stdin.write("\n")
        child.stdin.flush()
        threads, rss = child.stdout.readline().split(maxsplit=1)
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=20) as r:
                healthz: object = r.status
        except OSError as exc:
            healthz = str(exc)
        return {
            "case": f"http-{connections}-half-open",
            "seconds": round(time.monotonic() - start, 2),
            "server_threads": int(threads),
            "server_rss": rss.strip(),
            "healthz": healthz,
        }
    finally:
        child.kill()
        child.wait()


def _cap() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (CAP_BYTES, CAP_BYTES))


def run_case(name: str, timeout: float) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix=f"hostile-{name}-") as tmp:
        args = CASES[name](Path(tmp))
        cmd = [sys.executable, "-m", "agent.cli.main", *args]
        start = time.monotonic()
        child = subprocess.Popen(
            # this runner is a fresh, single-threaded process per case (see main)
            cmd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=_cap,  # noqa: PLW1509
        )
        timed_out = False
        try:
            _, err = child.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            child.kill()
            _, err = child.communicate()
            timed_out = True
        seconds = time.monotonic() - start
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # max over children so far
    text = err.decode("utf-8", "replace").strip().splitlines()
    return {
        "case": name,
        "rc": "timeout" if timed_out else child.returncode,
        "seconds": round(seconds, 2),
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
        "stderr": (text[-1] if text else "")[:150],
        "leaks_other_file": SECRET in err.decode("utf-8", "replace"),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "cases", nargs="*", default=[*CASES, "http"], help=f"of: {', '.join(CASES)}, http"
    )
    p.add_argument("--timeout", type=float, default=120.0)
    args = p.parse_args()
    if unknown := set(args.cases) - set(CASES) - {"http"}:
        p.error(f"unknown case(s): {', '.join(sorted(unknown))}")
    for name in args.cases:
        if name == "http":
            print(http_idle(), flush=True)
            continue
        # One child per process run, so RUSAGE_CHILDREN's maximum is this case's own.
        out = subprocess.run(
            [
                sys.executable,
                "-c",
                f"import bench.hostile as h; print(h.run_case({name!r}, {args.timeout}))",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        print(out.stdout.strip() or out.stderr.strip()[-300:], flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
