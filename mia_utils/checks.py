"""Checks of arguments: one clear sentence instead of a NaN or a traceback.

The one place that says what "a whole number >= 1" and "a number > 0" are, for the attacks'
hyper-parameters, the loaders' batch sizes, the data's ``n_eval`` and the command line's options.
"""

from __future__ import annotations

import numbers


def positive_int(name: str, value, error: type[Exception] = ValueError, unit: str = "") -> int:
    """A whole number >= 1 (a count of noises, steps, images); otherwise ``error`` naming
    ``name`` (``unit`` says what is counted: " of images per forward pass")."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise error(f"{name}={value!r}: give a whole number >= 1{unit}.")
    return int(value)


def positive(name: str, value) -> float:
    """A number > 0 (a norm's p, a guidance scale)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0:
        raise ValueError(f"{name}={value!r}: give a number > 0.")
    return float(value)


def batch_size(value) -> int | None:
    """None (the model's) or a whole number >= 1."""
    return None if value is None else positive_int("batch_size", value)
