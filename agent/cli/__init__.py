"""The command line: argument parsing, one function per command, and the renderers of `check`.
The top of the house: it may import every room."""
