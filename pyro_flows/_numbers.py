"""Checks of scalar hyper-parameters (numbers and flags): clear errors naming the argument and
the value given, instead of a silent ``nan``/``inf`` that surfaces many steps later."""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Real

from torch import Tensor

__all__ = [
    "check_bool",
    "check_finite_number",
    "check_fraction",
    "check_interval",
    "check_positive_number",
    "has_values",
]


def check_finite_number(value: object, name: str) -> float:
    """``value`` as a float if it is a finite real number (not a ``bool``).

    :raises TypeError: naming ``name`` and the type given, for non-numbers and bools.
    :raises ValueError: naming ``name`` and the value given, for ``nan`` and ``+-inf``.

    >>> check_finite_number(2, "loc")
    2.0
    """
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} ({value!r})")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be finite, got {number}")
    return number


def check_positive_number(value: object, name: str) -> float:
    """``value`` as a float if it is a finite real number ``> 0`` (not a ``bool``).

    :raises TypeError: for non-numbers and bools; :raises ValueError: for ``<= 0``, ``nan``,
        ``inf``; both naming ``name`` and what was given.

    >>> check_positive_number(0.5, "tol")
    0.5
    """
    number = check_finite_number(value, name)
    if not number > 0:
        raise ValueError(f"{name} must be > 0, got {number}")
    return number


def check_bool(value: object, name: str) -> bool:
    """``value`` if it is a ``bool`` (NumPy's ``bool_`` included), else ``TypeError`` naming
    ``name`` and the type given.

    >>> check_bool(True, "reverse")
    True
    """
    if type(value).__name__ in ("bool", "bool_"):
        return bool(value)
    raise TypeError(f"{name} must be a bool, got {type(value).__name__} ({value!r})")


def check_interval(value: object, name: str) -> tuple[float, float]:
    """``value`` as a ``(lo, hi)`` pair of finite numbers with ``lo < hi``.

    :raises TypeError: unless ``value`` is a pair of real numbers; :raises ValueError: for
        non-finite ends or ``lo >= hi``; both naming ``name`` and what was given.

    >>> check_interval((-4, 4), "bounds")
    (-4.0, 4.0)
    """
    if isinstance(value, str | bytes) or not isinstance(value, Sequence) or len(value) != 2:
        raise TypeError(f"{name} must be a (lo, hi) pair of numbers, got {value!r}")
    lo, hi = (check_finite_number(v, name) for v in value)
    if not lo < hi:
        raise ValueError(f"{name} must be a (lo, hi) pair with lo < hi, got {tuple(value)}")
    return lo, hi


def check_fraction(value: object, name: str, *, closed_low: bool = False) -> float:
    """``value`` as a float in ``(0, 1]`` (``[0, 1]`` with ``closed_low``), naming ``name`` and
    what was given otherwise.

    >>> check_fraction(0.5, "anneal")
    0.5
    """
    number = check_finite_number(value, name)
    low_ok = number >= 0 if closed_low else number > 0
    if not (low_ok and number <= 1):
        interval = "[0, 1]" if closed_low else "(0, 1]"
        raise ValueError(f"{name} must be in {interval}, got {number}")
    return number


def has_values(tensor: Tensor) -> bool:
    """Whether ``tensor``'s values can be read: ``False`` on the ``meta`` device, whose
    tensors carry shapes and dtypes only (value checks and data-dependent branches are then
    skipped, so that shapes can still be planned).

    >>> has_values(torch.zeros(2)), has_values(torch.zeros(2, device="meta"))
    (True, False)
    """
    return tensor.device.type != "meta"
