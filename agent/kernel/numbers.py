"""Integer fields as the kernel prints them: ASCII digits only.

str.isdigit() accepts '²' or '①', which int() then rejects with a ValueError; and a 5,000-digit
field would trip Python's int-conversion limit. Both must end as the parser's own error.
"""

from __future__ import annotations

MAX_DIGITS = 20  # 2**64 has 20 digits: no kernel counter is longer


def is_uint(text: str) -> bool:
    return 0 < len(text) <= MAX_DIGITS and text.isascii() and text.isdigit()


def is_int(text: str) -> bool:
    return is_uint(text[1:] if text.startswith("-") else text)
