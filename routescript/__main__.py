"""`python -m routescript ...` is the `routescript` command."""

import sys

from routescript.cli import main

sys.exit(main())
