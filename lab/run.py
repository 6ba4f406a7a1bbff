#!/usr/bin/env python3
"""`make lab`, host side: build (or reuse) the VM image, boot it under qemu (TCG: this machine
has no KVM), let lab/guest.py fragment the guest's memory and try each remediation strategy, then
copy the guest's results to out/lab.json and print them as a table.

The repository is shared into the guest read-only over 9p (the agent runs from it as is); a
second, writable 9p share carries the results back. The guest has no network. Standard library
only, so it runs with any python3.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

LAB = Path(__file__).resolve().parent
REPO = LAB.parent
OUT = REPO / "out"


def build(cache: str | None) -> Path:
    if cache:
        return Path(cache)
    start = time.monotonic()
    proc = subprocess.run(
        ["bash", str(LAB / "build.sh")], stdout=subprocess.PIPE, text=True, check=False
    )
    if proc.returncode != 0:
        sys.exit(f"lab: build.sh failed ({proc.returncode})")
    print(f"lab: image ready in {time.monotonic() - start:.1f}s", flush=True)
    return Path(proc.stdout.strip().splitlines()[-1])


def follow(path: Path, stop: threading.Event, verbose: bool) -> None:
    """Show the guest's progress: its own 'lab:' lines and the kernel's allocation failures."""
    pos = 0
    while not stop.is_set():
        try:
            with open(path, "rb") as fh:
                fh.seek(pos)
                chunk = fh.read()
        except FileNotFoundError:
            chunk = b""
        if chunk:
            last_nl = chunk.rfind(b"\n")
            if last_nl >= 0:
                pos += last_nl + 1
                for raw in chunk[: last_nl + 1].splitlines():
                    line = raw.decode("utf-8", "replace").rstrip("\r")
                    if (
                        verbose
                        or line.startswith(("lab", "Traceback"))
                        or "page allocation" in line
                    ):
                        print(f"  guest| {line}", flush=True)
        stop.wait(1.0)


def boot(cache: Path, args: argparse.Namespace, results: Path, serial: Path) -> int:
    guest_args = ",".join(args.guest_args) if args.guest_args else ""
    append = (
        "console=ttyS0 root=/dev/vda rw init=/sbin/lab-init panic=-1 "
        "loglevel=5 transparent_hugepage=never" + (f" lab.args={guest_args}" if guest_args else "")
    )
    cmd = [
        args.qemu,
        "-machine", "pc,accel=tcg",
        "-cpu", "max",
        "-m", f"{args.mem}M",
        "-smp", str(args.smp),
        "-nographic",
        "-monitor", "none",
        "-serial", f"file:{serial}",
        "-no-reboot",
        "-nic", "none",
        "-kernel", str(cache / "vmlinuz"),
        "-initrd", str(cache / "initrd.img"),
        "-append", append,
        # snapshot=on: the guest's writes go to a temporary overlay; the cached image stays clean
        "-drive", f"file={cache / 'root.img'},if=virtio,format=raw,snapshot=on",
        "-virtfs", f"local,path={REPO},mount_tag=repo,security_model=none,readonly=on",
        "-virtfs", f"local,path={results},mount_tag=results,security_model=none",
    ]  # fmt: skip
    print(f"lab: booting {args.mem} MiB guest under TCG (timeout {args.timeout}s)", flush=True)
    if args.verbose:
        print("lab: " + " ".join(cmd), flush=True)
    stop = threading.Event()
    t = threading.Thread(target=follow, args=(serial, stop, args.verbose), daemon=True)
    t.start()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, start_new_session=True)
    rc = 124
    try:
        rc = proc.wait(timeout=args.timeout)
    except subprocess.TimeoutExpired:
        print(f"lab: guest still running after {args.timeout}s: stopping qemu", flush=True)
    finally:
        if proc.poll() is None:  # timeout or Ctrl-C: stop the qemu we started, and only it
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        time.sleep(1.2)
        stop.set()
        t.join()
    return rc


def fmt(v: object) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.1f}"
    if isinstance(v, list):
        return ",".join(map(str, v)) or "-"
    return str(v)


def table(doc: dict[str, Any]) -> str:
    cols = [
        ("scenario", "scenario"),
        ("strategy", "strategy"),
        ("blocks_ge4_before", "blocks>=4 before"),
        ("blocks_ge4_after", "after"),
        ("recovered", "recovered"),
        ("seconds", "seconds"),
        ("cache_dropped_mib", "cache dropped MiB"),
        ("actions", "actions"),
        ("verdict", "agent verdict"),
        ("cause", "cause"),
    ]
    rows = [[fmt(r.get(k)) for k, _ in cols] for r in doc.get("rows", [])]
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, (_, h) in enumerate(cols)
    ]
    out = ["  ".join(h.ljust(w) for (_, h), w in zip(cols, widths, strict=True))]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(out) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mem", type=int, default=int(os.environ.get("LAB_MEM", "512")), help="MiB")
    p.add_argument("--smp", type=int, default=1)
    p.add_argument("--timeout", type=int, default=int(os.environ.get("LAB_TIMEOUT", "2400")))
    p.add_argument("--qemu", default="qemu-system-x86_64")
    p.add_argument("--cache", help="an image directory from build.sh (default: run build.sh)")
    p.add_argument("--out", default=str(OUT / "lab.json"))
    p.add_argument("--verbose", action="store_true", help="show the whole serial console")
    p.add_argument(
        "guest_args",
        nargs="*",
        help="passed to guest.py, e.g. scenarios=movable strategies=none,agent (commas inside "
        "a value are kept: use + between items, e.g. scenarios=movable+unmovable)",
    )
    args = p.parse_args()
    if not 512 <= args.mem <= 1024:
        p.error("--mem: 512..1024 MiB")
    t0 = time.monotonic()
    cache = build(args.cache)
    OUT.mkdir(parents=True, exist_ok=True)
    serial = OUT / "lab-serial.log"
    serial.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="memfrag-lab-") as tmp:
        results = Path(tmp)
        os.chmod(results, 0o777)
        t1 = time.monotonic()
        rc = boot(cache, args, results, serial)
        vm_seconds = time.monotonic() - t1
        got = results / "lab.json"
        if not got.exists():
            print(f"lab: no results from the guest (qemu exit {rc}); see {serial}", file=sys.stderr)
            return 1
        doc = json.loads(got.read_text())
        for extra in results.iterdir():
            if extra.name != "lab.json":
                shutil.copy(extra, OUT / f"lab-{extra.name}")
    doc["host"] = {
        "vm_seconds": round(vm_seconds, 1),
        "total_seconds": round(time.monotonic() - t0, 1),
        "qemu_exit": rc,
        "mem_mib": args.mem,
        "smp": args.smp,
        "image": str(cache),
    }
    Path(args.out).write_text(json.dumps(doc, indent=2) + "\n")
    print(f"\nlab: guest kernel {doc.get('kernel')}, {args.mem} MiB, TCG; results in {args.out}")
    sys.stdout.write(table(doc))
    for note in doc.get("kmsg_findings", []):
        print(f"lab: agent's kmsg matcher: {json.dumps(note)}")
    for note in doc.get("notes", []):
        print(f"lab: note: {note}")
    print(f"lab: VM ran {vm_seconds:.0f}s; total {time.monotonic() - t0:.0f}s")
    return 0 if doc.get("complete") else 1


if __name__ == "__main__":
    sys.exit(main())
