"""Loading the config file: the hardened YAML loader, `parse_config` over a file's text,
`read_config` over a path, and `load`, the one entry the CLI and the hot reload use.

Every failure is a ConfigError naming the source, the line or key, and a bounded excerpt of the
offending value: `check --config` exits 3, the daemon refuses to start, a reload keeps the last
good config.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from agent.base.errors import ConfigError, ParseError
from agent.base.excerpt import excerpt
from agent.base.files import read_text
from agent.config.model import Config, config_from_mapping

# The config has 30 keys in two levels; the chart renders it in under 2 KiB. These bounds leave
# room for comments and refuse what only an attack needs: an alias bomb (a few hundred bytes
# expanding to gigabytes), 10 KB of nesting (a RecursionError in the composer), huge integers.
MAX_CONFIG_BYTES = 64 << 10
MAX_DEPTH = 8
MAX_INT_CHARS = 500
_MERGE_TAG = "tag:yaml.org,2002:merge"


class _Refused(Exception):
    def __init__(self, mark: yaml.Mark | None, reason: str) -> None:
        super().__init__(reason)
        self.line = mark.line + 1 if mark is not None else None
        self.reason = reason


class _Loader(yaml.SafeLoader):
    """SafeLoader without aliases, without deep nesting and without huge integers."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            raise _Refused(self._mark(), "YAML aliases (*name) are not allowed")
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _Refused(self._mark(), f"nested deeper than {MAX_DEPTH} levels")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def _mark(self) -> yaml.Mark | None:
        event: yaml.Event = self.peek_event()  # type: ignore[no-untyped-call]
        mark: yaml.Mark | None = event.start_mark  # type: ignore[assignment]
        return mark

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        if len(node.value) > MAX_INT_CHARS:
            raise _Refused(node.start_mark, f"an integer of {len(node.value)} characters")
        return super().construct_yaml_int(node)


_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_yaml_int)


def _check_keys(loader: _Loader, node: yaml.Node, path: str) -> None:
    """Duplicate keys are an error (YAML says so; PyYAML silently keeps the last), merge keys
    (<<) too: each key of the file means exactly what it says once."""
    if isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _check_keys(loader, item, f"{path}[{i}]")
    if not isinstance(node, yaml.MappingNode):
        return
    first: dict[object, int] = {}
    for key_node, value_node in node.value:
        line = key_node.start_mark.line + 1
        if key_node.tag == _MERGE_TAG:
            raise _Refused(key_node.start_mark, "YAML merge keys (<<) are not allowed")
        if not isinstance(key_node, yaml.ScalarNode):
            raise _Refused(key_node.start_mark, "keys must be plain scalars")
        key = loader.construct_object(key_node)
        name = key if isinstance(key, str) and len(key) <= 40 else excerpt(key, 40)
        where = f"{path}.{name}" if path else str(name)
        if key in first:  # a scalar: hashable
            raise ConfigError("", where, f"duplicate key (lines {first[key]} and {line})")
        first[key] = line
        _check_keys(loader, value_node, where)


def parse_config(text: str, source: str = "<config>") -> Config:
    """Parse and validate a config file's text; every failure is a ConfigError naming the
    source, the line or key, and a bounded excerpt of the offending value."""
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigError(source, "", f"{len(text)} characters: larger than {MAX_CONFIG_BYTES}")
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            data = None
        else:
            _check_keys(loader, node, "")
            data = loader.construct_document(node)
    except _Refused as exc:
        where = f"line {exc.line}: " if exc.line is not None else ""
        raise ConfigError(source, "", f"{where}{exc.reason}") from None
    except ConfigError as exc:
        raise ConfigError(source, exc.path, exc.reason) from None
    except yaml.YAMLError as exc:
        message = str(exc)
        raise ConfigError(source, "", f"not valid YAML: {message[:500]}") from None
    finally:
        loader.dispose()
    return config_from_mapping(data, source)


def read_config(path: str) -> Config:
    """Read and validate a config file. Every failure is a ConfigError naming the file."""
    try:
        # The ConfigMap's file is a symlink (into ..data): follow it, but read only a regular
        # file and no more than a config may hold.
        text = read_text(Path(path), MAX_CONFIG_BYTES, follow_symlinks=True)
        return parse_config(text, path)
    except ConfigError:
        raise
    except OSError as exc:
        raise ConfigError(path, "", f"cannot read config: {exc.strerror or excerpt(exc)}") from exc
    except ParseError as exc:  # not a regular file, or too large
        raise ConfigError(path, "", exc.reason) from exc
    except Exception as exc:  # a bug of ours or of the YAML library: still a clear refusal
        raise ConfigError(path, "", f"cannot load: {excerpt(exc, 200)}") from exc


def load(path: str | None) -> Config:
    """The config of `check --config`, `run --config` and every reload: the file at `path`, or
    the defaults when none is given (never when a given file is bad: that is a ConfigError)."""
    return Config() if path is None else read_config(path)
