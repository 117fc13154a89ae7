"""One range check for every number of a configuration (search, sampler): finite, of the right
type, inside its bounds, or a one-line :class:`~godiff.errors.ConfigError` (exit 2) that names
the setting as the command line spells it.

Example:
    >>> number("guidance", 0.05, minimum=0)
    0.05
    >>> number("guidance", float("nan"), minimum=0)
    Traceback (most recent call last):
    ...
    godiff.errors.ConfigError: guidance: must be a finite number (got nan)
"""

from __future__ import annotations

import math
import numbers

from godiff.errors import ConfigError, shown

__all__ = ["number", "choice"]


def number(
    name: str,
    value: object,
    *,
    minimum: float | None = None,
    above: float | None = None,
    maximum: float | None = None,
    integer: bool = False,
):
    """``value`` checked: an int (``integer``) or a finite real, ``>= minimum``, ``> above``,
    ``<= maximum``; returned as given. ``name`` is shown with dashes (``relax-steps``)."""
    label = name.replace("_", "-")
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"{label}: expected {'an integer' if integer else 'a number'}, got {shown(value)}")
    if integer and not isinstance(value, numbers.Integral):
        raise ConfigError(f"{label}: expected an integer, got {shown(value)}")
    if not math.isfinite(value):
        raise ConfigError(f"{label}: must be a finite number (got {value})")
    if minimum is not None and value < minimum:
        raise ConfigError(f"{label}: must be at least {_bound(minimum)} (got {value})")
    if above is not None and value <= above:
        raise ConfigError(f"{label}: must be greater than {_bound(above)} (got {value})")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{label}: must be at most {_bound(maximum)} (got {value})")
    return value


def _bound(x: float) -> str:
    """A bound as a message shows it: an integer in full, a real in ``%g``."""
    return str(x) if isinstance(x, numbers.Integral) else f"{x:g}"


def choice(name: str, value: object, allowed) -> object:
    """``value`` checked to be one of ``allowed``; returned as given.

    Example:
        >>> choice("schedule", "linear", ("adaptive", "exponential"))
        Traceback (most recent call last):
        ...
        godiff.errors.ConfigError: schedule: expected one of adaptive, exponential (got 'linear')
    """
    if value not in tuple(allowed):
        raise ConfigError(
            f"{name.replace('_', '-')}: expected one of {', '.join(map(str, allowed))} (got {shown(value)})"
        )
    return value
