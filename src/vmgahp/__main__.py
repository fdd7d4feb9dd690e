"""``python -m vmgahp`` is the same program as the ``vmgahp`` console script."""

import sys

from vmgahp.gahp.cli import main

sys.exit(main())
