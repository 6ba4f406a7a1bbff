"""Carry out the report on the Node: the condition write, the taint (one read-modify-write,
agent.kube.nodes), the slot of the cluster's cap on tainted nodes, and the taint effects the
node's record says the agent put on (so a changed taint_effect or `cleanup` removes ours only).
The Node itself comes from a watch of this one Node."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable

from agent.config.model import ReportingConfig
from agent.decide.nodeview import ConditionStatus, NodeView, has_taint, node_view
from agent.decide.report import Decision, ReportState, TaintChange
from agent.kube import paths
from agent.kube.api import Api
from agent.kube.errors import ApiError
from agent.kube.informer import Informer
from agent.kube.leases import NodeRecord, NodeState, Semaphore, node_count, taint_slots
from agent.kube.nodes import write_condition, write_label, write_taint

log = logging.getLogger("memfrag.agent")
Failed = Callable[[str, ApiError], None]


@dataclasses.dataclass(frozen=True)
class Shown:
    """What the Node says after the writes (for the gauges)."""

    condition_true: bool
    tainted: bool


class Reporter:
    def __init__(
        self,
        kube: Api,
        node: str,
        record: NodeRecord,
        taint_sem: Semaphore,
        failed: Failed,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.kube, self.node, self.record, self.taint_sem = kube, node, record, taint_sem
        self.failed = failed
        self.sleep = sleep
        self.node_inf = Informer(
            kube, paths.NODES, {"fieldSelector": f"metadata.name={node}"}, name="node"
        )
        self._effects: frozenset[str] | None = None  # taint effects the record says we put on
        self._slot_renewed = -1e18

    def view(self) -> NodeView | None:
        node = self.node_inf.get(self.node)
        return node_view(node) if node is not None else None

    # --- what the record says is ours ----------------------------------------------------------
    def owned_effects(self) -> frozenset[str]:
        """Taint effects the node's record says the agent put on (a taint_effect changed since,
        or reading it failed: then only the configured effect counts as ours, for now)."""
        if self._effects is None:
            try:
                self._effects = frozenset(self.record.read()[0].taint_effects)
            except ApiError as exc:
                self.failed("lease", exc)
                return frozenset()
        return self._effects

    def _record_effects(self, effects: set[str]) -> bool:
        """Write the taint effects the agent may have put on into the node's record: before a
        taint goes on (so a crash in between leaves it owned), after ours came off."""
        if self._effects == frozenset(effects):
            return True

        def put(s: NodeState) -> NodeState:
            return dataclasses.replace(s, taint_effects=tuple(sorted(effects)))

        try:
            self._effects = frozenset(self.record.update(put).taint_effects)
            return True
        except ApiError as exc:
            self.failed("lease", exc)
            return False

    # --- the cluster's cap on tainted nodes ----------------------------------------------------
    def taint_slot(self, now: float, cfg: ReportingConfig) -> bool:
        """A slot of the cluster-wide cap on tainted nodes (reporting.max_tainted_percent),
        taken or renewed (at most every quarter of its duration)."""
        duration = max(600.0, 4 * cfg.heartbeat_seconds)
        if now - self._slot_renewed < duration / 4:
            return True
        try:
            slots = taint_slots(node_count(self.kube), cfg.max_tainted_percent)
            got = self.taint_sem.acquire(slots, duration) is not None
        except ApiError as exc:
            self.failed("lease", exc)
            return False
        if got:
            self._slot_renewed = now
        return got

    def release_taint_slot(self) -> None:
        self._slot_renewed = -1e18
        try:
            held = self.taint_sem.held(1 << 20)
            if held is not None:
                self.taint_sem.release(held)
        except ApiError as exc:
            self.failed("lease", exc)

    # --- carrying out ----------------------------------------------------------------------------
    def carry_out(self, now: float, d: Decision, cfg: ReportingConfig) -> ReportState:
        """Write what the decision says; the report state to keep (`written_at`: when our last
        condition write was taken)."""
        state = d.state
        if d.condition is not None:
            try:
                more = () if d.unremediable is None else (d.unremediable,)
                self.node_inf.offer(
                    write_condition(self.kube, self.node, d.condition, *more, summary=d.summary)
                )
                state = dataclasses.replace(state, written_at=now)
                c = d.condition  # a few an hour: what each write said, for who counts them
                log.info(
                    "condition written",
                    extra={"status": c.status, "reason": c.reason, "text": c.message},
                )
            except ApiError as exc:
                self.failed("condition", exc)
        if d.taint is not None:
            self.set_taint(d.taint == TaintChange.ADD, cfg)
            if d.taint == TaintChange.REMOVE:
                self.release_taint_slot()
        return state

    def set_label(self, key: str, value: str | None) -> None:
        """The contiguity label (None: off); the Node as written goes to the informer, so the
        next tick sees it and writes nothing."""
        try:
            self.node_inf.offer(write_label(self.kube, self.node, key, value))
            log.info("node label written", extra={"label": key, "value": value})
        except ApiError as exc:
            self.failed("label", exc)

    def shown(self, cfg: ReportingConfig) -> Shown:
        cur = self.view()
        return Shown(
            condition_true=bool(
                cur and cur.condition and cur.condition.status == ConditionStatus.TRUE
            ),
            tainted=bool(cur and has_taint(cur.taints, cfg.taint_key, cfg.taint_effect)),
        )

    def set_taint(self, present: bool, cfg: ReportingConfig) -> bool:
        """Ours is our key with an effect we own (the configured one, or one the node's record
        says we put on); the record names the effect before the taint goes on."""
        effect = cfg.taint_effect
        owned = self.owned_effects() | {effect} - {"none"}
        if present and not self._record_effects({*owned}):
            return False  # the record must name our taint before it goes on
        try:
            w = write_taint(
                self.kube,
                self.node,
                cfg.taint_key,
                effect if present else None,
                owned,
                self.node_inf.get(self.node),
                sleep=self.sleep,
            )
        except ApiError as exc:
            self.failed("taint", exc)
            return False
        if w.changed:
            self.node_inf.offer(w.node)
            log.info(
                "taint set" if present else "taint removed",
                extra={"taint_key": cfg.taint_key, "effect": effect},
            )
        self._record_effects({effect} if present else set())
        return True

    def informers(self) -> list[Informer]:
        return [self.node_inf]
