"""Decide: pure functions from the assessment, the node as last seen, a small frozen state and
the clock to what to do: the remediation ladder (what helps which cause), the remediation policy
(whether and when, never a loop) and the report (condition, taint, Events, with hysteresis).

May import: agent.base, agent.config, agent.assess, the kernel room's types. No I/O."""
