"""What every command shares: the exit codes and the chart's default namespace.

Exit codes follow the monitoring-plugin convention so existing monitoring can run `check`:
0 healthy, 1 at-risk, 2 fragmented, 3 could not assess (bad input or usage).
"""

from __future__ import annotations

from agent.assess.verdict import Verdict

EXIT = {Verdict.HEALTHY: 0, Verdict.AT_RISK: 1, Verdict.FRAGMENTED: 2}
EXIT_UNKNOWN = 3
DEFAULT_NAMESPACE = "memfrag-system"  # the chart's release namespace in the README
