"""The foundation every room stands on: the project's errors, bounded excerpts of hostile values,
the Kubernetes time formats and the safe file reader. Imports nothing of the agent's; no threads,
no sockets."""
