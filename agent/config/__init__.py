"""The configuration: one model (dataclasses whose field metadata documents each key, its default
and its range, stated once) that validates the YAML file and generates the config part of the
chart's values schema and the README's table (`schema`); the hardened YAML loader and the one
`load` (`load`); hot reload of the mounted ConfigMap (`reload`).

Dataclasses, not pydantic, measured (2 shared cores, median of 20 runs): `memfrag-agent check
--config` on the seed snapshot takes 0.09 s and 16.1 MiB peak RSS, the same before and after this
model; with an equivalent pydantic model 0.18 s and 32.5 MiB, pydantic's import doubling both. The
daemon imports pydantic already (the kubernetes client), where the model would add 5-11 ms and
0.2-0.8 MiB, but `check` runs on hosts without an API server, and the errors (source, key path,
bounded excerpt, pinned by tests/unit/config) are ours: pydantic's would need translating.

May import: agent.base. Never the kernel, the API or the daemon."""
