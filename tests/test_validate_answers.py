"""The argument checks' exact answers and messages at every bound (written for mutation
testing: each message is matched whole, each bound on both sides)."""

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


def _message(error_type, function, *args, **kwargs) -> str:
    with pytest.raises(error_type) as raised:
        function(*args, **kwargs)
    return str(raised.value)


def test_int_bounds_are_inclusive_on_both_sides():
    assert check_int(1, "k", minimum=1, maximum=3) == 1
    assert check_int(3, "k", minimum=1, maximum=3) == 3
    assert check_int(-7, "k") == -7
    assert _message(ValueError, check_int, 4, "k", minimum=1, maximum=3) == (
        "k: expected an integer >= 1 and <= 3, got 4"
    )
    assert _message(ValueError, check_int, 0, "k", minimum=1, maximum=3) == (
        "k: expected an integer >= 1 and <= 3, got 0"
    )


def test_int_with_only_a_maximum():
    assert check_int(-100, "n", maximum=4) == -100
    assert check_int(4, "n", maximum=4) == 4
    assert _message(ValueError, check_int, 5, "n", maximum=4) == (
        "n: expected an integer <= 4, got 5"
    )
    assert _message(TypeError, check_int, 2.5, "n", maximum=4) == (
        "n: expected an integer <= 4, got 2.5 (float)"
    )


def test_int_without_bounds_names_no_range():
    assert _message(TypeError, check_int, "3", "seed") == "seed: expected an integer, got '3' (str)"
    assert _message(TypeError, check_int, True, "seed") == (
        "seed: expected an integer, got True (bool)"
    )
    assert _message(TypeError, check_int, np.bool_(False), "seed") == (
        "seed: expected an integer, got np.False_ (bool)"
    )


def test_int_returns_a_python_int_of_the_value():
    assert type(check_int(np.uint64(2**40), "n")) is int
    assert check_int(np.uint64(2**40), "n") == 2**40
    assert check_int(np.int8(-3), "n", minimum=-3) == -3


def test_optional_int_checks_a_value_with_both_bounds():
    assert check_optional_int(3, "n", minimum=1, maximum=3) == 3
    assert _message(ValueError, check_optional_int, 4, "n", minimum=1, maximum=3) == (
        "n: expected an integer >= 1 and <= 3, got 4"
    )
    assert _message(ValueError, check_optional_int, 0, "n", minimum=1, maximum=3) == (
        "n: expected an integer >= 1 and <= 3, got 0"
    )
    assert (
        _message(TypeError, check_optional_int, "x", "n") == "n: expected an integer, got 'x' (str)"
    )


def test_float_bounds_are_inclusive_unless_exclusive():
    assert check_float(0, "p", minimum=0, maximum=1) == 0.0
    assert check_float(1, "p", minimum=0, maximum=1) == 1.0
    assert _message(ValueError, check_float, -0.5, "p", minimum=0, maximum=1) == (
        "p: expected a finite number >= 0 and <= 1, got -0.5"
    )
    assert _message(ValueError, check_float, 1.25, "p", maximum=1) == (
        "p: expected a finite number <= 1, got 1.25"
    )
    assert check_float(0.001, "p", minimum=0, exclusive_minimum=True) == 0.001
    assert _message(ValueError, check_float, -1, "p", minimum=0, exclusive_minimum=True) == (
        "p: expected a finite number > 0, got -1.0"
    )
    assert check_float(-3.5, "p") == -3.5


def test_float_infinities_when_not_finite():
    assert check_float(-math.inf, "t", finite=False) == -math.inf
    assert check_float(math.inf, "t", minimum=0, finite=False) == math.inf
    assert _message(ValueError, check_float, -math.inf, "t", minimum=0, finite=False) == (
        "t: expected a number >= 0, got -inf"
    )
    assert _message(ValueError, check_float, math.inf, "t", maximum=1, finite=False) == (
        "t: expected a number <= 1, got inf"
    )
    assert _message(ValueError, check_float, -math.inf, "t") == (
        "t: expected a finite number, got -inf"
    )
    assert _message(ValueError, check_float, np.float64("nan"), "t", minimum=0, maximum=1) == (
        "t: expected a finite number >= 0 and <= 1, got nan"
    )


def test_float_types():
    assert (
        _message(TypeError, check_float, "0.1", "lr")
        == "lr: expected a finite number, got '0.1' (str)"
    )
    assert _message(TypeError, check_float, True, "lr", finite=False) == (
        "lr: expected a number, got True (bool)"
    )
    assert _message(TypeError, check_float, None, "lr", minimum=0, exclusive_minimum=True) == (
        "lr: expected a finite number > 0, got None (NoneType)"
    )
    result = check_float(np.float32(0.5), "lr")
    assert result == 0.5 and type(result) is float


