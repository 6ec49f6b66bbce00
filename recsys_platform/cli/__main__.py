"""`python -m recsys_platform.cli`: the console script."""

import sys

from recsys_platform.cli.main import main

sys.exit(main())
