"""The shared argument convention: numpy scalars accepted, booleans refused, names in errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pyinstance._validate import check_choice, check_float, check_int, check_optional_int


@pytest.mark.parametrize("value", [3, np.int64(3), np.int32(3), np.uint8(3)])
def test_int_accepts_python_and_numpy_integers(value):
    result = check_int(value, "k", minimum=1)
    assert result == 3 and type(result) is int


@pytest.mark.parametrize("value", [True, np.bool_(True), 3.0, np.float32(3), "3", None, [3]])
def test_int_refuses_other_types_naming_the_argument(value):
    with pytest.raises(TypeError, match=r"^k: expected an integer >= 1, got "):
        check_int(value, "k", minimum=1)


def test_int_bounds():
    assert check_int(0, "n", minimum=0, maximum=0) == 0
    with pytest.raises(ValueError, match=r"^n: expected an integer >= 1, got 0$"):
        check_int(0, "n", minimum=1)
    with pytest.raises(ValueError, match=r"^n: expected an integer >= 1 and <= 4, got 5$"):
        check_int(np.int64(5), "n", minimum=1, maximum=4)
    assert check_optional_int(None, "n", minimum=1) is None
    assert check_optional_int(np.int16(2), "n", minimum=1) == 2


@pytest.mark.parametrize("value", [0.5, 1, np.float32(0.5), np.float64(0.5), np.int64(1)])
def test_float_accepts_real_numbers(value):
    result = check_float(value, "margin", minimum=0)
    assert result == float(value) and type(result) is float


@pytest.mark.parametrize("value", ["0.1", True, np.bool_(False), None, 1j])
def test_float_refuses_other_types(value):
    with pytest.raises(TypeError, match=r"^margin: expected a finite number >= 0, got "):
        check_float(value, "margin", minimum=0)


def test_float_refuses_nan_infinity_and_out_of_range():
    with pytest.raises(ValueError, match=r"^margin: .* got nan$"):
        check_float(math.nan, "margin")
    with pytest.raises(ValueError, match="margin: expected a finite number"):
        check_float(np.float32("inf"), "margin")
    assert check_float(math.inf, "p", finite=False) == math.inf
    with pytest.raises(ValueError, match=r"^p: expected a number, got nan$"):
        check_float(math.nan, "p", finite=False)
    with pytest.raises(ValueError, match=r"^p: expected a finite number > 0, got 0.0$"):
        check_float(0.0, "p", minimum=0, exclusive_minimum=True)
    with pytest.raises(ValueError, match=r"^f: expected a finite number >= 0 and <= 1, got 1.5$"):
        check_float(1.5, "f", minimum=0, maximum=1)


def test_choice():
    assert check_choice("a", "strategy", ("a", "b")) == "a"
    with pytest.raises(ValueError, match=r"^strategy: expected one of 'a', 'b', got \['a'\]"):
        check_choice(["a"], "strategy", {"a": 0, "b": 1})
    with pytest.raises(ValueError, match="strategy: expected one of"):
        check_choice("c", "strategy", ("a", "b"))
