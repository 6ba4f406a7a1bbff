"""trace_pipe lines of our ftrace instance, parsed into typed frozen events.

Pure and total: `parse_line` takes any text and returns an event or None, never raises, because
one odd line (a comm with spaces, a field a newer kernel added, a torn read) must not stop the
reader. The shapes are this kernel's print formats (tests/fixtures/trace/ holds recorded lines):

    <comm>-<pid> [cpu] <flags> <secs>.<usecs>: <event>: <fields>

with an optional ``(tgid)`` column (option record-tgid) and no flags column (irq-info off). The
comm is what the kernel's saved_cmdlines remember: ``<...>`` when it forgot. A failed
allocation is an ``mm_page_alloc`` with no page: the format prints ``page=0000000000000000
pfn=0x0`` for pfn -1UL (see include/trace/events/kmem.h). ``CPU:N [LOST M EVENTS]`` says the
ring buffer overflowed.

GFP flags are printed by name, and the composite names (GFP_TRANSHUGE_LIGHT, and GFP_NOWAIT on
recent kernels) may include __GFP_NOWARN: `gfp_names` reads the value of every name from the
event's own format file, so "silent" means what THIS kernel means.
"""

from __future__ import annotations

import ast
import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass

MAX_LINE = 4096  # a trace_pipe line of these events is ~250 characters

_HEAD = re.compile(
    r"^\s*(?P<comm>.{1,16}?)-(?P<pid>[0-9]{1,10})\s+"
    r"(?:\(\s*(?:[0-9]{1,10}|-+)\)\s+)?"
    r"\[(?P<cpu>[0-9]{1,5})\]\s+"
    r"(?:[^\s\[\]]{4,8}\s+)?"
    r"(?P<ts>[0-9]{1,12}\.[0-9]{1,9}):\s+"
    r"(?P<event>[a-z_0-9]{1,64}):\s(?P<body>.*)$"
)
_LOST = re.compile(r"^CPU:([0-9]{1,5}) \[LOST ([0-9]{1,20}) EVENTS\]$")
_HEX = r"0x[0-9a-f]{1,16}"
_INT = r"-?[0-9]{1,10}"
_PAGE_ALLOC = re.compile(
    rf"^page=(?P<page>[0-9a-f]{{1,16}}|\(null\)) pfn=(?P<pfn>{_HEX}) order=(?P<order>{_INT}) "
    rf"migratetype=(?P<mt>{_INT}) gfp_flags=(?P<gfp>\S{{1,1024}})$"
)
_EXTFRAG = re.compile(
    rf"^page=[0-9a-f]{{1,16}} pfn=(?P<pfn>{_HEX}) alloc_order=(?P<ao>{_INT}) "
    rf"fallback_order=(?P<fo>{_INT}) pageblock_order=(?P<pb>{_INT}) "
    rf"alloc_migratetype=(?P<amt>{_INT}) fallback_migratetype=(?P<fmt>{_INT}) "
    rf"fragmenting=(?P<frag>[01]) change_ownership=(?P<own>[01])$"
)
_ZONE = (
    rf"zone_start=(?P<zs>{_HEX}) migrate_pfn={_HEX} free_pfn={_HEX} zone_end=(?P<ze>{_HEX}), "
    r"mode=(?P<mode>sync|async)"
)
_BEGIN = re.compile(rf"^{_ZONE}$")
_END = re.compile(rf"^{_ZONE} status=(?P<status>[a-z_]{{1,32}})$")
_DIRECT = re.compile(rf"^order=(?P<order>{_INT}) gfp_mask=(?P<gfp>\S{{1,1024}}) priority={_INT}$")
# The slow-path events' bodies: only the order is read (they arm the failure counter).
_SLOW = {
    "mm_vmscan_wakeup_kswapd": re.compile(rf"^nid={_INT} order=(?P<order>{_INT}) gfp_flags=\S"),
    "mm_vmscan_direct_reclaim_begin": re.compile(rf"^order=(?P<order>{_INT}) gfp_flags=\S"),
    "mm_compaction_deferred": re.compile(
        rf"^node={_INT} zone=\S{{1,16}}\s+order=(?P<order>{_INT}) order_failed={_INT} "
    ),
}


