"""The ops' argument checks at their bounds: every bound inclusive, each message's wording
for a lower bound, an upper bound and both."""

from __future__ import annotations

import numpy as np
import pytest

from pyinstance.ops import _args


def test_integer_bounds_are_inclusive_and_each_kind_of_bound_is_worded() -> None:
    assert _args.check_int(1, "n", low=1) == 1
    assert _args.check_int(4, "n", low=1, high=4) == 4
    assert _args.check_int(-7, "n", high=-7) == -7
    result = _args.check_int(np.int64(4), "n", high=4)
    assert result == 4 and type(result) is int
    with pytest.raises(ValueError, match=r"^n: expected an integer >= 1, got 0$"):
        _args.check_int(0, "n", low=1)
    with pytest.raises(ValueError, match=r"^n: expected an integer <= 4, got 5$"):
        _args.check_int(5, "n", high=4)
    with pytest.raises(ValueError, match=r"^n: expected an integer in \[1, 4\], got 0$"):
        _args.check_int(0, "n", low=1, high=4)


def test_the_real_lower_bound_is_inclusive() -> None:
    result = _args.check_real(np.float64(0.0), "m", low=0.0)
    assert result == 0.0 and type(result) is float
    assert _args.check_real(-1e300, "m") == -1e300
    with pytest.raises(ValueError, match=r"^m: expected a finite number, got -inf$"):
        _args.check_real(float("-inf"), "m", low=0.0)


def test_threads_from_one_to_the_maximum() -> None:
    for threads in (1, _args.MAX_THREADS, np.int32(1)):
        result = _args.check_threads(threads)
        assert result == int(threads) and type(result) is int


def test_a_choice_names_every_allowed_value() -> None:
    assert _args.check_choice("c", "s", iter(["a", "b", "c"])) == "c"
    with pytest.raises(ValueError, match=r"^s: expected one of a, b, c, got 'd'$"):
        _args.check_choice("d", "s", iter(["a", "b", "c"]))
