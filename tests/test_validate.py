"""The shared argument convention: numpy scalars accepted, booleans refused, names in errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pyinstance._validate import (
    check_choice,
    check_float,
    check_float_array,
    check_int,
    check_optional_int,
)


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


@pytest.mark.parametrize(
    "value",
    [
        np.arange(6, dtype=np.float64).reshape(2, 3),
        np.arange(6, dtype=np.float16).reshape(2, 3),
        np.asfortranarray(np.arange(6, dtype=np.float32).reshape(2, 3)),
        [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]],
        torch.arange(6, dtype=torch.bfloat16).reshape(2, 3).requires_grad_(),
    ],
)
def test_float_array_is_contiguous_float32(value):
    array = check_float_array(value, "rows", "(N, D)", ndim=2, dim=3)
    assert array.dtype == np.float32 and array.flags.c_contiguous
    np.testing.assert_array_equal(array, np.arange(6, dtype=np.float32).reshape(2, 3))


def test_float_array_is_not_copied_when_it_is_one_already():
    rows = np.ones((4, 2), np.float32)
    assert check_float_array(rows, "rows", "(N, D)", ndim=2) is rows


def test_float_array_takes_every_listed_rank():
    assert check_float_array(np.ones((2, 3, 4)), "q", "(Q, D) or (Q, R, D)", ndim=(2, 3)).ndim == 3
    assert check_float_array(np.ones((2, 4)), "q", "(Q, D) or (Q, R, D)", ndim=(2, 3)).ndim == 2


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (np.ones((2, 3), np.int64), r"^rows: expected floating-point values, got dtype int64$"),
        (torch.ones(2, 3, dtype=torch.int32), r"^rows: expected floating-point values, got dtype "),
        (np.ones((2, 3), bool), r"^rows: expected floating-point values, got dtype bool$"),
        ([["a", "b"]], r"^rows: expected floating-point values, got dtype <U1$"),
        ([[1.0], [1.0, 2.0]], r"^rows: expected a \(N, D\) array \("),
        (np.ones(3), r"^rows: expected a \(N, D\) array with D=3, got shape \(3,\)$"),
        (np.ones((2, 4)), r"^rows: expected a \(N, D\) array with D=3, got shape \(2, 4\)$"),
        (np.array([[0.0, np.nan, 1.0]]), r"^rows: NaN or infinite values$"),
        (np.array([[0.0, -np.inf, 1.0]]), r"^rows: NaN or infinite values$"),
    ],
)
def test_float_array_refuses_naming_the_argument(value, message):
    with pytest.raises(ValueError, match=message):
        check_float_array(value, "rows", "(N, D)", ndim=2, dim=3)


def test_float_array_without_dim_names_only_the_layout():
    with pytest.raises(
        ValueError, match=r"^views: expected a \(M, D\) array, got shape \(2, 3, 4\)$"
    ):
        check_float_array(np.ones((2, 3, 4)), "views", "(M, D)", ndim=2)
