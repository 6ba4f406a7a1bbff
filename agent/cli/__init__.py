"""The command line: `main` (the parser and the exit codes' handling), one module per command
(`check`, `scanlog`, `remediate`, `run`, `status`, `cleanup`, `ready`, `trace`), what several
share (`common`: exit codes; `inputs`: a kernel log, this kernel's version) and `render` (the
tables and JSON of `check` and `scan-log`). The top of the house: it may import every room.
"""
