"""Judge: pure functions from an Observation (and the pods' JSON) to an Assessment: the kernel's
fragmentation indices per NUMA node, zone and order, the verdict (fragmented, at-risk, healthy;
exhaustion told apart), the cause by migrate type, the vm tunables review, the stuck pods.

May import: agent.base, agent.config, the kernel room's parsers and types. No I/O: no threads,
sockets, files or kernel writes."""
