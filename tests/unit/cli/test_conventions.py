"""The command line's conventions on every command: help on every option, exit codes in each
--help (from agent.cli.common.EXIT_CODES), -o table|wide|json|yaml, --context and -n where the
cluster is involved, errors on stderr, run's start-up failures as one JSON line; and the kubectl
plugin (`kubectl memfrag`) on the same read as `status`, against the in-memory API."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.cli import kubectl
from agent.cli.common import EXIT_CODES
from agent.cli.main import build_parser, main
from tests.unit.cli.test_cli import NOSYS, SEED, VM
from tests.unit.kube.test_admin import KEY, cluster

PARSERS = {"memfrag-agent": build_parser, "kubectl memfrag": kubectl.build_parser}


def subcommands(p: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            yield from action.choices.items()


def helpless(p: argparse.ArgumentParser, where: str = "") -> list[str]:
    """Every option and positional, of the parser and its subcommands, that has no help."""
    out = [
        f"{where}{'/'.join(a.option_strings) or a.dest}"
        for a in p._actions
        if not isinstance(a, argparse._SubParsersAction) and not a.help
    ]
    for name, sub in subcommands(p):
        out += helpless(sub, f"{where}{name} ")
    return out


def test_the_walk_finds_an_option_without_help() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--said", help="x")
    p.add_argument("--unsaid")
    assert helpless(p) == ["--unsaid"]


@pytest.mark.parametrize("prog", sorted(PARSERS))
def test_every_option_has_help(prog: str) -> None:
    assert helpless(PARSERS[prog]()) == []


@pytest.mark.parametrize("prog", sorted(PARSERS))
def test_every_commands_help_lists_its_exit_codes(prog: str) -> None:
    commands = dict(subcommands(PARSERS[prog]()))
    assert commands
    for name, sub in commands.items():
        text = sub.format_help()
        assert "exit codes:" in text, name
        for code, meaning in EXIT_CODES[name]:
            assert f"  {code}  {meaning}" in text, (name, code)


def test_help_goes_to_stdout_and_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["check", "--help"])
    out, err = capsys.readouterr()
    assert info.value.code == 0 and "exit codes:\n  0  healthy\n" in out and err == ""


def test_check_yaml_is_the_json_document(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--proc-root", SEED, "--sys-root", NOSYS, "-o", "json"]) == 2
    as_json = json.loads(capsys.readouterr().out)
    assert main(["check", "--proc-root", SEED, "--sys-root", NOSYS, "-o", "yaml"]) == 2
    assert yaml.safe_load(capsys.readouterr().out) == as_json
    assert main(["check", "--proc-root", SEED, "--sys-root", NOSYS, "-o", "table"]) == 2
    table = capsys.readouterr().out
    assert main(["check", "--proc-root", SEED, "--sys-root", NOSYS, "-o", "wide"]) == 2
    assert capsys.readouterr().out == table  # check has no extra columns: wide is the table


@pytest.mark.parametrize(
    "argv",
    [
        ["ready", "--order", "4", "--blocks", "1", "--proc-root", VM, "--sys-root", NOSYS],
        ["remediate", "--action", "compact", "--dry-run", "--proc-root", VM, "--sys-root", NOSYS],
    ],
)
def test_yaml_and_json_agree_on_every_printing_command(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    main([*argv, "-o", "json"])
    as_json = json.loads(capsys.readouterr().out)
    main([*argv, "-o", "yaml"])
    assert yaml.safe_load(capsys.readouterr().out) == as_json


def test_scan_log_streams_every_format(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    log = tmp_path / "k.log"
    log.write_text("<4>[ 1.0] mysqld: page allocation failure. order:4, mode:0x10c0d0\n")
    assert main(["scan-log", str(log)]) == 0  # JSON Lines stays the default
    line = json.loads(capsys.readouterr().out)
    assert main(["scan-log", str(log), "-o", "yaml"]) == 0
    assert list(yaml.safe_load_all(capsys.readouterr().out)) == [line]
    assert main(["scan-log", str(log), "-o", "table"]) == 0
    head, row = capsys.readouterr().out.splitlines()
    assert head.split()[:3] == ["KIND", "ORDER", "PROCESS"]
    assert row.split()[:3] == ["page_allocation_failure", "4", "mysqld"]
    assert main(["scan-log", str(log), "-o", "wide"]) == 0
    assert "SIGNATURES" in capsys.readouterr().out.splitlines()[0]


# --- the cluster commands against the in-memory API ------------------------------------------


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str | None, str | None]]:
    """Kube.from_environment answers with the in-memory cluster; the calls' (kubeconfig,
    context) are recorded."""
    import agent.kube.client

    seen: list[tuple[str | None, str | None]] = []
    kube = cluster()

    def from_environment(kubeconfig: str | None = None, context: str | None = None) -> Any:
        seen.append((kubeconfig, context))
        return kube

    monkeypatch.setattr(agent.kube.client.Kube, "from_environment", staticmethod(from_environment))
    return seen


def plugin(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = kubectl.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_plugin_nodes_table_and_context(
    capsys: pytest.CaptureFixture[str], api: list[tuple[str | None, str | None]]
) -> None:
    code, out, err = plugin(capsys, "nodes", "--context", "prod", "--kubeconfig", "/k", "-n", "ns")
    assert (code, err) == (0, "")
    assert api == [("/k", "prod")]
    lines = out.splitlines()
    assert lines[0].split() == [
        "NODE", "NUMA", "VERDICT", "BLOCKS", "ORDER", "CAUSE", "TAINT", "LAST", "ACTION", "STUCK"
    ]  # fmt: skip
    n1 = [line.split() for line in lines if line.startswith("n1 ")]
    assert [r[1:3] for r in n1] == [["0", "fragmented"], ["1", "fragmented"]]
    assert n1[0][5:7] == ["unmovable", "yes"] and n1[0][-1] == "2"
    assert "drop-caches=1 no_effect" in lines[1]


def test_plugin_nodes_json_and_wide(
    capsys: pytest.CaptureFixture[str], api: list[tuple[str | None, str | None]]
) -> None:
    code, out, _ = plugin(capsys, "nodes", "-o", "json", "-n", "ns")
    rows = json.loads(out)["nodes"]
    assert code == 0 and {r["node"] for r in rows} == {"n1", "n2", "old"}
    _, wide, _ = plugin(capsys, "nodes", "-o", "wide", "-n", "ns")
    assert wide.splitlines()[0].split()[-3:] == ["MEMORYFRAGMENTED", "REASON", "UNREMEDIABLE"]


def test_plugin_describe_and_events(
    capsys: pytest.CaptureFixture[str], api: list[tuple[str | None, str | None]]
) -> None:
    code, out, _ = plugin(capsys, "describe", "n1", "-n", "ns")
    assert code == 0
    assert "Condition:  MemoryFragmented=True" in out
    assert "Unremediable:  MemoryFragmentationUnremediable=True" in out
    assert f"Taint:  {KEY}=true:NoSchedule" in out and "NodeTainted" in out
    code, out, _ = plugin(capsys, "events", "-o", "yaml")
    assert code == 0
    assert yaml.safe_load(out)["events"][0]["reason"] == "FragmentationDetected"


def test_plugin_errors_go_to_stderr_with_exit_3(
    capsys: pytest.CaptureFixture[str], api: list[tuple[str | None, str | None]]
) -> None:
    code, out, err = plugin(capsys, "describe", "nowhere")
    assert (code, out) == (3, "")
    assert err.startswith("kubectl memfrag describe: GET /api/v1/nodes/nowhere: 404")


def test_status_and_cleanup_take_the_cluster_options(
    capsys: pytest.CaptureFixture[str], api: list[tuple[str | None, str | None]]
) -> None:
    assert main(["status", "--context", "c1", "-n", "ns", "-o", "wide"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[-2:] == ["UNREMEDIABLE", "MESSAGE"]
    assert (
        main(
            ["cleanup", "--context", "c2", "-n", "ns", "--taint-effect", "NoSchedule", "-o", "json"]
        )
        == 0
    )
    assert (
        "node/n1: removed taint memfrag.dev/fragmented:NoSchedule"
        in json.loads(capsys.readouterr().out)["done"]
    )
    assert api == [(None, "c1"), (None, "c2")]


# --- run's start-up failures ----------------------------------------------------------------


def test_run_says_a_bad_config_in_one_json_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NODE_NAME", "n1")
    bad = tmp_path / "config.yaml"
    bad.write_text("assessment: {target_order: 99}\n")
    code = main(["run", "--config", str(bad), "--proc-root", VM, "--log-format", "json"])
    out, err = capsys.readouterr()
    assert (code, out) == (3, "")
    lines = err.splitlines()
    assert len(lines) == 1
    doc = json.loads(lines[0])
    assert doc["level"] == "error" and doc["msg"] == "cannot start"
    assert "assessment.target_order" in doc["error"] and str(bad) in doc["error"]


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--kubeconfig", "/nonexistent/kubeconfig"], "cannot load Kubernetes credentials"),
        (["--proc-root", "/nonexistent/proc"], "/nonexistent/proc"),
    ],
)
def test_run_says_missing_credentials_or_proc_in_one_json_line(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    says: str,
) -> None:
    monkeypatch.setenv("NODE_NAME", "n1")
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    code = main(["run", "--proc-root", VM, "--sys-root", NOSYS, *argv, "--log-format", "json"])
    out, err = capsys.readouterr()
    assert (code, out) == (3, "")
    (line,) = err.splitlines()
    assert json.loads(line)["msg"] == "cannot start" and says in json.loads(line)["error"]


def test_run_without_a_node_name_in_text_says_it_too(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NODE_NAME", raising=False)
    assert main(["run", "--log-format", "text"]) == 3
    (line,) = capsys.readouterr().err.splitlines()
    assert "cannot start" in line and 'error="no node name' in line


def test_run_says_a_taken_metrics_port_in_one_json_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The metrics port is taken when the listener starts, after the checks: still one line."""
    import socket

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        "sources: {kmsg_enabled: false}\n"
        f"reporting: {{metrics_port: {port}, metrics_address: 127.0.0.1}}\n"
    )
    try:
        argv = ["run", "--standalone", "--config", str(cfg), "--proc-root", VM]
        code = main([*argv, "--sys-root", NOSYS, "--log-format", "json"])
    finally:
        taken.close()
    out, err = capsys.readouterr()
    assert (code, out) == (3, "")
    (line,) = err.splitlines()
    doc = json.loads(line)
    assert doc["msg"] == "cannot start" and f"127.0.0.1:{port}" in doc["error"]
