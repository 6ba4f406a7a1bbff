"""memfrag-agent: sees, reports and fixes high-order memory fragmentation on a node."""

__version__ = "0.1.0"
