"""Structured log lines: one JSON object per line, with the extra fields a call passes.

Each value is said once: `msg` is a constant sentence ("remediation done"), the values are
fields (`extra=`), so a query selects on msg and reads the fields. The text format, for people,
appends the fields as key=value after the sentence."""

from __future__ import annotations

import json
import logging
import time

_STD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
log = logging.getLogger("memfrag.agent")


def fields(record: logging.LogRecord) -> dict[str, object]:
    """The extra fields a call passed."""
    return {k: v for k, v in vars(record).items() if k not in _STD}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update(fields(record))
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        extra = " ".join(f"{k}={json.dumps(v, default=str)}" for k, v in fields(record).items())
        line = super().format(record)
        return f"{line} {extra}" if extra else line


def setup(fmt: str = "json", level: str = "INFO") -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def fatal(exc: BaseException) -> None:
    """A start-up failure: one line in the configured format, the error as a field."""
    log.error("cannot start", extra={"error": str(exc) or type(exc).__name__})
