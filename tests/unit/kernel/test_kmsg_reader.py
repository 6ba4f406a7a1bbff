"""KmsgFollower.handle: what each kernel-log record is handed to (no threads, no files)."""

from __future__ import annotations

from agent.kernel.kmsg import Finding
from agent.kernel.kmsgfollow import KmsgFollower


def _follower(accept_user: bool = False) -> tuple[KmsgFollower, list[object]]:
    seen: list[object] = []
    f = KmsgFollower(
        "/nonexistent",
        seen.append,
        accept_user_facility=accept_user,
        on_ignored=lambda: seen.append("ignored"),
        on_suppressed=lambda n: seen.append(("suppressed", n)),
    )
    return f, seen


def test_suppressed_count_reaches_its_callback_not_the_findings() -> None:
    f, seen = _follower()
    f.handle(b"4,100,2548650549225,-;warn_alloc: 11 callbacks suppressed")
    assert seen == [("suppressed", 11)]


def test_injected_suppressed_line_is_ignored_like_an_injected_finding() -> None:
    f, seen = _follower()
    f.handle(b"12,101,1,-;warn_alloc: 99 callbacks suppressed")
    assert seen == ["ignored"]
    f, seen = _follower(accept_user=True)
    f.handle(b"12,101,1,-;warn_alloc: 99 callbacks suppressed")
    assert seen == [("suppressed", 99)]


def test_findings_still_go_to_on_finding() -> None:
    f, seen = _follower()
    f.handle(b"4,102,3,-;dockerd: page allocation failure: order:5, mode:0x440dc0")
    assert len(seen) == 1 and isinstance(seen[0], Finding)
    assert (seen[0].order, seen[0].process) == (5, "dockerd")
