"""The config file as mounted from a ConfigMap, reloaded when it changes.

kubelet swaps ConfigMap volumes atomically through a `..data` symlink, so the file's inode and
mtime change while its path stays: we stat the path (following links) each poll. An invalid new
file keeps the last good config and says why; it never falls back to defaults silently.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from agent.config import Config, parse_config
from agent.errors import ConfigError
from agent.procfs import read_text


@dataclass(frozen=True)
class Reload:
    changed: bool
    error: str | None = None


class ConfigFile:
    def __init__(self, path: str | None) -> None:
        self.path = path
        self._stamp: tuple[int, int, int] | None = None
        self.config = self._load()

    def _stat(self) -> tuple[int, int, int] | None:
        if self.path is None:
            return None
        st = os.stat(self.path)
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _load(self) -> Config:
        if self.path is None:
            return Config()
        try:
            self._stamp = self._stat()
            return parse_config(read_text(Path(self.path)), self.path)
        except OSError as exc:
            raise ConfigError(self.path, "", f"cannot read: {exc.strerror or exc}") from exc

    def reload_if_changed(self) -> Reload:
        """Check the file; on a change, take it if valid, else keep the last good config."""
        if self.path is None:
            return Reload(False)
        try:
            stamp = self._stat()
        except OSError as exc:
            return Reload(False, f"{self.path}: cannot stat ({exc.strerror}); keeping last good")
        if stamp == self._stamp:
            return Reload(False)
        self._stamp = stamp
        try:
            self.config = parse_config(read_text(Path(self.path)), self.path)
        except (ConfigError, OSError) as exc:
            return Reload(True, f"{exc}; keeping the last good config")
        return Reload(True)
