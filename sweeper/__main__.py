"""`python -m sweeper ...` = the `sweeper` command."""

import sys

from .cli import main

sys.exit(main())
