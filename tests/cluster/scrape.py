"""Reading an agent's /metrics the way a test looks at it: sample name with labels -> value."""

from __future__ import annotations

import urllib.request


def scrape(url: str, timeout: float = 5) -> dict[str, float]:
    """GET `url` (an agent's /metrics) and return each sample, `name{labels}` -> value."""
    with urllib.request.urlopen(url, timeout=timeout) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out
