"""agent.assess.signatures: every entry fires on its documented real line; kernel ranges; GFP."""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path

import pytest

from agent.assess.signatures import (
    decode_gfp,
    load,
    match_line,
    parse_version,
    signatures,
    version_in_line,
)

ROOT = Path(__file__).resolve().parents[3]
KMSG = ROOT / "tests" / "fixtures" / "kmsg"


def _line(fixture: str, n: int) -> str:
    return (ROOT / fixture).read_text().splitlines()[n - 1]


@pytest.mark.parametrize("sig", signatures(), ids=lambda s: s.id)
def test_each_entry_fires_on_its_real_example(sig: object) -> None:
    from agent.assess.signatures import Signature

    assert isinstance(sig, Signature)
    text = _line(*sig.example)
    ids = [m.signature.id for m in match_line(text)]
    assert sig.id in ids
    assert sig.sources, "every entry cites its sources"
    if sig.kernels is not None:  # inside its range it is confirmed, outside it is silent
        inside = sig.kernels.start
        assert [m.kernel_confirmed for m in match_line(text, inside) if m.signature is sig] == [
            True
        ]
        assert sig.id not in [m.signature.id for m in match_line(text, sig.kernels.before)]


def test_readme_documents_every_entry() -> None:
    readme = (KMSG / "README.md").read_text()
    for sig in signatures():
        assert f"`{sig.id}`" in readme


def test_unknown_kernel_matches_unconfirmed() -> None:
    m = match_line("[872338.588586] SLUB: Unable to allocate memory on node -1 (gfp=0x8020)")
    assert [(x.signature.id, x.kernel_confirmed) for x in m] == [("memcg-kmem-3.10", None)]
    assert match_line("SLUB: Unable to allocate memory on node -1 (gfp=0x20)", (4, 19, 0)) == ()


def test_no_standalone_signature_in_the_lookalikes_but_the_cma_lines() -> None:
    hits = [
        n
        for n, text in enumerate((KMSG / "lookalikes.txt").read_text().splitlines(), 1)
        if any(m.signature.standalone for m in match_line(text))
    ]
    assert hits == [127, 168]


def test_the_data_file_is_package_data() -> None:
    data = json.loads(resources.files("agent.assess").joinpath("signatures.json").read_text())
    assert {s["id"] for s in data["signatures"]} == {s.id for s in signatures()}


@pytest.mark.parametrize(
    ("mode", "kernel", "names"),
    [
        # the seed's 3.x docker line and the RHEL 7 runc line (findings.txt:32)
        ("0x1040d0", (3, 10, 0), ("GFP_KERNEL", "__GFP_COMP", "__GFP_KMEMCG")),
        ("0xc0d0", (3, 10, 0), ("GFP_KERNEL", "__GFP_COMP", "__GFP_ZERO")),
        ("0x20", (3, 10, 0), ("GFP_ATOMIC",)),
        ("0x8020", None, ("__GFP_HIGH", "__GFP_ZERO")),
        ("0x200da", (3, 8), ("GFP_HIGHUSER_MOVABLE",)),
        ("0x4000000", (3, 10), ("0x4000000",)),  # no such bit: left as hex
    ],
)
def test_decode_gfp(mode: str, kernel: tuple[int, ...] | None, names: tuple[str, ...]) -> None:
    d = decode_gfp(mode, kernel)
    assert d is not None
    assert d.flags == names
    assert d.table == "3.8-3.15"
    assert d.assumed == (kernel is None)


def test_decode_gfp_outside_every_table() -> None:
    assert decode_gfp("0xd0", (3, 7, 0)) is None  # before the first table
    assert decode_gfp("zz") is None


