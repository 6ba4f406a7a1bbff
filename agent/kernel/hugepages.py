"""The hugepage pools and the THP settings, read under a sys root that is a parameter.

`/sys/kernel/mm/hugepages/hugepages-<size>kB/` holds one pool per page size (nr_hugepages,
free_hugepages, resv_hugepages, surplus_hugepages, nr_overcommit_hugepages), and
`/sys/devices/system/node/node<N>/hugepages/hugepages-<size>kB/` the same pool per NUMA node
(nr, free, surplus only). `/sys/kernel/mm/transparent_hugepage/{enabled,defrag}` say whether THP
faults may compact. What is missing (no hugetlbfs, no NUMA, a snapshot without /sys) is a gap,
never an error: the readiness report is narrower, not wrong.
"""

from __future__ import annotations

import re
from pathlib import Path

from agent.base.errors import ParseError
from agent.base.files import read_text
from agent.kernel.hugepageinfo import HugePages, HugePool, selected_word
from agent.kernel.limits import MAX_NUMA_NODES
from agent.kernel.numbers import is_uint
from agent.kernel.procfs import gap, optional

_POOL_DIR = re.compile(r"hugepages-([0-9]{1,12})kB")
_NODE_DIR = re.compile(r"node([0-9]{1,4})")
_GLOBAL_FILES = (
    "nr_hugepages",
    "free_hugepages",
    "resv_hugepages",
    "surplus_hugepages",
    "nr_overcommit_hugepages",
)
_NODE_FILES = ("nr_hugepages", "free_hugepages", "surplus_hugepages")
MAX_POOLS = 16  # page sizes per architecture: x86-64 has 2, arm64 up to 4; far above any


def _count(path: Path) -> int:
    text = read_text(path, limit=64).strip()
    if not is_uint(text):
        raise ParseError(str(path), 1, f"expected a count, got {text!r:.40}")
    return int(text)


def _pool(directory: Path, size_kib: int, node: int | None, gaps: list[str]) -> HugePool | None:
    names = _GLOBAL_FILES if node is None else _NODE_FILES
    values: dict[str, int | None] = {}
    for name in names:
        try:
            values[name] = _count(directory / name)
        except FileNotFoundError:
            values[name] = None
        except OSError as exc:
            gaps.append(gap(directory / name, exc))
            values[name] = None
    nr, free, surplus = (
        values["nr_hugepages"],
        values["free_hugepages"],
        values.get("surplus_hugepages"),
    )
    if nr is None or free is None:
        gaps.append(f"{directory}: no nr_hugepages/free_hugepages: pool ignored")
        return None
    return HugePool(
        size_kib=size_kib,
        node=node,
        nr=nr,
        free=free,
        surplus=surplus or 0,
        resv=values.get("resv_hugepages"),
        overcommit=values.get("nr_overcommit_hugepages"),
    )


def _pools_under(base: Path, node: int | None, gaps: list[str]) -> list[HugePool]:
    out: list[HugePool] = []
    try:
        entries = sorted(base.iterdir())
    except OSError as exc:
        gaps.append(gap(base, exc))
        return out
    for entry in entries:
        m = _POOL_DIR.fullmatch(entry.name)
        if m is None or not entry.is_dir():
            continue
        if len(out) >= MAX_POOLS:
            gaps.append(f"{base}: more than {MAX_POOLS} pool sizes: the rest ignored")
            break
        pool = _pool(entry, int(m.group(1)), node, gaps)
        if pool is not None:
            out.append(pool)
    return out


def read_hugepages(sys_root: str | Path = "/sys") -> HugePages:
    """Every pool, machine-wide and per NUMA node, and the THP modes. Malformed content is a
    ParseError naming the file; absence is a gap."""
    root = Path(sys_root)
    gaps: list[str] = []
    pools = _pools_under(root / "kernel" / "mm" / "hugepages", None, gaps)
    nodes = root / "devices" / "system" / "node"
    node_dirs: list[tuple[int, Path]] = []
    try:
        for entry in nodes.iterdir():
            m = _NODE_DIR.fullmatch(entry.name)
            if m is not None and int(m.group(1)) < MAX_NUMA_NODES:
                node_dirs.append((int(m.group(1)), entry))
    except OSError:
        gaps.append(f"{nodes}: not present (no per-NUMA-node pools)")
    node_gaps: list[str] = []
    for n, entry in sorted(node_dirs):
        if (entry / "hugepages").is_dir():
            pools += _pools_under(entry / "hugepages", n, node_gaps)
    gaps += node_gaps
    thp = root / "kernel" / "mm" / "transparent_hugepage"
    return HugePages(
        pools=tuple(pools),
        thp_enabled=optional(thp / "enabled", selected_word, gaps),
        thp_defrag=optional(thp / "defrag", selected_word, gaps),
        gaps=tuple(gaps),
    )


def pool_path(sys_root: str | Path, size_kib: int, node: int | None = None) -> Path:
    """The nr_hugepages file an operator writes to resize one pool."""
    root = Path(sys_root)
    base = (
        root / "kernel" / "mm" / "hugepages"
        if node is None
        else root / "devices" / "system" / "node" / f"node{node}" / "hugepages"
    )
    return base / f"hugepages-{size_kib}kB" / "nr_hugepages"
