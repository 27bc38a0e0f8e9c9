"""``python -m fer_tui``: the same as the ``fer-tui`` command."""

import sys

from .app import main

sys.exit(main())
