"""Argument checks shared by every public entry: one convention for ints, floats, choices
and float arrays.

- Integers: Python ``int`` and numpy integer scalars (anything ``numbers.Integral``) are
  accepted and returned as ``int``; booleans (``True``, ``numpy.bool_``) are refused.
- Floats: any real number (``int``, ``float``, numpy integer or floating scalars) is
  accepted and returned as ``float``; booleans and strings are refused; NaN is refused,
  and infinities unless ``finite=False``.
- A value of the wrong type raises ``TypeError``; a value of the right type outside its
  range raises ``ValueError``. Every message starts with the argument's name.
- Float arrays (:func:`check_float_array`): numpy arrays, nested sequences and tensors
  (detached, moved to the CPU) of a floating-point dtype, returned as C-contiguous float32
  numpy arrays; a wrong dtype, shape or a NaN/infinite value raises ``ValueError`` (arrays
  are data, and the command line and the service report ``ValueError`` to the user).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Collection
from typing import Any, TypeVar

import numpy as np
import torch

T = TypeVar("T")


def _describe(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def _is_bool(value: Any) -> bool:
    # numpy.bool_ is not numbers.Integral, but refuse it by name for a clear message.
    return isinstance(value, bool) or type(value).__name__ in {"bool_", "bool"}


def _range_text(
    minimum: float | None, maximum: float | None, *, exclusive_minimum: bool = False
) -> str:
    parts = []
    if minimum is not None:
        parts.append(f"{'>' if exclusive_minimum else '>='} {minimum}")
    if maximum is not None:
        parts.append(f"<= {maximum}")
    return " and ".join(parts)


def check_int(
    value: Any, name: str, *, minimum: int | None = None, maximum: int | None = None
) -> int:
    """``value`` as an ``int`` within ``[minimum, maximum]`` (bounds optional)."""
    wanted = "an integer" + (
        f" {_range_text(minimum, maximum)}" if minimum is not None or maximum is not None else ""
    )
    if _is_bool(value) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected {wanted}, got {_describe(value)}")
    number = int(value)
    if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
        raise ValueError(f"{name}: expected {wanted}, got {number}")
    return number


def check_optional_int(
    value: Any, name: str, *, minimum: int | None = None, maximum: int | None = None
) -> int | None:
    """``None``, or ``value`` checked by :func:`check_int`."""
    return None if value is None else check_int(value, name, minimum=minimum, maximum=maximum)


def check_float(
    value: Any,
    name: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    exclusive_minimum: bool = False,
    finite: bool = True,
) -> float:
    """``value`` as a ``float``, not NaN (nor infinite when ``finite``), within the bounds.

    ``exclusive_minimum`` makes the lower bound strict (``> minimum``).
    """
    bounds = _range_text(minimum, maximum, exclusive_minimum=exclusive_minimum)
    wanted = ("a finite number" if finite else "a number") + (f" {bounds}" if bounds else "")
    if _is_bool(value) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected {wanted}, got {_describe(value)}")
    number = float(value)
    if math.isnan(number) or (finite and math.isinf(number)):
        raise ValueError(f"{name}: expected {wanted}, got {number}")
    if minimum is not None and (number <= minimum if exclusive_minimum else number < minimum):
        raise ValueError(f"{name}: expected {wanted}, got {number}")
    if maximum is not None and number > maximum:
        raise ValueError(f"{name}: expected {wanted}, got {number}")
    return number


def check_choice(value: Any, name: str, choices: Collection[T]) -> T:
    """``value`` if it is one of ``choices`` (compared as hashable values)."""
    listed = ", ".join(repr(choice) for choice in choices)
    try:
        known = value in choices
    except TypeError:  # unhashable (e.g. a list) in a dict or set
        known = False
    if not known:
        raise ValueError(f"{name}: expected one of {listed}, got {_describe(value)}")
    return value


def check_float_array(
    value: Any, name: str, layout: str, *, ndim: int | tuple[int, ...], dim: int | None = None
) -> np.ndarray:
    """``value`` as a finite, C-contiguous float32 numpy array (not copied when it is one).

    Args:
        value: a numpy array, a nested sequence or a torch tensor (any device) of floats.
        name: the argument's name, first in every message.
        layout: the expected shape in words, last axis ``D``: ``"(N, D)"``,
            ``"(Q, D) or (Q, R, D)"``.
        ndim: the accepted number(s) of dimensions.
        dim: the size the last axis (``D``) must have (None: any).
    """
    if isinstance(value, torch.Tensor):
        if not value.is_floating_point():
            raise ValueError(f"{name}: expected floating-point values, got dtype {value.dtype}")
        value = value.detach().to("cpu", torch.float32).numpy()
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as error:  # ragged nested sequences
        raise ValueError(f"{name}: expected a {layout} array ({error})") from None
    if array.dtype.kind != "f":
        raise ValueError(f"{name}: expected floating-point values, got dtype {array.dtype}")
    ranks = (ndim,) if isinstance(ndim, int) else ndim
    if array.ndim not in ranks or (dim is not None and array.shape[-1] != dim):
        wanted = f"{layout} array" + ("" if dim is None else f" with D={dim}")
        raise ValueError(f"{name}: expected a {wanted}, got shape {array.shape}")
    array = np.ascontiguousarray(array, dtype=np.float32)
    if not np.isfinite(array).all():
        raise ValueError(f"{name}: NaN or infinite values")
    return array
