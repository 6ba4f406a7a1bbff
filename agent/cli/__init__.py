"""The command line: `main` (the parser), one module per command (`check`, `scanlog`,
`remediate`, `run`, `status`, `cleanup`, `ready`, `trace`), `kubectl` (the `kubectl memfrag`
plugin: `nodes`, `describe`, `events`), what several share (`common`: the exit codes and their
epilog, the parser that exits 3, the cluster options; `output`: -o table|wide|json|yaml;
`inputs`: a kernel log, this kernel's version) and `render` (the tables and JSON of `check` and
`scan-log`). The top of the house: it may import every room.
"""
