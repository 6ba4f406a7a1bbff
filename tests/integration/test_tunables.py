"""A measured tunable trial on this machine's real kernel: one harmless knob
(vm.extfrag_threshold, moved off its default first so the review recommends it back) written
and read back through /proc/sys, then rolled back: by a fragmented trial window, on stop, and by
the next agent after a crash mid-trial. The test puts the machine's own value back whatever
happens."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.assess.verdict import assess
from agent.config.model import Config
from agent.daemon.tuner import MemoryStore, Tuner
from agent.decide.report import EventReason, EventSpec
from agent.kernel.procfs import ProcReader

KNOB = Path("/proc/sys/vm/extfrag_threshold")
MOVED = 600  # the review recommends 500, the default, for anything above it
TRIAL_S = 60.0


@pytest.fixture
def moved() -> Iterator[int]:
    old = KNOB.read_text()
    KNOB.write_text(f"{MOVED}\n")
    try:
        yield int(old)
    finally:
        KNOB.write_text(old)


def config(fragmented_below: int | None = None) -> Config:
    c = Config()
    rem = dataclasses.replace(
        c.remediation, mode="on", apply_tunables=True, tunables_trial_seconds=TRIAL_S
    )
    a = c.assessment
    if fragmented_below is not None:  # every node counts as fragmented
        a = dataclasses.replace(
            a, fragmented_below_blocks=fragmented_below, at_risk_below_blocks=fragmented_below
        )
    return dataclasses.replace(c, remediation=rem, assessment=a)


def tuner(store: MemoryStore) -> Tuner:
    def failed(op: str, exc: Exception) -> None:
        raise AssertionError(f"{op}: {exc}")

    return Tuner(Path("/proc"), store, None, "it", time.time, failed, contextlib.nullcontext)


def tick(t: Tuner, now: float, cfg: Config) -> list[EventSpec]:
    """The real observation, its review limited to this one knob."""
    obs = ProcReader("/proc", "/sys").observe(with_pagetypeinfo=False)
    assert "extfrag_threshold" in obs.sysctl
    obs = dataclasses.replace(obs, sysctl={"extfrag_threshold": obs.sysctl["extfrag_threshold"]})
    return t.tick(now, assess(obs, cfg.assessment), obs, cfg)


def write_the_trial_value(t: Tuner) -> list[EventSpec]:
    assert tick(t, 0.0, config()) == []  # the baseline starts: nothing written
    assert int(KNOB.read_text()) == MOVED
    events = tick(t, TRIAL_S, config())
    assert int(KNOB.read_text()) == 500  # written, and read back by the tuner
    return events


def test_a_fragmented_trial_window_rolls_the_real_knob_back(moved: int) -> None:
    store = MemoryStore()
    t = tuner(store)
    started = write_the_trial_value(t)
    assert [e.reason for e in started] == [EventReason.TUNABLE_TRIAL_STARTED]
    assert "vm.extfrag_threshold 600 -> 500" in started[0].message
    assert store.state.trial is not None and store.state.trial.original == MOVED
    events = tick(t, TRIAL_S + 15, config(fragmented_below=10**9))
    assert int(KNOB.read_text()) == MOVED
    assert [e.reason for e in events] == [EventReason.TUNABLE_ROLLED_BACK]
    assert store.state.trial is None
    assert store.state.tuned == (("extfrag_threshold", "rolled_back"),)


def test_stop_and_a_crash_mid_trial_put_the_original_back(moved: int) -> None:
    t = tuner(MemoryStore())
    write_the_trial_value(t)
    (ev,) = t.stop()
    assert int(KNOB.read_text()) == MOVED and "the agent is stopping" in ev.message
    store = MemoryStore()
    write_the_trial_value(tuner(store))  # and then nothing: a kill -9
    (ev,) = tuner(store).resume()
    assert int(KNOB.read_text()) == MOVED and "interrupted" in ev.message
