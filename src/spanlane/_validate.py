"""Checking the numbers users pass in options: plain floats out, documented errors only.

A number from the caller may be a bool, an int too large for a float, or a float subclass whose
comparisons do anything at all; each check converts it to a plain float first, so that only
``ValueError`` (or the ``TypeError`` a caller asks for) comes out.
"""

from __future__ import annotations

import math


def as_float(name: str, value: object, *, error: type[Exception] = ValueError) -> float:
    """``value`` as a plain float.

    Raises:
        error (ValueError by default): ``value`` is not an int or float (a bool included).
        ValueError: an int too large for a float.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise error(f"{name} must be a number, got {value!r}")
    try:
        return float(value)
    except OverflowError:
        raise ValueError(f"{name} is an int too large for a float") from None


def positive_seconds(name: str, value: object) -> float:
    """``value`` as a finite float > 0, or ValueError."""
    seconds = as_float(name, value)
    if not (seconds > 0 and math.isfinite(seconds)):
        raise ValueError(f"{name} must be a finite, positive number of seconds, got {value!r}")
    return seconds
