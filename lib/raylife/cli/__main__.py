"""`python -m raylife.cli ...` = `raylife ...` (used where the console script is not on PATH)."""

import sys

from raylife.cli import main

sys.exit(main())