def _gfp_cases() -> list[tuple[str, int, str, str]]:
    """(fixture, line, the reporter's kernel, the table) for a real line per table: gfp.txt
    (gfp.tsv names each kernel and source), and the corpus lines whose source names one."""
    rows = (KMSG / "gfp.tsv").read_text().splitlines()[1:]
    kernels = {int(r.split("\t")[0]): r.split("\t")[1] for r in rows}
    tables = {1: "4.5-4.9", 2: "4.10-4.12", 3: "4.13-4.15", 4: "4.16-5.0", 5: "4.16-5.0"}
    tables |= {6: "5.1-6.2", 7: "5.1-6.2", 8: "6.3-", 9: "6.3-"}
    out = [("gfp.txt", n, kernels[n], t) for n, t in tables.items()]
    return [
        *out,
        ("findings.txt", 7, "3.18.18+38-ph", "3.16-4.3"),  # writeboost/dm-writeboost#72
        ("findings.txt", 17, "4.3.0-1-ARCH", "3.16-4.3"),  # archlinuxarm/PKGBUILDs#1308
        ("findings.txt", 1, "4.9.24-coreos", "4.5-4.9"),  # coreos/bugs#1106
        ("findings.txt", 5, "6.8.0", "6.3-"),  # jcmvbkbc/linux-xtensa#17
    ]


_MODE = re.compile(r"(?:mode:|gfp_mask=)(0x[0-9a-f]+)(?:\(([A-Za-z0-9_|]+)\))?")


@pytest.mark.parametrize(("fixture", "n", "kernel", "table"), _gfp_cases())
def test_each_table_decodes_a_real_line_as_its_kernel_did(
    fixture: str, n: int, kernel: str, table: str
) -> None:
    """Kernels from 4.6 print the names themselves (with the same greedy walk over composites
    and bits as decode_gfp): the table for the reporter's kernel must give the same names."""
    m = _MODE.search(_line(f"tests/fixtures/kmsg/{fixture}", n))
    assert m is not None
    version = parse_version(kernel)
    d = decode_gfp(m.group(1), version)
    assert d is not None and d.table == table and not d.assumed
    if m.group(2):
        assert set(d.flags) == set(m.group(2).split("|"))
    else:  # hex only (before 4.6): what this layout's bits say
        want = {"0x204010": {"GFP_NOIO", "__GFP_COMP", "__GFP_NOTRACK"}, "0x20": {"GFP_ATOMIC"}}
        assert set(d.flags) == want[m.group(1)]


def test_every_kernel_from_3_8_has_exactly_one_table() -> None:
    tables = load()[1]
    for major, minor in [(3, m) for m in range(8, 20)] + [(4, m) for m in range(21)]:
        held = [t.id for t in tables if t.kernels.holds((major, minor, 0))]
        assert len(held) == 1, (major, minor, held)
    for minor in range(20):
        assert len([t for t in tables if t.kernels.holds((5, minor))]) == 1
        assert len([t for t in tables if t.kernels.holds((6, minor))]) == 1
    # the bits moved where the tables change: GFP_KERNEL in each layout
    kernel = {t.id: dict(t.composites).get("GFP_KERNEL") for t in tables}
    assert kernel == {
        "3.8-3.15": 0xD0,
        "3.16-4.3": 0xD0,
        "4.4": 0x24000C0,
        "4.5-4.9": 0x24000C0,
        "4.10-4.12": 0x14000C0,
        "4.13-4.15": 0x14000C0,
        "4.16-5.0": 0x6000C0,
        "5.1-6.2": 0xCC0,
        "6.3-": 0xCC0,
    }


def test_versions() -> None:
    assert parse_version("3.10.0-1062.18.1.el7.x86_64") == (3, 10, 0)
    assert parse_version("6.18") == (6, 18)
    assert parse_version("garbage") is None
    header = _line("tests/fixtures/kmsg/lookalikes.txt", 48)
    assert version_in_line(header) == (3, 10, 0)
    assert version_in_line(
        "kernel: [ 8642.301130] CPU: 3 PID: 26112 Comm: dockerd Not tainted 4.19.0-6-amd64 #1"
    ) == (4, 19, 0)
    assert version_in_line("Linux version 6.18.44-fc (gcc) #1 SMP") == (6, 18, 44)
    assert version_in_line("eth0: link up") is None
