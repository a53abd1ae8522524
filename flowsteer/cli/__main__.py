"""``python -m flowsteer.cli``: the same as the ``flowsteer`` command."""

import sys

from flowsteer.cli import main

sys.exit(main())
