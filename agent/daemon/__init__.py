"""The per-node daemon: the outer layer that owns the threads and the clocks and carries out, once
per tick, what agent.decide.cycle decided.

`loop` (the Agent: composes the parts, the run loop, config reload; with no API it is the standalone
daemon), `inbox` (kernel-log findings: de-duplication, the orders kept, suppressed counts),
`observer` (observe and assess, the pagetypeinfo cache), `stuck` (the pod informer and the
sandbox-Event watch), `reporter` (condition, taint slot, taint), `remediator` (node lock, cluster
slot, run and measure), `tracing` (the tracing source and its counters), `vmrates` (the vmstat
series and its rates), `metrics` and `httpserver` (/metrics, /healthz), `logs` (structured logging).
Each part takes the kube room's Api and a clock, so tests/unit drives them with fakes.

May import every room below it; never agent.cli.
"""