class MigrateType(enum.IntEnum):
    """The kernel's enum migratetype (include/linux/mmzone.h), as the events print it."""

    UNMOVABLE = 0
    MOVABLE = 1
    RECLAIMABLE = 2
    HIGHATOMIC = 3  # MIGRATE_PCPTYPES; CMA and ISOLATE follow depending on the config
    OTHER = -1


def migrate_type(value: int) -> MigrateType:
    return MigrateType(value) if 0 <= value <= 3 else MigrateType.OTHER


@dataclass(frozen=True)
class Header:
    comm: str
    pid: int
    cpu: int
    timestamp: float  # seconds on the instance's trace clock (CLOCK_MONOTONIC: see tracefs)


@dataclass(frozen=True)
class PageAlloc:
    """kmem:mm_page_alloc. `failed`: no page. `silent`: __GFP_NOWARN set, so warn_alloc never
    logs it whatever the rate limit."""

    head: Header
    order: int
    migratetype: MigrateType
    gfp: str
    failed: bool
    silent: bool


@dataclass(frozen=True)
class Extfrag:
    """kmem:mm_page_alloc_extfrag: an allocation of `alloc_migratetype` took pages from a
    pageblock of `fallback_migratetype`; `change_ownership` when it stole the whole block."""

    head: Header
    alloc_order: int
    fallback_order: int
    alloc_migratetype: MigrateType
    fallback_migratetype: MigrateType
    fragmenting: bool
    change_ownership: bool


@dataclass(frozen=True)
class CompactionBegin:
    head: Header
    zone_start: int
    zone_end: int
    sync: bool


@dataclass(frozen=True)
class CompactionEnd:
    head: Header
    zone_start: int
    zone_end: int
    sync: bool
    status: str  # the kernel's compact_result name: success, complete, contended, ...


@dataclass(frozen=True)
class DirectCompaction:
    """compaction:mm_compaction_try_to_compact_pages: an allocation entered direct compaction;
    the begin/end that follow in the same task are its."""

    head: Header
    order: int


class SlowPathKind(enum.Enum):
    """The allocator's slow-path tracepoints that say an allocation of an order did not find a
    free block at once (the fast path never fires them)."""

    WAKEUP_KSWAPD = "mm_vmscan_wakeup_kswapd"  # a node not balanced at that order: kswapd woken
    DIRECT_RECLAIM = "mm_vmscan_direct_reclaim_begin"  # the allocating task reclaims itself
    COMPACTION_DEFERRED = "mm_compaction_deferred"  # compaction skipped: it failed recently


@dataclass(frozen=True)
class SlowPath:
    """One of the slow-path tracepoints (SlowPathKind), filtered in-kernel to the traced order
    and above: a cheap sign the node is at risk, which arms the per-allocation counter."""

    head: Header
    kind: SlowPathKind
    order: int


@dataclass(frozen=True)
class Lost:
    """``CPU:N [LOST M EVENTS]``: the ring buffer overwrote M events before they were read."""

    cpu: int
    count: int


TraceEvent = (
    PageAlloc | Extfrag | CompactionBegin | CompactionEnd | DirectCompaction | SlowPath | Lost
)

NOWARN = "__GFP_NOWARN"
# Without the format file (a saved trace read elsewhere): the names that contain __GFP_NOWARN
# on every kernel that prints them. GFP_NOWAIT holds it only on recent kernels: format only.
DEFAULT_NOWARN_NAMES = frozenset({NOWARN, "GFP_TRANSHUGE", "GFP_TRANSHUGE_LIGHT"})


