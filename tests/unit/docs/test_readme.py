"""The README documents every config key and every metric: a new one fails this test."""

from __future__ import annotations

import re
from pathlib import Path

from agent.config.model import config_docs

README = (Path(__file__).resolve().parents[3] / "README.md").read_text()
METRICS = (Path(__file__).resolve().parents[3] / "agent" / "daemon" / "metrics.py").read_text()


def test_every_config_key_is_documented() -> None:
    for key, default, _ in config_docs():
        assert f"| `{key}` | `{default}` |" in README, key


def test_every_metric_is_documented() -> None:
    names = set(re.findall(r'"(memfrag_[a-z_]+)"', METRICS))
    assert len(names) > 20
    for name in names:
        assert f"`{name}" in README, name


def test_readme_gives_the_two_commands() -> None:
    assert "make demo" in README and "make test" in README
