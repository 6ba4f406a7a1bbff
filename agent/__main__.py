"""`python -m agent`: the same as the `memfrag-agent` command."""

import sys

from agent.cli.main import main

sys.exit(main())
