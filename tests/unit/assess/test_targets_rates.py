"""The hugepage targets' grammar (agent.config.targets), each target against its pool
(agent.assess.hugepages.target_readiness, on a real host's pools)."""

from __future__ import annotations

import pytest

from agent.assess.hugepages import readiness, target_readiness
from agent.base.errors import MemfragError
from agent.config.targets import HugepageTarget, parse_targets
from tests.unit.assess.test_hugepage_readiness import _real


def test_targets_grammar() -> None:
    assert parse_targets("") == ()
    assert parse_targets("2M=1024, 1G=4@1") == (
        HugepageTarget(2048, 1024),
        HugepageTarget(1048576, 4, 1),
    )
    for bad in ("2M", "2M=x", "2M=4@", "2M=4@-1", "2M=1,2048kB=2", ",".join(["2M=1@0"] * 17)):
        with pytest.raises(MemfragError):
            parse_targets(bad)


def test_each_target_against_its_pool_on_a_real_host() -> None:
    buddy, zi, pools = _real()
    hr = readiness(buddy, zi, pools, 4096)
    (met, node, gone, gigantic) = target_readiness(hr, parse_targets("2M=64,2M=9000@0,2M=1@3,1G=2"))
    (far,) = target_readiness(hr, parse_targets("2M=100000"))
    assert (met.held, met.shortfall, met.can_grow) == (64, 0, None)
    assert "holds 64 of the target 64" in met.message
    # the node's pool holds 64 of its 9000; 9550 blocks of order 9 could give the rest
    assert (node.held, node.shortfall, node.allocatable, node.can_grow) == (64, 8936, 9550, True)
    assert (far.shortfall, far.can_grow) == (100000 - 64, False)
    assert "cannot grow by 99936 without reclaim or compaction" in far.message
    assert gone.can_grow is False and "no such pool" in gone.message  # NUMA node 3
    assert gigantic.can_grow is None and "gigantic" in gigantic.message
