"""One argument convention for every op: integers, reals, choices and the thread count.

* Integers: Python ``int`` or any numpy integer scalar (``numbers.Integral``); ``bool`` is
  refused (``True`` is not a count).
* Reals: Python ``int``/``float`` or numpy integer/float scalars (``numbers.Real``); ``bool``
  is refused; NaN and infinity are refused.
* Choices (strategy names and the like): a ``str`` among the allowed values.
* ``threads``: ``None`` (OpenMP's default) or an integer in ``1..MAX_THREADS``.

Every failure is a ``TypeError`` (wrong kind) or ``ValueError`` (wrong value) that names
the argument and what was expected.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import Any

from pyinstance import _backend

#: The largest ``threads`` any op accepts (csrc/include/pyinstance/threads.h, kMaxThreads).
MAX_THREADS: int = int(_backend._C.MAX_THREADS)


def check_int(value: Any, name: str, *, low: int | None = None, high: int | None = None) -> int:
    """``value`` as an ``int`` within ``[low, high]`` (either bound optional)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected an integer, got {type(value).__name__} {value!r}")
    result = int(value)
    if (low is not None and result < low) or (high is not None and result > high):
        if high is None:
            expected = f"an integer >= {low}"
        elif low is None:
            expected = f"an integer <= {high}"
        else:
            expected = f"an integer in [{low}, {high}]"
        raise ValueError(f"{name}: expected {expected}, got {result}")
    return result


def check_real(value: Any, name: str, *, low: float | None = None) -> float:
    """``value`` as a finite ``float`` (>= ``low`` when given)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a real number, got {type(value).__name__} {value!r}")
    result = float(value)
    if not math.isfinite(result):
        raise ValueError(f"{name}: expected a finite number, got {result}")
    if low is not None and result < low:
        raise ValueError(f"{name}: expected a number >= {low}, got {result}")
    return result


def check_choice(value: Any, name: str, choices: Iterable[str]) -> str:
    """``value`` when it is one of the ``choices`` strings."""
    allowed = tuple(choices)
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{name}: expected one of {', '.join(allowed)}, got {value!r}")
    return value


def check_threads(threads: Any) -> int:
    """The kernels' thread argument: 0 for ``None`` (OpenMP's default), else 1..MAX_THREADS."""
    if threads is None:
        return 0
    if isinstance(threads, bool) or not isinstance(threads, numbers.Integral):
        raise TypeError(
            f"threads: expected None or an integer in [1, {MAX_THREADS}], "
            f"got {type(threads).__name__} {threads!r}"
        )
    if not 1 <= int(threads) <= MAX_THREADS:
        raise ValueError(
            f"threads: expected None or an integer in [1, {MAX_THREADS}], got {int(threads)}"
        )
    return int(threads)
