#!/usr/bin/env python3
"""`make lab`, host side: build (or reuse) the VM image, boot it under qemu (KVM when /dev/kvm is
usable, else TCG, and the output says which), let lab/guest.py fragment the guest's memory and
try each remediation strategy, boot a second, 2-NUMA-node guest for the numa scenario, then copy
the guest's results to out/lab.json (series to out/lab-series/) and print them as a table.

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
sys.path.insert(0, str(REPO))
from lab.labcalc import share, show  # noqa: E402  (run as a script: lab/ is not on the path)


def kvm_usable() -> str | None:
    """None when KVM can run a guest here; else why not. /dev/kvm must open read-write, and the
    CPU must show vmx or svm: on a VM without nested virtualization /dev/kvm can exist while a
    guest hangs before its first line (seen on this project's machines)."""
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        return f"/dev/kvm: {exc.strerror or exc}"
    os.close(fd)
    flags = set()
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("flags"):
                flags.update(line.split(":", 1)[1].split())
    if not flags & {"vmx", "svm"}:
        return "/dev/kvm exists, but the CPU has no vmx/svm flag (no nested virtualization)"
    return None


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


def boot(
    cache: Path, args: argparse.Namespace, results: Path, serial: Path, guest_args: list[str],
    mem: int, nodes: int,
) -> int:  # fmt: skip
    joined = ",".join(guest_args)
    append = (
        "console=ttyS0 root=/dev/vda rw init=/sbin/lab-init panic=-1 "
        "loglevel=5 transparent_hugepage=never" + (f" lab.args={joined}" if joined else "")
    )
    smp = max(args.smp, nodes)
    accel = "kvm" if args.accel == "kvm" else "tcg"
    numa: list[str] = []
    for n in range(nodes if nodes > 1 else 0):  # memory split evenly, one CPU each
        numa += [
            "-object", f"memory-backend-ram,id=mem{n},size={mem // nodes}M",
            "-numa", f"node,nodeid={n},cpus={n},memdev=mem{n}",
        ]  # fmt: skip
    cmd = [
        args.qemu,
        "-machine", "pc",
        "-accel", accel,
        # host: KVM's own CPU, less IA32_ARCH_CAPABILITIES, which nested KVM may refuse
        "-cpu", "host,-arch-capabilities" if accel == "kvm" else "max",
        "-m", f"{mem}M",
        "-smp", str(smp),
        *numa,
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
    print(
        f"lab: booting a {mem} MiB, {smp} vCPU, {nodes} NUMA node guest under {accel.upper()} "
        f"(timeout {args.timeout}s)",
        flush=True,
    )
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
        return f"{v:.2f}" if abs(v) < 10 else f"{v:.1f}"
    if isinstance(v, list):
        return ",".join(map(str, v)) or "-"
    return str(v)


COLUMNS = [
    ("scenario", "scenario"),
    ("strategy", "strategy"),
    ("numa_node", "node"),
    ("blocks_ge4_before", "blocks>=4 before"),
    ("blocks_ge4_after", "after"),
    ("blocks_vs_seed", "of seed"),
    ("recovered", "recovered"),
    ("seconds", "seconds"),
    ("cache_dropped_mib", "cache dropped MiB"),
    ("workload_p99_ms", "probe p99 ms"),
    ("workload_max_ms", "probe max ms"),
    ("workload_idle_p99_ms", "idle p99 ms"),
    ("refault_seconds", "refault s"),
    ("cpu_seconds", "CPU s"),
    ("failures_traced", "traced"),
    ("failures_logged", "logged"),
    ("actions", "actions"),
    ("cause", "cause"),
]
MAIN_SCENARIOS = "movable+reclaimable+kernel-mixed+hopeless"
# the 2-node guest's default: every strategy, and the spin control (a busy CPU 1, no fix)
NUMA_STRATEGIES = "none+seed+proactive+agent+spin"


def compare(rows: list[dict[str, Any]]) -> None:
    """Each row's blocks and dropped cache as shares of the seed fix's in the same scenario."""
    seed = {r["scenario"]: r for r in rows if r.get("strategy") == "seed"}
    for r in rows:
        s = seed.get(r["scenario"])
        if s is not None:
            r["blocks_vs_seed"] = share(r.get("blocks_ge4_after"), s.get("blocks_ge4_after"))
            r["cache_vs_seed"] = share(r.get("cache_dropped_mib"), s.get("cache_dropped_mib"))


def table(doc: dict[str, Any], markdown: bool = False) -> str:
    rows = [[fmt(r.get(k)) for k, _ in COLUMNS] for r in doc.get("rows", [])]
    if markdown:
        out = ["| " + " | ".join(h for _, h in COLUMNS) + " |"]
        out.append("|" + "---|" * len(COLUMNS))
        out += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(out) + "\n"
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
        for i, (_, h) in enumerate(COLUMNS)
    ]
    out = ["  ".join(h.ljust(w) for (_, h), w in zip(COLUMNS, widths, strict=True))]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(out) + "\n"


def split_args(
    guest_args: list[str], numa_strategies: str | None = None
) -> tuple[list[str], list[str]]:
    """The guest arguments of the main (one-node) boot and of the 2-node boot (numa scenario):
    `scenarios=` is split between them; the 2-node boot's strategies are `numa_strategies`, else
    the `strategies=` given, else NUMA_STRATEGIES; either list is [] when it has no scenario."""
    scen = MAIN_SCENARIOS + "+numa"
    rest = []
    for a in guest_args:
        if a.startswith("scenarios="):
            scen = a.split("=", 1)[1]
        else:
            rest.append(a)
    names = [x for x in scen.split("+") if x]
    main = [x for x in names if x != "numa"]
    has_strategies = any(a.startswith("strategies=") for a in rest)
    numa_rest = [a for a in rest if numa_strategies is None or not a.startswith("strategies=")]
    if numa_strategies is not None or not has_strategies:
        numa_rest.append(f"strategies={numa_strategies or NUMA_STRATEGIES}")
    # the daemon starts after the build here (its first tick at the strategy's start): run from
    # before, it met a node 1 that kcompactd (score 99 there) had repaired before its next tick
    if not any(a.startswith("agent_first=") for a in numa_rest):
        numa_rest.append("agent_first=0")
    numa_rest.append("probe=0")
    return (
        ["scenarios=" + "+".join(main), *rest] if main else [],
        ["scenarios=numa", *numa_rest] if "numa" in names else [],
    )


def run_guest(
    cache: Path, args: argparse.Namespace, guest_args: list[str], mem: int, nodes: int, tag: str
) -> tuple[dict[str, Any] | None, int, float]:
    """One boot: its results (None: the guest wrote none), qemu's exit code, seconds."""
    serial = OUT / f"lab-serial{tag}.log"
    serial.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="memfrag-lab-") as tmp:
        results = Path(tmp)
        os.chmod(results, 0o777)
        t1 = time.monotonic()
        rc = boot(cache, args, results, serial, guest_args, mem, nodes)
        seconds = time.monotonic() - t1
        got = results / "lab.json"
        if not got.exists():
            print(f"lab: no results from the guest (qemu exit {rc}); see {serial}", file=sys.stderr)
            return None, rc, seconds
        doc: dict[str, Any] = json.loads(got.read_text())
        (OUT / "lab-series").mkdir(exist_ok=True)
        for extra in results.iterdir():
            if extra.name.startswith("series-"):
                shutil.copy(extra, OUT / "lab-series" / extra.name.removeprefix("series-"))
            elif extra.name != "lab.json":
                shutil.copy(extra, OUT / f"lab-{extra.name}")
    return doc, rc, seconds


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mem", type=int, default=int(os.environ.get("LAB_MEM", "512")), help="MiB")
    p.add_argument("--numa-mem", type=int, default=768, help="MiB of the 2-node guest")
    p.add_argument("--smp", type=int, default=1)
    p.add_argument(
        "--numa-strategies",
        help="the 2-node guest's strategies (default: strategies= if given, else "
        f"{NUMA_STRATEGIES})",
    )
    p.add_argument("--timeout", type=int, default=int(os.environ.get("LAB_TIMEOUT", "3600")))
    p.add_argument("--qemu", default="qemu-system-x86_64")
    p.add_argument("--accel", choices=("auto", "kvm", "tcg"), default="auto")
    p.add_argument("--cache", help="an image directory from build.sh (default: run build.sh)")
    p.add_argument("--out", default=str(OUT / "lab.json"))
    p.add_argument("--verbose", action="store_true", help="show the whole serial console")
    p.add_argument(
        "guest_args",
        nargs="*",
        help="passed to guest.py, e.g. scenarios=movable strategies=none+agent (lists use +; "
        "the numa scenario runs in a second, 2-node guest)",
    )
    p.add_argument(
        "--markdown",
        metavar="FILE",
        help="print an existing results file (out/lab.json) as the README's table, and exit",
    )
    args = p.parse_args()
    if args.markdown:
        sys.stdout.write(table(json.loads(Path(args.markdown).read_text()), markdown=True))
        return 0
    if not 512 <= args.mem <= 1024 or not 512 <= args.numa_mem <= 1024:
        p.error("--mem, --numa-mem: 512..1024 MiB")
    if args.accel == "auto":
        why = kvm_usable()
        args.accel = "tcg" if why else "kvm"
        if why:
            print(f"lab: no KVM ({why}): falling back to TCG, much slower", flush=True)
    elif args.accel == "kvm" and (why := kvm_usable()):
        p.error(f"--accel kvm: {why}")
    t0 = time.monotonic()
    cache = build(args.cache)
    OUT.mkdir(parents=True, exist_ok=True)
    main_args, numa_args = split_args(args.guest_args, args.numa_strategies)
    doc: dict[str, Any] = {"rows": [], "notes": [], "complete": True}
    host: dict[str, Any] = {"accel": args.accel, "image": str(cache), "boots": []}
    for guest_args, mem, nodes, tag in (
        (main_args, args.mem, 1, ""),
        (numa_args, args.numa_mem, 2, "-numa"),
    ):
        if not guest_args:
            continue
        got, rc, seconds = run_guest(cache, args, guest_args, mem, nodes, tag)
        host["boots"].append(
            {"mem_mib": mem, "numa_nodes": nodes, "smp": max(args.smp, nodes),
             "qemu_exit": rc, "vm_seconds": round(seconds, 1), "args": guest_args}
        )  # fmt: skip
        if got is None:
            doc["complete"] = False
            doc["notes"].append(f"the {nodes}-node guest wrote no results (qemu exit {rc})")
            continue
        rows, notes, complete = got.pop("rows"), got.pop("notes"), got.pop("complete")
        doc["rows"] += rows
        doc["notes"] += notes
        doc["complete"] = doc["complete"] and complete
        if nodes == 1 or "kernel" not in doc:
            doc.update({k: v for k, v in got.items() if nodes == 1 or k not in doc})
        else:
            doc["numa_guest"] = got
    compare(doc["rows"])
    doc["show"] = show(doc["rows"])
    host["total_seconds"] = round(time.monotonic() - t0, 1)
    doc["host"] = host
    Path(args.out).write_text(json.dumps(doc, indent=2) + "\n")
    print(
        f"\nlab: guest kernel {doc.get('kernel')}, {args.accel.upper()}; results in {args.out}, "
        "series in out/lab-series/"
    )
    sys.stdout.write(table(doc))
    for note in doc.get("kmsg_findings", []):
        print(f"lab: agent's kmsg matcher: {json.dumps(note)}")
    for line in doc["show"]:
        print(f"lab: show: {line}")
    for note in doc.get("notes", []):
        print(f"lab: note: {note}")
    print(f"lab: total {time.monotonic() - t0:.0f}s")
    return 0 if doc.get("complete") else 1


if __name__ == "__main__":
    sys.exit(main())
