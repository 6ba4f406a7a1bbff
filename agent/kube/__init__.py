"""The Kubernetes API, and the only room that imports `kubernetes` (in `client`): raw JSON
requests with time budgets and retries, the API paths, list-and-watch caches, Events, Lease
slots and the node's record, the Node edits (condition, taint read-modify-write) and the
cluster-wide operator commands (status, cleanup).

May import: agent.base, agent.config, agent.decide's types (what to write)."""
