"""agent.cli.main.main: exit codes, table and JSON output, errors on stderr."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import Any, ClassVar

import pytest

from agent.cli.main import main
from agent.kernel.kmsg import scan

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
PROC = FIXTURES / "proc"
SEED = str(PROC / "seed-incident")
VM = str(PROC / "vm-6.18-x86_64")
NOSYS = str(PROC / "no-such-sys")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def run_exit(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """For usage errors, which argparse reports by raising SystemExit."""
    with pytest.raises(SystemExit) as info:
        main(list(argv))
    out, err = capsys.readouterr()
    assert isinstance(info.value.code, int)
    return info.value.code, out, err


# --- check ----------------------------------------------------------------------------------------


def test_check_seed_table(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "check", "--proc-root", SEED, "--sys-root", NOSYS)
    assert code == 2
    assert err == ""
    lines = out.splitlines()
    assert lines[0] == f"memfrag-agent check: {SEED}, target order 4 (64 KiB blocks)"
    assert "Verdict: FRAGMENTED (FreeMemoryFragmented)" in lines
    assert (
        "0     Normal  yes  1163  1101  932  222  0  0  0  0  0  0   0    0     1.000    0.838"
        "   35M      -"
    ) in lines
    assert "Cause: unknown: pagetypeinfo unavailable (it is root-only): cause unknown" in lines
    assert "  1. compact: migrate movable pages to merge free blocks" in lines
    assert "  3. drop-caches=2: free reclaimable slab (dentries, inodes)" in lines
    assert f"  - {SEED}/zoneinfo: not present" in lines
    assert "Would do (remediation mode dry-run)" in out


def test_check_seed_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys, "check", "--proc-root", SEED, "--sys-root", NOSYS, "--output", "json"
    )
    assert code == 2
    doc: dict[str, Any] = json.loads(out)
    assert doc["schema_version"] == 1
    assert doc["source"] == SEED
    assert (doc["verdict"], doc["reason"], doc["order"], doc["exhausted"]) == (
        "fragmented",
        "FreeMemoryFragmented",
        4,
        False,
    )
    assert [z["free_blocks"] for z in doc["zones"]] == [
        [1, 0, 1, 0, 2, 1, 1, 0, 1, 1, 3],
        [2725, 624, 489, 178, 0, 0, 0, 0, 0, 0, 0],
        [1163, 1101, 932, 222, 0, 0, 0, 0, 0, 0, 0],
    ]
    assert [z["zone"] for z in doc["zones"]] == ["DMA", "DMA32", "Normal"]
    assert [z["workload"] for z in doc["zones"]] == [False, True, True]
    assert [z["blocks_at_order"] for z in doc["zones"]] == [248, 0, 0]
    assert [z["free_pages"] for z in doc["zones"]] == [3973, 7353, 8869]
    assert [z["fragmentation_index"] for z in doc["zones"]] == [-1.0, 0.886, 0.838]
    assert [z["unusable_index"] for z in doc["zones"]] == [0.001, 1.0, 1.0]
    assert [z["managed_pages"] for z in doc["zones"]] == [None, None, None]
    assert [z["watermark_pages"] for z in doc["zones"]] == [None, None, None]
    assert doc["numa_nodes"] == [
        {
            "node": 0,
            "state": "fragmented",
            "blocks_at_order": 0,
            "free_pages": 16222,
            "zones": ["DMA32", "Normal"],
        }
    ]
    assert doc["cause"] == {
        "kind": "unknown",
        "stranded_share": {},
        "explanation": "pagetypeinfo unavailable (it is root-only): cause unknown",
    }
    assert [(p["action"], p["arg"]) for p in doc["plan"]] == [
        ("compact", None),
        ("drop-caches", 1),
        ("drop-caches", 2),
    ]
    assert len(doc["gaps"]) == 6
    assert doc["message"].startswith("Free memory is fragmented")


def test_check_json_keys_are_stable(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(capsys, "check", "--proc-root", VM, "--sys-root", NOSYS, "--output", "json")
    doc = json.loads(out)
    # schema_version 1: keys are only ever added, so these must all stay
    assert set(doc) >= {
        "schema_version",
        "source",
        "verdict",
        "reason",
        "message",
        "order",
        "exhausted",
        "cause",
        "numa_nodes",
        "zones",
        "plan",
        "gaps",
    }
    assert set(doc["zones"][0]) >= {
        "node",
        "zone",
        "free_blocks",
        "free_pages",
        "managed_pages",
        "workload",
        "blocks_at_order",
        "unusable_index",
        "fragmentation_index",
        "watermark_pages",
        "exhausted",
    }


def test_check_vm618_is_healthy(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "check", "--proc-root", VM, "--sys-root", NOSYS)
    assert (code, err) == (0, "")
    assert "Verdict: HEALTHY (ContiguousMemoryAvailable)" in out
    assert "Would do: nothing." in out
    code, out, _ = run(capsys, "check", "--proc-root", VM, "--sys-root", NOSYS, "--output", "json")
    doc = json.loads(out)
    assert (code, doc["verdict"], doc["plan"]) == (0, "healthy", [])
    assert [z["managed_pages"] for z in doc["zones"]] == [3840, 772917, 1245184]
    assert [z["watermark_pages"] for z in doc["zones"]] == [48, 9686, 15607]


def test_check_at_risk_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    """The seed at order 3: 178 + 222 = 400 blocks, between 64 and 512."""
    code, out, _ = run(capsys, "check", "--proc-root", SEED, "--sys-root", NOSYS, "--order", "3")
    assert code == 1
    assert "Verdict: AT-RISK (ContiguousMemoryLow)" in out
    assert out.splitlines()[0].endswith("target order 3 (32 KiB blocks)")


def test_check_unmovable_one_attempt_then_the_operators_call(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = run(
        capsys,
        "check",
        "--proc-root",
        str(PROC / "fb-prod-2node-4.0-fragmented"),
        "--sys-root",
        NOSYS,
    )
    assert code == 2
    assert "Cause: unmovable: " in out
    assert "  1. drop-caches=1: one attempt" in out and "  2. compact: one attempt" in out
    assert "  then nothing more: draining or rebooting the node is the operator's call." in out


def test_check_missing_buddyinfo_exits_3(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, err = run(capsys, "check", "--proc-root", str(tmp_path), "--sys-root", NOSYS)
    assert (code, out) == (3, "")
    assert err == (
        f"memfrag-agent check: {tmp_path}/buddyinfo: cannot read: No such file or directory\n"
    )


@pytest.mark.parametrize("tree", ["kvm-2node-6.6-cma-isolate", "ppc64-2node-2.6.20"])
def test_check_zoneinfo_only_fixture_exits_3(capsys: pytest.CaptureFixture[str], tree: str) -> None:
    code, _, err = run(capsys, "check", "--proc-root", str(PROC / tree), "--sys-root", NOSYS)
    assert code == 3
    assert f"{PROC / tree}/buddyinfo: cannot read" in err


def test_check_malformed_buddyinfo_exits_3(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "buddyinfo").write_text(
        "Node 0, zone      DMA      1      0      1\nNode 0, zone   Normal   1163   x   932\n"
    )
    code, out, err = run(capsys, "check", "--proc-root", str(tmp_path), "--sys-root", NOSYS)
    assert (code, out) == (3, "")
    assert err.startswith(f"memfrag-agent check: {tmp_path}/buddyinfo:2: free-block counts")


def test_check_malformed_optional_file_exits_3(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "buddyinfo").write_text((PROC / "seed-incident" / "buddyinfo").read_text())
    (tmp_path / "vmstat").write_text("nr_free_pages 1\nbroken\n")
    code, _, err = run(capsys, "check", "--proc-root", str(tmp_path), "--sys-root", NOSYS)
    assert code == 3
    assert f"{tmp_path}/vmstat:2: expected 'name value'" in err


@pytest.mark.parametrize(
    "argv",
    [
        ["check", "--bogus"],
        ["check", "--output", "xml"],
        ["check", "--order", "four"],
        ["frobnicate"],
        [],
        ["scan-log", "a", "b"],
    ],
)
def test_bad_usage_exits_3_not_2(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    code, out, err = run_exit(capsys, *argv)
    assert code == 3
    assert out == ""
    assert "error:" in err


@pytest.mark.parametrize("command", ["check", "remediate"])
@pytest.mark.parametrize("order", ["-1", "0", "14"])
def test_order_out_of_range_exits_3(
    capsys: pytest.CaptureFixture[str], command: str, order: str
) -> None:
    """The config's range (agent.config.model.LOWEST_ORDER..HIGHEST_ORDER), for both commands."""
    extra = ["--action", "compact", "--dry-run"] if command == "remediate" else []
    code, out, err = run(capsys, command, "--proc-root", SEED, *extra, "--order", order)
    assert (code, out) == (3, "")
    assert err == "memfrag-agent: --order must be between 1 and 13\n"


