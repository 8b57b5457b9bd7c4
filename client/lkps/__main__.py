"""`python -m lkps`: the `lkps` command, as the console script runs it."""

import sys

from lkps.cli import main

sys.exit(main())
