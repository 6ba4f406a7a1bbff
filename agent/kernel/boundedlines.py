"""Lines of a log file or stream, each at most a bounded length.

`for line in file` reads a whole line whatever its length: a 1 GB line (a corrupt or hostile
log, or /dev/zero) took 2 GB. Kernel-log records are at most about 1 KiB and a journal JSON
entry a few KiB, so longer lines are skipped, said, and read past in bounded pieces.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import BinaryIO

MAX_LINE_BYTES = 64 << 10


def bounded_lines(
    stream: BinaryIO,
    source: str,
    on_skip: Callable[[str], None],
    limit: int = MAX_LINE_BYTES,
) -> Iterator[bytes]:
    """The stream's lines (with their newline); a line longer than `limit` bytes is not
    yielded: `on_skip` gets a message naming the source and line number instead."""
    lineno = 0
    while line := stream.readline(limit + 1):
        lineno += 1
        if len(line) > limit and not line.endswith(b"\n"):
            while (rest := stream.readline(limit + 1)) and not rest.endswith(b"\n"):
                pass
            on_skip(f"{source}:{lineno}: line longer than {limit} bytes: skipped")
            continue
        yield line


def split_chunk(pending: bytes, chunk: bytes, limit: int) -> tuple[list[bytes], bytes]:
    """A stream read in chunks: the complete lines of `pending + chunk` and what is left; a
    remainder longer than `limit` without a newline is dropped, not buffered."""
    *complete, rest = (pending + chunk).split(b"\n")
    return complete, (b"" if len(rest) > limit else rest)
