"""/proc/zoneinfo: watermarks and managed pages per zone.

Watermarks tell fragmentation from exhaustion: with free pages near the high watermark the
kernel is short of memory, not of contiguity, and compaction cannot help. Managed pages tell
which zones really serve the workload.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from agent.base.errors import ParseError
from agent.kernel.limits import check_zone, lines
from agent.kernel.numbers import is_uint

_HEAD = re.compile(r"^Node\s+([0-9]{1,9}),\s*zone\s+(\S+)\s*$")
_FIELDS = ("free", "min", "low", "high", "spanned", "present", "managed")


@dataclass(frozen=True)
class ZoneWatermarks:
    node: int
    zone: str
    free: int
    min: int
    low: int
    high: int
    spanned: int
    present: int
    managed: int
    start_pfn: int | None = None  # where the zone begins: compaction events name zones by it


def parse_zoneinfo(text: str, source: str = "/proc/zoneinfo") -> tuple[ZoneWatermarks, ...]:
    """Collect the fields we need per zone; other lines (per-node stats, pagesets) are ignored."""
    zones: list[ZoneWatermarks] = []
    current: tuple[int, str, int] | None = None  # node, zone, line of the zone header
    values: dict[str, int] = {}
    start: int | None = None

    def close() -> None:
        if current is None:
            return
        missing = [f for f in _FIELDS if f not in values and f != "managed"]
        if missing:
            raise ParseError(source, current[2], f"zone {current[1]} lacks {', '.join(missing)}")
        # Kernels before 2.6.37 print no 'managed'; 'present' is the closest they give.
        fields = {f: values.get(f, values["present"]) for f in _FIELDS}
        zones.append(ZoneWatermarks(current[0], current[1], **fields, start_pfn=start))

    for lineno, line in enumerate(lines(text), 1):
        m = _HEAD.match(line.strip()) if "Node" in line else None  # the test saves a regex a line
        if m:
            close()
            check_zone(int(m.group(1)), m.group(2), len(zones), source, lineno)
            current, values, start = (int(m.group(1)), m.group(2), lineno), {}, None
            continue
        parts = line.split()
        if current is None or not parts:
            continue
        if len(parts) == 2 and parts[0] == "start_pfn:" and is_uint(parts[1]):
            start = int(parts[1])
        if parts[:2] == ["pages", "free"]:
            parts = parts[1:]
        if len(parts) == 2 and parts[0] in _FIELDS and parts[0] not in values:
            if not is_uint(parts[1]):
                raise ParseError(source, lineno, f"{parts[0]} is not an integer: {parts[1]!r:.40}")
            values[parts[0]] = int(parts[1])
    close()
    if not zones:
        raise ParseError(source, None, "no 'Node N, zone NAME' sections")
    return tuple(zones)
