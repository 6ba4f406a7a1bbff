"""agent.assess.hugepages: orders, what could be allocated now, targets, THP fallback."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from agent.assess.hugepages import (
    allocatable_now,
    hugepage_orders,
    readiness,
    thp_fallback,
)
from agent.base.errors import MemfragError
from agent.config.targets import parse_target
from agent.kernel.buddyinfo import ZoneBlocks, parse_buddyinfo
from agent.kernel.hugepageinfo import HugePages
from agent.kernel.hugepages import read_hugepages
from agent.kernel.vmstat import parse_vmstat
from agent.kernel.zoneinfo import ZoneWatermarks, parse_zoneinfo

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
HP = FIXTURES / "sys" / "vm-6.18-x86_64-hugepages"
ARM64 = FIXTURES / "proc" / "arm64-64k-4node-d05"


def _real() -> tuple[tuple[ZoneBlocks, ...], tuple[ZoneWatermarks, ...], HugePages]:
    buddy = parse_buddyinfo((HP / "proc" / "buddyinfo").read_text())
    zi = parse_zoneinfo((HP / "proc" / "zoneinfo").read_text())
    return buddy, zi, read_hugepages(HP / "sys")


def test_orders_from_pool_sizes_and_from_the_page_size() -> None:
    assert hugepage_orders(4096, [2048, 1048576]) == ((2048, 9), (1048576, 18))
    assert hugepage_orders(4096, []) == ((2048, 9), (1048576, 18))
    assert hugepage_orders(65536, []) == ((524288, 13),)  # arm64 64K: 512 MiB PMD
    assert hugepage_orders(16384, []) == ((32768, 11),)
    assert hugepage_orders(4096, [3000]) == ()  # not a power-of-two multiple


def test_real_host_order_9_counts_dma32_and_normal_not_dma() -> None:
    buddy, zi, pools = _real()
    r = readiness(buddy, zi, pools, 4096)
    # order 9 blocks + 2 x order 10 blocks, DMA32 and Normal (DMA is lowmem-reserved)
    normal = next(z for z in buddy if z.zone == "Normal")
    dma32 = next(z for z in buddy if z.zone == "DMA32")
    expected = sum(z.free[9] + 2 * z.free[10] for z in (normal, dma32))
    two_mib = next(p for p in r.pools if p.size_kib == 2048)
    assert two_mib.order == 9
    assert two_mib.allocatable == expected == 9550
    assert (two_mib.nr, two_mib.free) == (64, 64)
    assert two_mib.can_grow is None  # nothing asked of it
    node = next(n for n in r.nodes if n.size_kib == 2048)
    assert (node.node, node.allocatable, node.nr) == (0, 9550, 64)


def test_gigantic_pages_are_not_guessed() -> None:
    buddy, zi, pools = _real()
    r = readiness(buddy, zi, pools, 4096)
    gig = next(p for p in r.pools if p.size_kib == 1048576)
    assert (gig.order, gig.allocatable, gig.can_grow) == (18, None, None)
    assert "above the buddy allocator's largest order 10" in gig.message


def test_target_out_of_reach_says_it_cannot_grow() -> None:
    buddy, zi, pools = _real()
    r = readiness(buddy, zi, pools, 4096, {2048: 20000})
    p = r.cannot_grow[0]
    assert p.size_kib == 2048 and p.can_grow is False
    assert "holds 64 of the target 20000" in p.message
    assert "cannot grow by 19936 without reclaim or compaction" in p.message
    ok = readiness(buddy, zi, pools, 4096, {2048: 9000})
    assert ok.cannot_grow == ()


def test_no_free_block_of_the_order_cannot_grow() -> None:
    buddy = parse_buddyinfo((FIXTURES / "proc" / "seed-incident" / "buddyinfo").read_text())
    r = readiness(buddy, None, HugePages((), None, None), 4096)
    two_mib = r.pools[0]
    assert two_mib.can_grow is False
    assert "no free block of order 9 on any NUMA node" in two_mib.message
    assert any(g.startswith("zoneinfo: ") for g in r.gaps)


def test_low_watermark_caps_the_count() -> None:
    buddy, zi, _ = _real()
    normal = [z for z in buddy if z.zone == "Normal"]
    wms = {(w.node, w.zone): w for w in zi}
    uncapped = allocatable_now(normal, {}, 9)
    assert allocatable_now(normal, wms, 9) <= uncapped
    tight = next(w for w in zi if w.zone == "Normal")
    nearly_full = {(0, "Normal"): dataclasses.replace(tight, low=normal[0].free_pages)}
    assert allocatable_now(normal, nearly_full, 9) == 0


def test_arm64_64k_pages() -> None:
    buddy = parse_buddyinfo((ARM64 / "buddyinfo").read_text())
    r = readiness(buddy, None, HugePages((), None, None), 65536)
    assert [(p.size_kib, p.order) for p in r.pools] == [(524288, 13)]
    assert r.pools[0].allocatable is not None  # 14 orders (0..13): order 13 is in the buddy lists


def test_thp_fallback_since_boot_and_over_an_interval() -> None:
    vm = parse_vmstat((HP / "proc" / "vmstat").read_text())
    boot = thp_fallback(vm)
    assert boot is not None and boot.since_boot
    assert (boot.faults, boot.fallbacks) == (vm["thp_fault_alloc"], vm["thp_fault_fallback"])
    later = {
        **vm,
        "thp_fault_alloc": vm["thp_fault_alloc"] + 1,
        "thp_fault_fallback": vm["thp_fault_fallback"] + 3,
    }
    rate = thp_fallback(later, vm)
    assert rate is not None and not rate.since_boot
    assert rate.fallback_rate == 0.75
    assert thp_fallback(vm, vm) is not None and thp_fallback(vm, vm).fallback_rate is None  # type: ignore[union-attr]
    assert thp_fallback(vm, later) is None  # went backwards: another boot
    assert thp_fallback({"pgfault": 1}) is None  # no THP counters


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("2M=1024", (2048, 1024)),
        ("1G=4", (1048576, 4)),
        ("2048kB=8", (2048, 8)),
        ("1GiB=1", (1048576, 1)),
    ],
)
def test_parse_target(text: str, want: tuple[int, int]) -> None:
    assert parse_target(text) == want


@pytest.mark.parametrize("text", ["2M", "2M=", "=4", "2X=4", "2M=-1", "2M=1e9"])
def test_parse_target_refuses(text: str) -> None:
    with pytest.raises(MemfragError, match="expected SIZE=COUNT"):
        parse_target(text)
