"""Judge: pure functions from an Observation (and the pods' JSON) to what it means.

`verdict` (the kernel's indices per NUMA node, zone and order, the verdict with exhaustion told
apart, the cause by migrate type, the condition's reasons), `indices` (the kernel's formulas),
`tunables` (the vm tunables review), `pods` (pods stuck in ContainerCreating), `readiness` (can this
node serve M blocks of order N), `hugepages` (how many hugepages could be allocated now), `predict`
(the trend of free blocks and when it crosses the fragmented line), `tracing` (the tracepoints'
aggregation), `vmrates` (vmstat counters per minute over a window), `signatures` (known kernel-log
signatures and their fixes, a data file beside it).

May import: agent.base, agent.config, the kernel room's parsers and types. No I/O: no threads,
sockets, files or kernel writes (the signatures' data file is package data read once).
"""
