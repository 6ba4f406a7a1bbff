"""Inputs more than one command reads: a kernel log from a file or stdin, this kernel's version."""

from __future__ import annotations

import sys
from typing import BinaryIO

from agent.assess.signatures import Version, parse_version
from agent.base.errors import MemfragError
from agent.base.files import read_text
from agent.kernel.procfs import ProcReader


def kernel_version(reader: ProcReader) -> Version | None:
    try:
        return parse_version(read_text(reader.proc / "sys" / "kernel" / "osrelease", limit=256))
    except OSError:
        return None


def open_log(path: str) -> BinaryIO:
    """A log file, or standard input for -; a MemfragError names what cannot be read."""
    if path == "-":
        return sys.stdin.buffer
    try:
        return open(path, "rb")
    except OSError as exc:
        raise MemfragError(f"{path}: cannot read: {exc.strerror or exc}") from exc
