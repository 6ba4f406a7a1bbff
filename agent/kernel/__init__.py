"""Observe (and, for remediation, write) the kernel.

Pure, total parsers of what the kernel prints: `buddyinfo`, `zoneinfo`, `pagetypeinfo`, `vmstat`,
`meminfo`, `psi`, the kernel-log matcher `kmsg`, the tracepoint lines `trace`, the cgroup files
`cgroupinfo`, the hugepage pools' types `hugepageinfo`, long-term pinned memory `pininfo`; the
bounds they share (`limits`, `numbers`, `boundedlines`); the `Observation` they make; `actions`,
what a remediation write does, without doing it.

The outer parts, the only ones here that touch the machine: `procfs` (the /proc and /sys reader,
its root a parameter), `hugepages` and `cgroups` (readers under /sys and the cgroup roots),
`pinscan` (VmPin of a bounded number of processes a call), `kmsgfollow` (the /dev/kmsg thread),
`tracefs` and `tracefollow` (our ftrace instance and its reader thread), `writes` (the
remediation writes).

May import: agent.base. Never assess, decide, kube, daemon or cli; the pure modules never the
outer ones (import-linter's `pure` contract).
"""
