"""The project's own errors: every bad input ends in one of these, naming what and where."""

from __future__ import annotations


class MemfragError(Exception):
    """Base of every error the agent raises on purpose."""


class ParseError(MemfragError):
    """A /proc file or log record did not have the expected shape."""

    def __init__(self, source: str, line: int | None, reason: str) -> None:
        self.source = source
        self.line = line
        self.reason = reason
        where = f"{source}:{line}" if line is not None else source
        super().__init__(f"{where}: {reason}")


class ConfigError(MemfragError):
    """The configuration is invalid; `path` names the offending key (e.g. `policy.cooldown`)."""

    def __init__(self, source: str, path: str, reason: str) -> None:
        self.source = source
        self.path = path
        self.reason = reason
        super().__init__(f"{source}: {path}: {reason}" if path else f"{source}: {reason}")
