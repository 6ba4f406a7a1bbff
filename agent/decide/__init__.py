"""Decide: pure functions from the assessment, the node as last seen, a small frozen state and
the clock to what to do.

`ladder` (which remediation steps fit which cause, least disruptive first), `remediation` (the
policy: whether and when, never a loop, the action outcomes), `report` (conditions, taint and
Events with hysteresis, the Event reasons), `nodeview` (the Node's conditions, summary
annotation and taints as plain data), `summary` (the per-NUMA summary annotation), `cycle`
(one tick's single decision: report, escalation and remediation together), `readiness` (the
ladder that prepares a node for a need), `tracearm` (when the tracing source's per-allocation
failure counter is armed).

May import: agent.base, agent.config, agent.assess, the kernel room's types. No I/O.
"""
