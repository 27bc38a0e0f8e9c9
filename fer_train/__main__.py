"""``python -m fer_train ...`` is ``fer-train ...`` (for ``torchrun -m fer_train``)."""

import sys

from .cli import main

sys.exit(main())
