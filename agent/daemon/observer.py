"""Observe and assess the kernel once a tick. pagetypeinfo is expensive to read (the kernel walks
every pageblock with the zone lock held), so it is read every
sources.pagetypeinfo_interval_seconds, more often (NOT_HEALTHY_PTI_INTERVAL) while the node is
not healthy or a kernel-log finding came in, and the last reading stands in between. Except at
an episode's first fragmented tick: the cause picks the remediation ladder, so it is read from a
pagetypeinfo of the fragmented node, not from one of before (the lab's reclaimable node, read
as unmovable from a reading taken while it was being filled, had its page cache dropped)."""

from __future__ import annotations

import dataclasses

from agent.assess.verdict import Assessment, Verdict, assess
from agent.config.model import Config
from agent.kernel.observation import Observation
from agent.kernel.pagetypeinfo import PageTypeInfo
from agent.kernel.procfs import ProcReader

NOT_HEALTHY_PTI_INTERVAL = 30.0


class Observer:
    def __init__(self, reader: ProcReader) -> None:
        self.reader = reader
        self._pti: PageTypeInfo | None = None
        self._pti_at = -1e18
        self._pti_verdict: Verdict | None = None  # the verdict the cached reading was made with
        self.last: Assessment | None = None  # the last assessment that succeeded

    def observe(
        self, now: float, cfg: Config, order: int, urgent: bool
    ) -> tuple[Observation, Assessment]:
        """Raises MemfragError when /proc cannot be read or parsed."""
        interval = cfg.sources.pagetypeinfo_interval_seconds
        if urgent or (self.last is not None and self.last.verdict != Verdict.HEALTHY):
            interval = min(interval, NOT_HEALTHY_PTI_INTERVAL)
        want_pti = now - self._pti_at >= interval
        obs = self.reader.observe(with_pagetypeinfo=want_pti)
        if want_pti:
            self._pti, self._pti_at = obs.pagetype, now
        elif self._pti is not None:
            obs = dataclasses.replace(obs, pagetype=self._pti)
        a = assess(obs, cfg.assessment, order)
        if (
            not want_pti
            and a.verdict == Verdict.FRAGMENTED
            and self._pti_verdict != Verdict.FRAGMENTED
        ):
            obs = self.reader.observe(with_pagetypeinfo=True)
            self._pti, self._pti_at, want_pti = obs.pagetype, now, True
            a = assess(obs, cfg.assessment, order)
        if want_pti:
            self._pti_verdict = a.verdict
        self.last = a
        return obs, a

    def numa_nodes_with_compact(self) -> tuple[int, ...]:
        return self.reader.numa_nodes_with_compact()
