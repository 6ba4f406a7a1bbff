"""Bounded text for messages built from input: never the repr of a whole hostile value.

A 397-byte YAML alias bomb expands to a tree whose repr is gigabytes; a 5,000-digit integer has
no str() at all (Python's int-conversion limit); a megabyte string would go into every log line
and Event. `excerpt` describes any value in at most about `limit` characters without walking it.
"""

from __future__ import annotations

MAX_EXCERPT = 60


def excerpt(value: object, limit: int = MAX_EXCERPT) -> str:
    """A short, safe rendering of `value`: scalars as repr (strings cut), containers by size."""
    if isinstance(value, str):
        if len(value) <= limit:
            return repr(value)
        return f"{value[:limit]!r}... ({len(value)} characters)"
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, int):
        if value.bit_length() <= 64:
            return repr(value)
        return f"an integer of {value.bit_length()} bits"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, bytes | bytearray):
        return f"{bytes(value[:limit])!r}" + (
            f"... ({len(value)} bytes)" if len(value) > limit else ""
        )
    if isinstance(value, dict):
        return f"a mapping of {len(value)} keys"
    if isinstance(value, list | tuple | set | frozenset):
        return f"a {type(value).__name__} of {len(value)} items"
    if isinstance(value, BaseException):
        text = str(value)  # exception messages are our own or the library's, but may quote input
        return f"{type(value).__name__}: {text[:limit]}" + ("..." if len(text) > limit else "")
    return f"a {type(value).__name__}"