def test_choice_returns_the_value_and_lists_the_choices():
    choices = {"mean": 1, "max": 2}
    assert check_choice("max", "reduce", choices) == "max"
    assert check_choice(2, "k", [1, 2, 3]) == 2
    assert _message(ValueError, check_choice, "sum", "reduce", choices) == (
        "reduce: expected one of 'mean', 'max', got 'sum' (str)"
    )
    assert _message(ValueError, check_choice, {"a"}, "mode", ("a",)) == (
        "mode: expected one of 'a', got {'a'} (set)"
    )


def test_float_array_from_a_float64_tensor_is_float32_numbers():
    tensor = torch.tensor([[0.1, 0.2], [0.3, 1e-9]], dtype=torch.float64, requires_grad=True)
    array = check_float_array(tensor, "q", "(N, D)", ndim=2, dim=2)
    assert array.dtype == np.float32 and array.flags.c_contiguous
    np.testing.assert_array_equal(array, np.array([[0.1, 0.2], [0.3, 1e-9]], np.float32))


def test_float_array_refuses_tensors_of_other_dtypes_by_name():
    assert (
        _message(
            ValueError,
            check_float_array,
            torch.ones(2, 2, dtype=torch.int64),
            "q",
            "(N, D)",
            ndim=2,
        )
        == "q: expected floating-point values, got dtype torch.int64"
    )
    assert (
        _message(
            ValueError, check_float_array, torch.ones(2, 2, dtype=torch.bool), "q", "(N, D)", ndim=2
        )
        == "q: expected floating-point values, got dtype torch.bool"
    )


def test_float_array_refuses_complex_values():
    assert (
        _message(
            ValueError, check_float_array, np.ones((2, 2), np.complex64), "q", "(N, D)", ndim=2
        )
        == "q: expected floating-point values, got dtype complex64"
    )


def test_float_array_ragged_message_names_the_layout_and_numpy_error():
    message = _message(ValueError, check_float_array, [[1.0], [1.0, 2.0]], "q", "(Q, D)", ndim=2)
    assert message.startswith("q: expected a (Q, D) array (")
    assert "inhomogeneous" in message and message.endswith(")")


def test_float_array_rank_and_last_axis():
    layout = "(Q, D) or (Q, R, D)"
    assert check_float_array(np.zeros((1, 2, 5)), "q", layout, ndim=(2, 3), dim=5).shape == (
        1,
        2,
        5,
    )
    assert (
        _message(
            ValueError, check_float_array, np.zeros((1, 2, 3, 5)), "q", layout, ndim=(2, 3), dim=5
        )
        == "q: expected a (Q, D) or (Q, R, D) array with D=5, got shape (1, 2, 3, 5)"
    )
    assert (
        _message(ValueError, check_float_array, np.zeros((2, 4)), "q", layout, ndim=(2, 3), dim=5)
        == "q: expected a (Q, D) or (Q, R, D) array with D=5, got shape (2, 4)"
    )
    assert check_float_array(np.zeros((3, 7)), "q", "(N, D)", ndim=2).shape == (3, 7)
    assert _message(ValueError, check_float_array, np.zeros(3), "q", "(N, D)", ndim=2) == (
        "q: expected a (N, D) array, got shape (3,)"
    )


def test_float_array_values_and_finiteness():
    rows = np.array([[1.5, -2.25], [3.0, 65504.0]], np.float64)
    array = check_float_array(rows, "r", "(N, D)", ndim=2)
    np.testing.assert_array_equal(array, rows.astype(np.float32))
    assert array.dtype == np.float32
    strided = np.arange(12, dtype=np.float32).reshape(3, 4)[:, ::2]
    result = check_float_array(strided, "r", "(N, D)", ndim=2)
    assert result.flags.c_contiguous
    np.testing.assert_array_equal(result, [[0, 2], [4, 6], [8, 10]])
    assert (
        _message(ValueError, check_float_array, np.array([[np.inf, 0.0]]), "r", "(N, D)", ndim=2)
        == "r: NaN or infinite values"
    )
    too_big = np.array([[1e39, 0.0]], np.float64)  # finite in float64, infinite in float32
    with np.errstate(over="ignore"):  # numpy's cast warning is not the contract
        message = _message(ValueError, check_float_array, too_big, "r", "(N, D)", ndim=2)
    assert message == "r: NaN or infinite values"
