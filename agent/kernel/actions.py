"""The remediation actions as the kernel knows them: which file to write and what value. Pure:
the writes themselves are in agent.kernel.writes; the ladder (agent.decide) says which helps.

One parser for the action's name (`compact`, `compact-node=N`, `drop-caches=1|2|3`), shared by
the command line and anything else that reads one.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Protocol

from agent.base.errors import MemfragError


class ActionKind(StrEnum):
    """The three writes an operator does by hand; the value is the action's name on the CLI."""

    COMPACT_NODE = "compact-node"  # /sys/devices/system/node/nodeN/compact
    COMPACT = "compact"  # /proc/sys/vm/compact_memory
    DROP_CACHES = "drop-caches"  # /proc/sys/vm/drop_caches (after sync)


class KernelAction(Protocol):
    """What a write needs to know of a step (agent.decide.ladder.Step is one)."""

    @property
    def action(self) -> ActionKind: ...

    @property
    def arg(self) -> int | None: ...

    @property
    def name(self) -> str: ...


def parse_action(text: str) -> tuple[ActionKind, int | None]:
    """`compact`, `compact-node=N` or `drop-caches=1|2|3`; a MemfragError names the rest."""
    name, _, arg = text.partition("=")
    if name == "compact" and not arg:
        return ActionKind.COMPACT, None
    if name == "compact-node" and arg.isdigit() and len(arg) <= 4:
        return ActionKind.COMPACT_NODE, int(arg)
    if name == "drop-caches" and arg in ("1", "2", "3"):
        return ActionKind.DROP_CACHES, int(arg)
    raise MemfragError(f"--action {text!r}: expected compact, compact-node=N or drop-caches=1|2|3")


def target(step: KernelAction, proc_root: Path, sys_root: Path) -> tuple[Path, str]:
    """The file to write and the value, exactly as an operator would."""
    if step.action == ActionKind.COMPACT:
        return proc_root / "sys" / "vm" / "compact_memory", "1"
    if step.action == ActionKind.COMPACT_NODE:
        return sys_root / "devices" / "system" / "node" / f"node{step.arg}" / "compact", "1"
    if step.action == ActionKind.DROP_CACHES and step.arg in (1, 2, 3):
        return proc_root / "sys" / "vm" / "drop_caches", str(step.arg)
    raise ValueError(f"unknown step {step.name}")
