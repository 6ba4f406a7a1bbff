"""`memfrag-agent ready`, check's hugepage and signature sections, scan-log's signatures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agent.assess.readiness import Gate, Need, gate
from agent.assess.verdict import assess
from agent.cli.main import main
from agent.cli.ready import prepare
from agent.config.model import HIGHEST_ORDER, Config
from agent.decide.ladder import Step
from agent.decide.readiness import preparation
from agent.kernel.actions import ActionKind
from agent.kernel.procfs import ProcReader
from agent.kernel.writes import ActionResult

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
SEED = str(FIXTURES / "proc" / "seed-incident")
VM = str(FIXTURES / "proc" / "vm-6.18-x86_64")
FB = str(FIXTURES / "proc" / "fb-prod-2node-4.0-fragmented")
HP = FIXTURES / "sys" / "vm-6.18-x86_64-hugepages"
NOSYS = str(FIXTURES / "proc" / "no-such-sys")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_ready_when_the_blocks_are_there(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "ready", "--order", "4", "--blocks", "10", "--proc-root", VM)
    assert (code, err) == (0, "")
    assert out.startswith("memfrag-agent ready: READY: 10 blocks of order 4 on this node\n")


def test_not_ready_says_why(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "ready", "--order", "4", "--blocks", "1", "--proc-root", SEED)
    assert code == 1
    assert "NOT READY" in out
    assert "this node holds 0 free blocks of order>=4 (64 KiB each), 1 needed" in out
    assert "NUMA node 0 (DMA32+Normal): 0 blocks, fragmented" in out


def test_ready_per_numa_node_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys,
        "ready",
        "--order",
        "5",
        "--blocks",
        "1",
        "--numa-node",
        "1",
        "--proc-root",
        FB,
        "-o",
        "json",
    )
    doc = json.loads(out)
    obs = ProcReader(FB, NOSYS).observe(with_pagetypeinfo=False)
    node1 = next(n for n in assess(obs, Config().assessment, 5).numa if n.node == 1)
    assert doc["blocks_available"] == node1.blocks_at_target
    assert doc["ready"] is (node1.blocks_at_target >= 1)
    assert code == (0 if doc["ready"] else 1)
    assert (doc["order"], doc["blocks_needed"], doc["numa_node"], doc["prepared"]) == (5, 1, 1, [])


def test_absent_numa_node_is_not_ready(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys, "ready", "--order", "4", "--blocks", "1", "--numa-node", "7", "--proc-root", VM
    )
    assert code == 1
    assert "NUMA node 7 has no memory here (NUMA nodes: 0)" in out


def test_more_than_free_memory_is_said(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "ready", "--order", "10", "--blocks", "1000000", "--proc-root", VM)
    assert code == 1
    assert "more than all free memory there" in out


@pytest.mark.parametrize(
    "argv",
    [
        ["--blocks", "0"],
        ["--blocks", "1", "--numa-node", "-1"],
        ["--blocks", "1", "--order", str(HIGHEST_ORDER + 1)],
    ],
)
def test_bad_arguments_exit_3(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    args = ["ready", "--proc-root", VM, *(argv if "--order" in argv else ["--order", "4", *argv])]
    code, out, err = run(capsys, *args)
    assert (code, out) == (3, "")
    assert err


def _gate(path: str, need: Need) -> Gate:
    return gate(ProcReader(path, NOSYS).observe(), Config().assessment, need)


def test_preparation_is_the_ladder_for_the_cause() -> None:
    need = Need(4, 1)
    g = _gate(SEED, need)
    steps = preparation(g, need, (), allow_drop_caches=True)
    assert [s.name for s in steps] == ["compact", "drop-caches=1", "drop-caches=2"]
    assert [s.name for s in preparation(g, need, (), allow_drop_caches=False)] == ["compact"]


def test_preparation_for_one_numa_node_compacts_that_node() -> None:
    need = Need(5, 10**6, numa_node=1)
    obs = ProcReader(FB, NOSYS).observe(with_pagetypeinfo=False)  # cause unknown: compaction
    g = gate(obs, Config().assessment, need)
    steps = preparation(g, need, (0, 1), allow_drop_caches=False)
    assert [(s.action, s.arg) for s in steps] == [
        (ActionKind.COMPACT_NODE, 1),
        (ActionKind.COMPACT, None),
    ]
    # the cause is unmovable with pagetypeinfo: the ladder's one short attempt, not compaction
    unmovable = preparation(_gate(FB, need), need, (0, 1), allow_drop_caches=True)
    assert [s.name for s in unmovable] == ["drop-caches=1", "compact"]


def test_prepare_runs_each_step_once_and_stops_when_enough() -> None:
    need = Need(4, 1)
    first = _gate(SEED, need)
    enough = _gate(VM, need)
    looks = iter([first, enough, enough])
    acted: list[str] = []

    def act(step: Step) -> ActionResult:
        acted.append(step.name)
        return ActionResult(True, 0.5)

    steps = preparation(first, need, (), allow_drop_caches=True)
    final, done = prepare(steps, need, lambda: next(looks), act, first)
    assert final.ok
    assert acted == ["compact", "drop-caches=1"]
    assert [(p.blocks_before, p.blocks_after) for p in done] == [(0, 0), (0, enough.have)]


def test_prepare_that_never_helps_runs_the_ladder_once() -> None:
    need = Need(4, 1)
    first = _gate(SEED, need)
    acted: list[str] = []
    steps = preparation(first, need, (), allow_drop_caches=True)

    def act(step: Step) -> ActionResult:
        acted.append(step.name)
        return ActionResult(False, 0.0, "not permitted")

    final, done = prepare(steps, need, lambda: first, act, first)
    assert not final.ok
    assert acted == ["compact", "drop-caches=1", "drop-caches=2"]
    assert len(done) == 3


# --- check: hugepages and signatures --------------------------------------------------------------


CAPTURE = ("check", "--proc-root", str(HP / "proc"), "--sys-root", str(HP / "sys"))


def test_check_hugepages_on_the_real_capture(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, *CAPTURE, "--hugepages", "2M=20000")
    assert code == 0
    assert (
        "  CANNOT GROW: hugepages-2048kB (2 MiB, order 9): the pool holds 64 of the target 20000: "
        "9550 could be allocated now (NUMA node 0: 9550): it cannot grow by 19936 without reclaim "
        "or compaction [pool 64, free 64]"
    ) in out.splitlines()


def _check_json(capsys: pytest.CaptureFixture[str], log: str) -> dict[str, Any]:
    _, out, _ = run(capsys, *CAPTURE, "--output", "json", "--log", str(FIXTURES / "kmsg" / log))
    doc: dict[str, Any] = json.loads(out)
    return doc


def test_check_json_hugepages_and_signatures(capsys: pytest.CaptureFixture[str]) -> None:
    doc = _check_json(capsys, "findings.txt")
    pools = {p["size_kib"]: p for p in doc["hugepages"]["pools"]}
    assert pools[2048]["allocatable_now"] == 9550 and pools[2048]["nr_hugepages"] == 64
    assert pools[1048576]["allocatable_now"] is None
    assert doc["hugepages"]["thp"]["enabled"] == "madvise"
    assert doc["hugepages"]["thp"]["since_boot"] is True
    # the capture's kernel is 6.18: the 3.10 and pre-4.7 entries found in the log do not apply
    assert doc["signatures"] == []
    sigs = _check_json(capsys, "lookalikes.txt")["signatures"]
    assert [(s["id"], s["kernel_confirmed"]) for s in sigs] == [("cma-alloc-failed", True)]


def test_check_log_on_a_snapshot_without_a_kernel_version(
    capsys: pytest.CaptureFixture[str],
) -> None:
    _code, out, _ = run(
        capsys,
        "check",
        "--proc-root",
        SEED,
        "--sys-root",
        NOSYS,
        "--log",
        str(FIXTURES / "kmsg" / "findings.txt"),
    )
    assert (
        "  nf-conntrack-netns-slab: per-network-namespace nf_conntrack slab cache could not be "
        "created (kernels 2.6.33 to before 4.7; this kernel's version unknown)" in out.splitlines()
    )


# --- scan-log -----------------------------------------------------------------------------------


def test_scan_log_names_the_signature_and_decodes_hex_gfp(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    log = tmp_path / "kern.log"
    log.write_text(
        "Apr 20 09:13:21 xxx kernel: CPU: 1 PID: 3522 Comm: runc:[1:CHILD] Kdump: loaded "
        "Tainted: G               ------------ T 3.10.0-1062.18.1.el7.x86_64 #1\n"
        "Apr 20 09:13:21 xxx kernel: runc:[1:CHILD]: page allocation failure: order:4, "
        "mode:0xc0d0\n"
        "\tNov 12 15:15:41 kernel: Unable to create nf_conn slab cache\n"
    )
    code, out, _ = run(capsys, "scan-log", str(log))
    assert code == 0
    docs = [json.loads(x) for x in out.splitlines()]
    assert docs[0]["gfp_decoded"] == {
        "flags": ["GFP_KERNEL", "__GFP_COMP", "__GFP_ZERO"],
        "table": "3.8-3.15",
        "assumed": False,
    }
    assert docs[1]["signatures"] == [{"id": "nf-conntrack-netns-slab", "kernel_confirmed": True}]
    code, out, _ = run(capsys, "scan-log", "--kernel", "5.4", str(log))
    docs = [json.loads(x) for x in out.splitlines()]
    assert docs[1]["signatures"] == []
    # the same hex read with 5.4's bits (gfp_tables 5.1-6.2) names other flags
    assert docs[0]["gfp_decoded"] == {
        "flags": [
            "__GFP_RECLAIMABLE",
            "__GFP_IO",
            "__GFP_FS",
            "__GFP_RETRY_MAYFAIL",
            "__GFP_NOFAIL",
        ],
        "table": "5.1-6.2",
        "assumed": False,
    }


def test_scan_log_standalone_signature(capsys: pytest.CaptureFixture[str]) -> None:
    _code, out, _ = run(capsys, "scan-log", str(FIXTURES / "kmsg" / "signatures.txt"))
    docs = [json.loads(x) for x in out.splitlines()]
    assert [d["kind"] for d in docs] == ["slab_failure", "signature"]
    assert docs[0]["signatures"] == [{"id": "memcg-kmem-3.10", "kernel_confirmed": None}]
    assert docs[0]["gfp_decoded"]["flags"] == ["GFP_ATOMIC"] and docs[0]["gfp_decoded"]["assumed"]
    assert docs[1]["signatures"][0]["id"] == "runc-exit-status-6"


def test_scan_log_bad_kernel_exits_3(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(
        capsys, "scan-log", "--kernel", "new", str(FIXTURES / "kmsg" / "signatures.txt")
    )
    assert code == 3 and "--kernel 'new'" in err
