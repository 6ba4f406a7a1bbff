"""agent.kernel.hugepages: the pools and THP modes of a real /sys, and what is missing or bad."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.base.errors import ParseError
from agent.kernel.hugepageinfo import HugePool, selected_word
from agent.kernel.hugepages import pool_path, read_hugepages

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "sys" / "vm-6.18-x86_64-hugepages"
SYS = FIXTURE / "sys"


def test_real_pools_machine_wide_and_per_node() -> None:
    h = read_hugepages(SYS)
    assert h.gaps == ()
    assert h.sizes_kib() == (2048, 1048576)
    assert h.pool(2048, None) == HugePool(2048, None, 64, 64, 0, resv=0, overcommit=0)
    assert h.pool(2048, 0) == HugePool(2048, 0, 64, 64, 0)
    assert h.pool(1048576, None) == HugePool(1048576, None, 0, 0, 0, resv=0, overcommit=0)
    assert (h.thp_enabled, h.thp_defrag) == ("madvise", "madvise")


def test_missing_sys_is_gaps_not_an_error(tmp_path: Path) -> None:
    h = read_hugepages(tmp_path / "nothing")
    assert h.pools == ()
    assert h.thp_enabled is None
    assert any("hugepages: not present" in g for g in h.gaps)
    assert any("transparent_hugepage/enabled: not present" in g for g in h.gaps)


def test_malformed_count_names_the_file(tmp_path: Path) -> None:
    pool = tmp_path / "kernel" / "mm" / "hugepages" / "hugepages-2048kB"
    pool.mkdir(parents=True)
    (pool / "nr_hugepages").write_text("lots\n")
    (pool / "free_hugepages").write_text("0\n")
    with pytest.raises(ParseError, match="nr_hugepages:1: expected a count"):
        read_hugepages(tmp_path)


def test_pool_without_counts_is_ignored_and_said(tmp_path: Path) -> None:
    (tmp_path / "kernel" / "mm" / "hugepages" / "hugepages-2048kB").mkdir(parents=True)
    h = read_hugepages(tmp_path)
    assert h.pools == ()
    assert any("no nr_hugepages/free_hugepages: pool ignored" in g for g in h.gaps)


def test_selected_word() -> None:
    assert selected_word("always defer defer+madvise [madvise] never\n", "x") == "madvise"
    with pytest.raises(ParseError, match="no \\[selected\\] mode"):
        selected_word("always madvise never", "x")


def test_pool_path() -> None:
    assert pool_path("/sys", 2048) == Path("/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages")
    assert pool_path("/sys", 2048, 1) == Path(
        "/sys/devices/system/node/node1/hugepages/hugepages-2048kB/nr_hugepages"
    )
