"""Reading a file that may be hostile: a /proc file of another machine's snapshot, the mounted
ConfigMap. Without blocking, without following a planted symlink, regular files only, bounded."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from agent.base.errors import ParseError

# Far above any real file (zoneinfo of 1,024 CPUs x 32 zones is about 5 MiB), far below what
# would hurt: a snapshot's 200 MB file is refused after reading 16 MiB, not held whole.
MAX_FILE_BYTES = 16 << 20
_CHUNK = 1 << 16


def read_text(path: Path, limit: int = MAX_FILE_BYTES, follow_symlinks: bool = False) -> str:
    """Read a /proc file whole (it must be read in one go to be coherent), safely.

    Snapshots come from other machines: a FIFO would block the open, /dev/zero never ends, a
    symlink would make another file's text appear in our errors. So: open without blocking and
    (by default) without following a final symlink, accept only a regular file, and read at most
    `limit` bytes. st_size is no guide: real /proc files report 0. A file that cannot be
    opened or is not a regular file is an OSError (whose strerror says which), so an optional
    file becomes a gap; one larger than `limit` is a ParseError naming it.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow_symlinks else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP and not follow_symlinks and os.path.islink(path):
            raise OSError(errno.ELOOP, "a symbolic link, not followed", str(path)) from exc
        raise
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise OSError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
        if not stat.S_ISREG(mode):
            raise OSError(errno.EINVAL, f"{_kind(mode)}, not a regular file", str(path))
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, min(_CHUNK, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise ParseError(str(path), None, f"larger than {limit} bytes: refused")
    finally:
        os.close(fd)
    return b"".join(chunks).decode("utf-8", errors="replace")


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "a special file"
