"""``python -m mia_utils``: the same as the ``mia-book`` command (see ``mia_utils.cli``)."""

import os
import sys

from .io import LAUNCHER_ENV, die_with_parent

if "LOCAL_RANK" in os.environ and LAUNCHER_ENV in os.environ:  # a worker of --num-processes: first of all
    die_with_parent()

from .cli import main  # noqa: E402  (after the check: importing torch takes seconds)

sys.exit(main())
