"""Checks of arguments: one clear sentence instead of a NaN or a traceback.

The one place that says what "a whole number >= 1" and "a number > 0" are, for the attacks'
hyper-parameters, the loaders' batch sizes, the data's ``n_eval`` and the command line's options.
"""

from __future__ import annotations

import json
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


def like_default(name: str, value, default, error: type[Exception] = ValueError):
    """``value`` when it has the type of the parameter's ``default`` (a number for a number, a
    list for a list, a bool for a bool; anything where the default is None); otherwise ``error``
    naming ``name``. ``-p`` values of ``mia-book audit`` and ``mia-book score`` are checked so: a
    string "False" for a boolean is refused, not read as true."""
    number = isinstance(default, int | float) and not isinstance(default, bool)
    kinds = (int, float) if number else (list, tuple) if isinstance(default, list | tuple) else type(default)
    if default is not None and value is not None and (not isinstance(value, kinds)
                                                        or (number and isinstance(value, bool))):
        raise error(f"-p {name} {json.dumps(value)}: expected a {type(default).__name__} like the default "
                    f"{json.dumps(default)}.")
    return value


def batch_size(value) -> int | None:
    """None (the model's) or a whole number >= 1."""
    return None if value is None else positive_int("batch_size", value)
