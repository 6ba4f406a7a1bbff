"""The hugepage pools and THP settings as read (agent.kernel.hugepages reads them): pure types,
so the assess room can judge them without importing a reader."""

from __future__ import annotations

import re
from dataclasses import dataclass

from agent.base.errors import ParseError


@dataclass(frozen=True)
class HugePool:
    """One pool: the machine's (`node` None) or one NUMA node's. None: the file is absent."""

    size_kib: int
    node: int | None
    nr: int
    free: int
    surplus: int
    resv: int | None = None
    overcommit: int | None = None


@dataclass(frozen=True)
class HugePages:
    pools: tuple[HugePool, ...]
    thp_enabled: str | None  # the bracketed word of transparent_hugepage/enabled
    thp_defrag: str | None
    gaps: tuple[str, ...] = ()

    def sizes_kib(self) -> tuple[int, ...]:
        return tuple(sorted({p.size_kib for p in self.pools}))

    def pool(self, size_kib: int, node: int | None) -> HugePool | None:
        for p in self.pools:
            if p.size_kib == size_kib and p.node == node:
                return p
        return None


def selected_word(text: str, source: str) -> str:
    """`always [madvise] never` -> `madvise`: the kernel brackets the mode in force."""
    m = re.search(r"\[([a-z+]{1,32})\]", text)
    if m is None:
        raise ParseError(source, 1, f"no [selected] mode in {text.strip()!r:.80}")
    return m.group(1)
