"""The Kubernetes API, and the only room that imports `kubernetes` (in `client`).

`client` (raw JSON requests with time budgets and retries), `api` (the Protocol the daemon's
parts depend on, so a fake stands in for it in tests/unit), `errors` (ApiError, free of
`kubernetes`, so the standalone daemon never loads the client), `paths` (every API path once),
`informer` (list-and-watch caches), `events` (aggregated Events), `leases` (Lease slots and the
node's record), `nodes` (the condition write and the one taint read-modify-write), `admin` (the
cluster-wide read behind `status` and `kubectl memfrag`, and `cleanup`).

May import: agent.base, agent.config, agent.decide's types (what to write).
"""
