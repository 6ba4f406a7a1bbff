"""The Node edits, one copy each: our condition (a strategic-merge patch by type) and our taint
(a read-modify-write of spec.taints with the resourceVersion as precondition, re-read on 409),
used by the daemon and by `cleanup` alike."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from dataclasses import dataclass

from agent.decide.nodeview import (
    Condition,
    condition_patch,
    label_patch,
    node_view,
    removal_patch,
    taint_effects,
    taint_patch,
    with_taint,
    without_taint,
)
from agent.kube import paths
from agent.kube.api import JSON, SMP, Api
from agent.kube.errors import ApiError

TAINT_ATTEMPTS = 10


@dataclass(frozen=True)
class TaintWrite:
    node: JSON  # the Node as it stands after the write (or as read, if nothing was to do)
    changed: bool
    removed: tuple[str, ...]  # effects of ours that came off


def write_taint(
    api: Api,
    name: str,
    key: str,
    effect: str | None,
    owned: Collection[str],
    node: JSON | None = None,
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> TaintWrite:
    """Make our taint under `key` exactly `effect` (None: none of ours). Ours is our key with an
    effect in `owned`; every other taint, our key with another tool's effect included, is
    carried over untouched. `node`: the Node as last seen (else it is read first). A 409 (the
    Node changed since we read it) re-reads and retries; a retryable error backs off a little and
    retries; a final one, or the attempts running out, raises ApiError."""
    want = {effect} if effect else set()
    last: ApiError | None = None
    for attempt in range(TAINT_ATTEMPTS):
        try:
            if node is None or attempt > 0:
                node = api.request("GET", paths.node(name))
            v = node_view(node)
            mine = taint_effects(v.taints, key) & ({*owned} | want)
            if mine == want:
                return TaintWrite(node, False, ())
            taints = (
                with_taint(v.taints, key, effect, "true", owned)
                if effect
                else without_taint(v.taints, key, owned)
            )
            node = api.request(
                "PATCH",
                paths.node(name),
                body=taint_patch(v.resource_version, taints),
                content_type=SMP,
            )
            return TaintWrite(node, True, tuple(sorted(mine - want)))
        except ApiError as exc:
            last = exc
            if exc.status == 409:
                continue
            if not exc.retryable:
                raise
            sleep(min(2.0, 0.1 * (attempt + 1)))
    assert last is not None
    raise last


def write_condition(
    api: Api, name: str, cond: Condition, *more: Condition, summary: str | None = None
) -> JSON:
    """Our conditions only (status.conditions merges by type) and the summary annotation, one
    PATCH, with a few retries."""
    return api.with_retries(
        api.request,
        "PATCH",
        paths.node_status(name),
        body=condition_patch(cond, *more, summary=summary),
        content_type=SMP,
        attempts=3,
    )


def delete_condition(api: Api, name: str) -> JSON:
    """Our conditions and the summary annotation off the Node (`cleanup`)."""
    return api.request("PATCH", paths.node_status(name), body=removal_patch(), content_type=SMP)


def write_label(api: Api, name: str, key: str, value: str | None) -> JSON:
    """Our label only (metadata.labels merges by key; None removes it), with a few retries."""
    return api.with_retries(
        api.request,
        "PATCH",
        paths.node(name),
        body=label_patch(key, value),
        content_type=SMP,
        attempts=3,
    )
