"""The configuration: one model (dataclasses whose field metadata documents each key, its default
and its range, stated once) that validates the YAML file and generates the config part of the
chart's values schema and the README's table (`schema`); the hardened YAML loader and the one
`load` (`load`); hot reload of the mounted ConfigMap (`reload`).

Dataclasses, not pydantic, measured: `memfrag-agent check --config` on the seed snapshot takes
0.125 s and 16.7 MiB peak RSS; with an equivalent pydantic model it takes 0.270 s and 33.6 MiB
(pydantic's import; median of 20 runs each). In the daemon pydantic is already imported by the
kubernetes client and the model would cost 11 ms and 0.2 MiB, but `check` runs on hosts without
the API, and the errors (source, key path, bounded excerpt) are ours to keep, not pydantic's to
translate.

May import: agent.base. Never the kernel, the API or the daemon."""