def test_the_largest_order_of_arm64_64k_is_accepted(capsys: pytest.CaptureFixture[str]) -> None:
    """Order 13 exists on arm64 with 64 KiB pages; on this x86 snapshot (orders 0..10) the
    assessment says it is above the kernel's largest order instead of refusing the flag."""
    argv = ["check", "--proc-root", SEED, "--sys-root", NOSYS, "--order", "13", "--output", "json"]
    _, out, err = run(capsys, *argv)
    assert "--order must be" not in err
    assert "order 13 is above this kernel's largest order 10" in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_exit(capsys, "--version")
    assert code == 0
    assert out.startswith("memfrag-agent ")


# --- --config -------------------------------------------------------------------------------------


def test_invalid_config_exits_3_naming_the_key(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text("reporting:\n  taintt_key: memfrag.dev/x\n")
    code, out, err = run(capsys, "check", "--proc-root", SEED, "--config", str(cfg))
    assert (code, out) == (3, "")
    assert err.startswith(f"memfrag-agent check: {cfg}: reporting.taintt_key: unknown key")


def test_config_wrong_type_exits_3(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text("assessment:\n  at_risk_below_blocks: lots\n")
    code, _, err = run(capsys, "check", "--proc-root", SEED, "--config", str(cfg))
    assert code == 3
    assert f"{cfg}: assessment.at_risk_below_blocks: must be an integer" in err


def test_config_invalid_yaml_exits_3(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text("assessment: [\n")
    code, _, err = run(capsys, "check", "--proc-root", SEED, "--config", str(cfg))
    assert code == 3
    assert f"{cfg}: not valid YAML" in err


def test_missing_config_exits_3(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(
        capsys, "check", "--proc-root", SEED, "--config", str(tmp_path / "absent.yaml")
    )
    assert code == 3
    assert err == (
        f"memfrag-agent check: {tmp_path}/absent.yaml: cannot read config: "
        "No such file or directory\n"
    )


def test_config_is_applied(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        "assessment:\n  at_risk_below_blocks: 100000\n"
        'remediation:\n  mode: "on"\n  allow_drop_caches: false\n'
    )
    code, out, _ = run(
        capsys, "check", "--proc-root", VM, "--sys-root", NOSYS, "--config", str(cfg)
    )
    assert code == 1  # 49004 blocks < 100000: at-risk
    assert "Verdict: AT-RISK (ContiguousMemoryLow)" in out
    code, out, _ = run(
        capsys, "check", "--proc-root", SEED, "--sys-root", NOSYS, "--config", str(cfg)
    )
    assert code == 2
    assert "Would do (remediation mode on)" in out
    assert "drop-caches" not in out


# --- scan-log -------------------------------------------------------------------------------------

MYSQLD = "mysqld: page allocation failure. order:4, mode:0x10c0d0"


def test_scan_log_one_finding(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    log = tmp_path / "kern.log"
    log.write_text(f"some unrelated line\n{MYSQLD}\nanother line\n")
    code, out, err = run(capsys, "scan-log", str(log))
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert len(lines) == 1
    finding = json.loads(lines[0])
    assert (finding["kind"], finding["order"], finding["process"], finding["mode"]) == (
        "page_allocation_failure",
        4,
        "mysqld",
        "0x10c0d0",
    )
    assert finding["text"] == MYSQLD


def test_scan_log_no_findings(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    log = tmp_path / "quiet.log"
    log.write_text("eth0: link up\n")
    assert run(capsys, "scan-log", str(log)) == (0, "", "")


def test_scan_log_mixed_fixture(capsys: pytest.CaptureFixture[str]) -> None:
    path = FIXTURES / "logs" / "mixed.log"
    code, out, err = run(capsys, "scan-log", str(path))
    assert (code, err) == (0, "")
    docs = [json.loads(line) for line in out.splitlines()]
    assert all(isinstance(d, dict) for d in docs)
    with open(path, "rb") as fh:
        expected = [f.to_json() for f in scan(fh)]
    findings = [d for d in docs if d["kind"] != "signature"]
    assert [{k: d[k] for k in e} for d, e in zip(findings, expected, strict=True)] == json.loads(
        json.dumps(expected)
    )  # one object per finding, in order, each with its known signatures added
    assert [d["signatures"][0]["id"] for d in docs if d["kind"] == "signature"] == [
        "runc-exit-status-6"
    ]
    seen = {(d["kind"], d["order"], d["process"]) for d in findings}
    assert ("page_allocation_failure", 4, "mysqld") in seen
    assert ("page_allocation_failure", 5, "dockerd") in seen
    assert ("page_allocation_failure", 6, "runc:[1:CHILD]") in seen


def test_scan_log_stdin(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    stdin = io.TextIOWrapper(io.BytesIO(f"{MYSQLD}\n".encode()), encoding="utf-8")
    monkeypatch.setattr(sys, "stdin", stdin)
    code, out, _ = run(capsys, "scan-log", "-")
    assert code == 0
    assert [json.loads(line)["order"] for line in out.splitlines()] == [4]


def test_scan_log_missing_file_exits_3(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, err = run(capsys, "scan-log", str(tmp_path / "absent.log"))
    assert (code, out) == (3, "")
    assert err == (
        f"memfrag-agent scan-log: {tmp_path}/absent.log: cannot read: No such file or directory\n"
    )


class _CapturedAgent:
    """Stands in for the daemon: records what `run` built it with, runs nothing."""

    seen: ClassVar[dict[str, Any]] = {}

    def __init__(self, node: str, kube: object, config: object, reader: object, **kw: Any) -> None:
        type(self).seen = {"node": node, **kw}

    def start(self) -> None:
        pass

    def run(self) -> int:
        return 0


@pytest.mark.parametrize(
    ("argv", "env", "namespace"),
    [
        (["--namespace", "from-flag"], {"POD_NAMESPACE": "kube-system"}, "from-flag"),
        ([], {"POD_NAMESPACE": "kube-system"}, "kube-system"),
        ([], {}, "memfrag-system"),
        ([], {"POD_NAMESPACE": ""}, "memfrag-system"),
    ],
)
def test_run_passes_the_lease_namespace_to_the_agent(
    monkeypatch: pytest.MonkeyPatch, argv: list[str], env: dict[str, str], namespace: str
) -> None:
    """Installed outside memfrag-system, the agent must look for its Leases in its own namespace
    (the chart sets POD_NAMESPACE): before the fix `run` never passed it and got 403s."""
    import agent.daemon.loop
    import agent.kube.client

    monkeypatch.setattr(agent.daemon.loop, "Agent", _CapturedAgent)
    monkeypatch.setattr(
        agent.kube.client.Kube, "from_environment", staticmethod(lambda *_a: object())
    )
    for key in ("POD_NAMESPACE", "POD_NAME", "POD_UID"):
        monkeypatch.delenv(key, raising=False)
    for key, value in {"NODE_NAME": "node-a", **env}.items():
        monkeypatch.setenv(key, value)
    assert main(["run", "--proc-root", VM, "--sys-root", NOSYS, "--log-format", "text", *argv]) == 0
    assert _CapturedAgent.seen == {
        "node": "node-a",
        "namespace": namespace,
        "holder": None,
        "cgroup_root": "/sys/fs/cgroup",
    }


@pytest.mark.parametrize(
    ("argv", "env", "holder"),
    [
        ([], {"POD_NAME": "memfrag-agent-x7k2p", "POD_UID": "9f1c"}, "memfrag-agent-x7k2p_9f1c"),
        ([], {"POD_NAME": "memfrag-agent-x7k2p"}, "memfrag-agent-x7k2p"),
        (["--pod-name", "p", "--pod-uid", "u"], {"POD_NAME": "env", "POD_UID": "e"}, "p_u"),
        ([], {}, None),  # outside a pod: the daemon uses the node name and its pid
    ],
)
def test_run_holds_leases_as_the_pod_not_the_node(
    monkeypatch: pytest.MonkeyPatch, argv: list[str], env: dict[str, str], holder: str | None
) -> None:
    """Two pods with one NODE_NAME (a maxSurge rollout) shared a Lease slot and compacted at
    once: the holder is the pod (POD_NAME, POD_UID from the chart's downward API)."""
    import agent.daemon.loop
    import agent.kube.client

    monkeypatch.setattr(agent.daemon.loop, "Agent", _CapturedAgent)
    monkeypatch.setattr(
        agent.kube.client.Kube, "from_environment", staticmethod(lambda *_a: object())
    )
    for key in ("POD_NAME", "POD_UID"):
        monkeypatch.delenv(key, raising=False)
    for key, value in {"NODE_NAME": "node-a", **env}.items():
        monkeypatch.setenv(key, value)
    assert main(["run", "--proc-root", VM, "--sys-root", NOSYS, "--log-format", "text", *argv]) == 0
    assert _CapturedAgent.seen["holder"] == holder


def test_run_without_a_node_name_exits_3(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("NODE_NAME", raising=False)
    assert main(["run", "--log-format", "text"]) == 3
    assert "no node name" in capsys.readouterr().err


def test_check_refuses_a_hostile_config_clearly(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The 397-byte alias bomb under a typed key: exit 3 with one short line, at once."""
    anchors = ["&l0 [" + ",".join(["lol"] * 9) + "]"]
    anchors += [f"&l{i} [" + ",".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, 9)]
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"assessment:\n  target_order: [{', '.join(anchors)}]\n")
    code, out, err = run(capsys, "check", "--proc-root", SEED, "--config", str(cfg))
    assert (code, out) == (3, "")
    assert err == f"memfrag-agent check: {cfg}: line 2: YAML aliases (*name) are not allowed\n"


def test_run_standalone_builds_the_agent_without_an_api_server(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`run --standalone` needs neither NODE_NAME nor Kubernetes credentials: the Agent gets no
    Kube (the same loop with the kube parts absent), and the node is named by the hostname."""
    import socket

    import agent.daemon.loop
    import agent.kube.client

    built: list[object] = []

    class Captured(_CapturedAgent):
        def __init__(self, node: str, kube: object, config: object, reader: object, **kw: Any):
            built.append(kube)
            super().__init__(node, kube, config, reader, **kw)

    def no_credentials(*_a: object) -> object:
        raise AssertionError("standalone must not load Kubernetes credentials")

    monkeypatch.setattr(agent.daemon.loop, "Agent", Captured)
    monkeypatch.setattr(agent.kube.client.Kube, "from_environment", staticmethod(no_credentials))
    monkeypatch.delenv("NODE_NAME", raising=False)
    argv = ["run", "--standalone", "--proc-root", VM, "--sys-root", NOSYS, "--log-format", "text"]
    assert main(argv) == 0
    assert built == [None] and Captured.seen["node"] == socket.gethostname()
