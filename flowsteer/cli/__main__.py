"""``python -m flowsteer.cli``: the ``flowsteer`` command without an installed entry point."""

import sys

from flowsteer.cli import main

sys.exit(main())
