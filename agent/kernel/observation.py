"""What one look at the kernel saw: parsed, immutable, and honest about what it could not read."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from agent.kernel.buddyinfo import ZoneBlocks
from agent.kernel.pagetypeinfo import PageTypeInfo
from agent.kernel.psi import Pressure
from agent.kernel.zoneinfo import ZoneWatermarks


@dataclass(frozen=True)
class Observation:
    buddy: tuple[ZoneBlocks, ...]
    zoneinfo: tuple[ZoneWatermarks, ...] | None = None
    pagetype: PageTypeInfo | None = None
    vmstat: Mapping[str, int] | None = None
    meminfo: Mapping[str, int] | None = None
    pressure: Pressure | None = None
    sysctl: Mapping[str, int] = field(default_factory=dict)
    # buddyinfo counts pages, never bytes: the size comes from the live system (os.sysconf),
    # 4 KiB for a snapshot of unknown origin.
    page_size: int = 4096
    # Human-readable notes on inputs that were missing or unreadable: they narrow the report.
    gaps: tuple[str, ...] = ()
