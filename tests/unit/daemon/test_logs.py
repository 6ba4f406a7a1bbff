"""Each log field once: `msg` is a constant sentence, the values are fields (agent.daemon.logs).
A query selects on msg and reads the fields; nothing is said twice or only inside the text."""

from __future__ import annotations

import ast
import json
import logging
from pathlib import Path

import pytest

from agent.daemon.logs import JsonFormatter, TextFormatter
from agent.kube.errors import ApiError
from tests.unit.daemon.parts import FRAGMENTED
from tests.unit.daemon.test_daemon_loop import World, compaction_that_works

AGENT = Path(__file__).resolve().parents[3] / "agent"
LEVELS = {"debug", "info", "warning", "error", "exception", "critical", "log"}


def interpolated(path: Path, root: Path = AGENT) -> list[str]:
    """The log calls in a module whose message is not a constant string, or that pass %-args."""
    bad = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        if node.func.attr not in LEVELS or not isinstance(node.func.value, ast.Name):
            continue
        if node.func.value.id != "log":
            continue
        args = node.args[1:] if node.func.attr == "log" else node.args
        msg = args[0] if args else None
        constant = isinstance(msg, ast.Constant) or (
            isinstance(msg, ast.IfExp)
            and isinstance(msg.body, ast.Constant)
            and isinstance(msg.orelse, ast.Constant)
        )
        if not constant or len(args) > 1:
            bad.append(f"{path.relative_to(root)}:{node.lineno}")
    return bad


def test_the_scan_finds_an_interpolated_message(tmp_path: Path) -> None:
    src = 'log.info("fine", extra={"a": 1})\nlog.warning("x %s", y)\nlog.error(f"z {y}")\n'
    (tmp_path / "x.py").write_text(src)
    assert interpolated(tmp_path / "x.py", tmp_path) == ["x.py:2", "x.py:3"]


@pytest.mark.parametrize("room", ["daemon", "kube"])
def test_no_value_is_interpolated_into_a_message(room: str) -> None:
    files = sorted((AGENT / room).glob("*.py"))
    assert files
    bad = [b for f in files for b in interpolated(f)]
    assert bad == []


def records(caplog: pytest.LogCaptureFixture, msg: str) -> list[dict[str, object]]:
    return [json.loads(JsonFormatter().format(r)) for r in caplog.records if r.getMessage() == msg]


def test_representative_records_say_each_value_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    w = World(tmp_path, {"remediation": {"mode": "on"}})
    compaction_that_works(w)
    w.host.be(FRAGMENTED)
    with caplog.at_level(logging.INFO, logger="memfrag.agent"):
        w.tick()
        w.agent._api_failed("lease", ApiError("GET", "/x", 403, "forbidden"))
    (done,) = records(caplog, "remediation done")
    assert done["action"] == "compact" and done["result"] == "ok"
    assert done["blocks_after"] > done["blocks_before"]  # type: ignore[operator]
    (failed,) = records(caplog, "API request failed")
    assert failed["op"] == "lease" and failed["error"] == "GET /x: 403 forbidden"
    for doc in [done, failed]:
        values = [str(v) for k, v in doc.items() if k not in ("msg", "ts", "level", "logger")]
        assert not any(v and v in str(doc["msg"]) for v in values), doc


def test_the_text_format_appends_the_fields() -> None:
    r = logging.makeLogRecord({"msg": "config reloaded", "levelno": 20, "levelname": "INFO"})
    r.path = "/etc/memfrag/config.yaml"
    line = TextFormatter().format(r)
    assert line.endswith('config reloaded path="/etc/memfrag/config.yaml"')
