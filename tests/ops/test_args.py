"""The argument convention every op shares (pyinstance.ops._args)."""

from __future__ import annotations

import numpy as np
import pytest

from pyinstance import _backend
from pyinstance.ops import _args


def test_integers_accept_numpy_scalars_and_refuse_booleans():
    assert _args.check_int(np.int64(3), "n", low=1) == 3
    assert type(_args.check_int(np.uint8(3), "n")) is int
    for bad in (True, 2.0, "2", np.float32(2)):
        with pytest.raises(TypeError, match="n: expected an integer"):
            _args.check_int(bad, "n")
    with pytest.raises(ValueError, match=r"n: expected an integer in \[1, 4\], got 5"):
        _args.check_int(5, "n", low=1, high=4)
    with pytest.raises(ValueError, match="n: expected an integer >= 1, got 0"):
        _args.check_int(0, "n", low=1)


def test_reals_accept_numpy_scalars_and_refuse_booleans_and_non_finite():
    assert _args.check_real(np.float32(0.5), "m") == 0.5
    assert _args.check_real(np.int32(1), "m") == 1.0
    for bad in (True, "0.1", None):
        with pytest.raises(TypeError, match="m: expected a real number"):
            _args.check_real(bad, "m")
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="m: expected a finite number"):
            _args.check_real(bad, "m")
    with pytest.raises(ValueError, match="m: expected a number >= 0.0"):
        _args.check_real(-0.1, "m", low=0.0)


def test_choices_must_be_one_of_the_strings():
    assert _args.check_choice("a", "s", ("a", "b")) == "a"
    for bad in (["a"], "c", None):
        with pytest.raises(ValueError, match="s: expected one of a, b"):
            _args.check_choice(bad, "s", ("a", "b"))


def test_threads_bound_is_shared_with_the_kernels():
    assert _args.MAX_THREADS == _backend._C.MAX_THREADS >= 1
    assert _args.check_threads(None) == 0
    assert _args.check_threads(np.int16(2)) == 2
    for bad in (0, -1, _args.MAX_THREADS + 1, 2**31, 200_000):
        with pytest.raises(ValueError, match=r"threads: expected None or an integer in \[1, "):
            _args.check_threads(bad)
    for bad in (1.5, True, "2"):
        with pytest.raises(TypeError, match="threads: expected None or an integer"):
            _args.check_threads(bad)
