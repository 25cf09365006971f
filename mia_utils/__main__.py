"""``python -m mia_utils``: the same as the ``mia-book`` command (see ``mia_utils.cli``)."""

import sys

from .cli import main

sys.exit(main())
