"""The configuration: one model (dataclasses with documented defaults and ranges) that validates
the YAML file, documents every key and generates the config part of the chart's values schema;
the hardened YAML loader; hot reload of the mounted ConfigMap.

May import: agent.base. Never the kernel, the API or the daemon."""
