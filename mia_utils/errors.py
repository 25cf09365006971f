"""The package's two errors: bad input data and a bad checkpoint.

Both are subclasses of ``ValueError``; the message says what was wrong and how to fix it; the command line
turns either into one sentence and exit status 2.
"""


class DataError(ValueError):
    """Bad input data; the message says what was wrong and how to fix it."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message says what was wrong and how to fix it."""
