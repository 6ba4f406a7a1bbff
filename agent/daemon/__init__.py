"""The per-node daemon: the run loop and its parts (findings inbox, observer, stuck pods,
reporter, remediator), its metrics and its HTTP endpoint. The outer layer: it owns the threads
and the clocks and carries out what agent.decide decided, once per tick.

May import every room below it; never agent.cli."""
