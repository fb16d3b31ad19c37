"""`python -m spikevimformer` = the `spikevimformer` command."""

import sys

from .cli import main

sys.exit(main())
