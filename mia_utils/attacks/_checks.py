"""Checks of an attack's hyper-parameters: one clear sentence instead of a NaN or a traceback."""

from __future__ import annotations

import numbers


def positive_int(name: str, value) -> int:
    """A whole number >= 1 (a count of noises, steps, images)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name}={value!r}: give a whole number >= 1.")
    return int(value)


def positive(name: str, value) -> float:
    """A number > 0 (a norm's p, a guidance scale)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0:
        raise ValueError(f"{name}={value!r}: give a number > 0.")
    return float(value)


def batch_size(value) -> int | None:
    """None (the model's) or a whole number >= 1."""
    return None if value is None else positive_int("batch_size", value)