def parse_line(
    line: str | bytes, nowarn_names: frozenset[str] = DEFAULT_NOWARN_NAMES
) -> TraceEvent | None:
    """One trace_pipe line (with or without its newline) → an event, or None."""
    if isinstance(line, bytes):
        line = line[:MAX_LINE].decode("utf-8", errors="replace")
    line = line[:MAX_LINE].rstrip("\n")
    lost = _LOST.match(line)
    if lost:
        return Lost(int(lost.group(1)), int(lost.group(2)))
    m = _HEAD.match(line)
    if m is None:
        return None
    head = Header(m["comm"], int(m["pid"]), int(m["cpu"]), float(m["ts"]))
    event, body = m["event"], m["body"]
    if event == "mm_page_alloc":
        f = _PAGE_ALLOC.match(body)
        if f is None:
            return None
        failed = f["pfn"] == "0x0" and f["page"].strip("0") in ("", "(null)")
        silent = any(name in nowarn_names for name in f["gfp"].split("|"))
        mt = migrate_type(int(f["mt"]))
        return PageAlloc(head, int(f["order"]), mt, f["gfp"], failed, silent)
    if event == "mm_page_alloc_extfrag":
        f = _EXTFRAG.match(body)
        if f is None:
            return None
        return Extfrag(
            head,
            int(f["ao"]),
            int(f["fo"]),
            migrate_type(int(f["amt"])),
            migrate_type(int(f["fmt"])),
            f["frag"] == "1",
            f["own"] == "1",
        )
    if event == "mm_compaction_begin":
        f = _BEGIN.match(body)
        if f is None:
            return None
        return CompactionBegin(head, int(f["zs"], 16), int(f["ze"], 16), f["mode"] == "sync")
    if event == "mm_compaction_end":
        f = _END.match(body)
        if f is None:
            return None
        zs, ze = int(f["zs"], 16), int(f["ze"], 16)
        return CompactionEnd(head, zs, ze, f["mode"] == "sync", f["status"])
    if event == "mm_compaction_try_to_compact_pages":
        f = _DIRECT.match(body)
        return None if f is None else DirectCompaction(head, int(f["order"]))
    slow = _SLOW.get(event)
    if slow is not None:
        f = slow.match(body)
        return None if f is None else SlowPath(head, SlowPathKind(event), int(f["order"]))
    return None


_FLAG_ENTRY = re.compile(r"\{\s*\(\s*unsigned long\s*\)\s*(?P<expr>.*?),\s*\"(?P<name>\w+)\"\s*\}")
_CAST = re.compile(r"\(\s*(?:gfp_t|unsigned long|unsigned int|int)\s*\)")
MAX_FORMAT = 1 << 16


def gfp_names(format_text: str) -> dict[str, int]:
    """The value of every GFP name in an event's format file (its __print_flags table), from
    the C constant expressions the kernel prints. Names whose expression is not a plain
    combination of integer constants, |, &, ~ and << are left out."""
    out: dict[str, int] = {}
    start = format_text.find("__print_flags(")
    if start < 0:
        return out
    for m in _FLAG_ENTRY.finditer(format_text[start : start + MAX_FORMAT]):
        value = _const(_CAST.sub("", m["expr"]).replace("UL", ""))
        if value is not None and m["name"] not in out:
            out[m["name"]] = value
    return out


def nowarn_names(names: Mapping[str, int]) -> frozenset[str]:
    """The names whose value includes __GFP_NOWARN (the defaults when it is not named)."""
    bit = names.get(NOWARN)
    if bit is None:
        return DEFAULT_NOWARN_NAMES
    return frozenset(name for name, value in names.items() if value & bit)


def _const(expr: str) -> int | None:
    try:
        tree = ast.parse(expr.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    return _eval(tree.body, 0)


def _eval(node: ast.expr, depth: int) -> int | None:
    if depth > 64:
        return None
    if isinstance(node, ast.Constant) and type(node.value) is int and 0 <= node.value < 1 << 64:
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Invert):
        v = _eval(node.operand, depth + 1)
        return None if v is None else ~v & ((1 << 64) - 1)
    if isinstance(node, ast.BinOp):
        a, b = _eval(node.left, depth + 1), _eval(node.right, depth + 1)
        if a is None or b is None:
            return None
        if isinstance(node.op, ast.BitOr):
            return a | b
        if isinstance(node.op, ast.BitAnd):
            return a & b
        if isinstance(node.op, ast.LShift) and b < 64:
            return (a << b) & ((1 << 64) - 1)
    return None
