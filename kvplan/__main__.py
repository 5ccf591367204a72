"""`python -m kvplan ...`: see `kvplan.cli`."""

import sys

from .cli import main

sys.exit(main())
