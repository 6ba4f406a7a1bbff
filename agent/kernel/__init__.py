"""Observe (and, for remediation, write) the kernel: pure parsers of /proc text (buddyinfo,
zoneinfo, pagetypeinfo, vmstat, meminfo, PSI) and of kernel-log lines, the bounds they share,
the Observation they make; and the outer parts that touch the machine: the /proc and /sys reader
(`procfs`), the /dev/kmsg follower thread (`kmsgfollow`) and the remediation writes (`writes`).
`actions` names what a write does without doing it.

May import: agent.base. Never assess, decide, kube, daemon or cli."""
