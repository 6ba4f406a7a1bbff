"""Values at the edges of every ranged config key, made from the model's field metadata: just
outside each bound (refused), on it (allowed), and for the string shapes a table of refused values.
The model's unit tests and the chart's schema test (tests/integration/test_chart.py) both use them:
what one refuses the other refuses too, except where a rule is the agent's or the chart's alone."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agent.config.model import CROSS_FIELD_RULES, Allowed, allowed, keys


@dataclass(frozen=True)
class Edge:
    path: str
    value: Any
    model_refuses: bool
    chart_refuses: bool
    why: str

    def document(self) -> dict[str, dict[str, Any]]:
        """A config holding the value; a key that must be >= another gets that other key equal
        to it, so that an allowed edge is allowed whatever the defaults."""
        doc: dict[str, dict[str, Any]] = {}
        pairs = [(self.path, self.value)]
        if not self.model_refuses:
            pairs += [(r.other, self.value) for r in CROSS_FIELD_RULES if r.key == self.path]
        for path, value in pairs:
            section, key = path.split(".")
            doc.setdefault(section, {})[key] = value
        return doc


# Refused strings per shaped key (pattern, length, reserved prefix, the agent's own rules), with
# who refuses them: (value, model, chart).
STRINGS: dict[str, list[tuple[str, bool, bool]]] = {
    "sources.kmsg_path": [("", True, True), ("/dev/kmsg", False, False)],
    "reporting.taint_key": [
        ("bad key", True, True),
        ("example.com/frag\n", True, True),
        ("-frag", True, True),
        ("a" * 317, True, True),
        ("kubernetes.io/frag", True, True),
        ("node.k8s.io/frag", True, True),
        ("a" * 316, False, False),
        ("notkubernetes.io/frag", False, False),
    ],
    "reporting.metrics_address": [
        ("localhost", True, True),
        ("", True, True),
        ("0.0.0.0\n", True, True),
        ("999.1.1.1", True, False),  # the pattern's sieve passes it; the agent's check does not
        ("0.0.0.0:9808", True, False),
        ("::", False, False),
    ],
    "assessment.hugepage_targets": [
        ("2M", True, True),
        ("2M=1024,", True, True),
        ("2X=4", True, True),
        ("2M=4@x", True, True),
        ("2M=4,2048kB=8", True, False),  # one pool twice: the agent's own rule
        ("2M=1024,1G=4@0", False, False),
        ("", False, False),
    ],
    "remediation.maintenance_window": [
        ("25:00-01:00", True, True),
        ("22:00", True, True),
        ("22:00-04:00\n", True, True),
        ("10:00-10:00", True, False),  # zero length: the agent's own rule
        ("23:59-00:00", False, False),
        ("", False, False),
    ],
}


def _shaped(a: Allowed) -> bool:
    return any(
        x is not None for x in (a.pattern, a.not_pattern, a.min_length, a.max_length)
    ) or bool(a.rules)


def edges() -> list[Edge]:
    out: list[Edge] = []
    for path, f, hint in keys():
        a = allowed(f)
        step: float = 1 if hint is int else 0.001
        if a.minimum is not None:
            out.append(Edge(path, a.minimum - step, True, True, "minimum"))
            chart = a.chart_minimum is not None and a.chart_minimum > a.minimum
            out.append(Edge(path, a.minimum, False, chart, "minimum (model)"))
        if a.chart_minimum is not None:
            out.append(Edge(path, a.chart_minimum, False, False, "minimum (chart)"))
        if a.maximum is not None:
            out.append(Edge(path, a.maximum + step, True, True, "maximum"))
            out.append(Edge(path, a.maximum, False, False, "maximum"))
        if a.exclusive_minimum is not None:
            out.append(Edge(path, a.exclusive_minimum, True, True, "exclusiveMinimum"))
            out.append(Edge(path, a.exclusive_minimum + step, False, False, "exclusiveMinimum"))
        if _shaped(a):
            if path not in STRINGS:
                raise AssertionError(f"{path} has a shape but no refused values in STRINGS")
            out += [Edge(path, v, m, c, "shape") for v, m, c in STRINGS[path]]
    return out


def rounds(items: list[Edge]) -> list[list[Edge]]:
    """The edges in rounds that hold each key at most once: one chart render per round."""
    by_key: dict[str, list[Edge]] = {}
    for e in items:
        by_key.setdefault(e.path, []).append(e)
    depth = max(len(v) for v in by_key.values())
    return [[v[i] for v in by_key.values() if i < len(v)] for i in range(depth)]
