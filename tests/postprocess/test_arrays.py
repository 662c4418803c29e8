"""The post-processing modules' shared checks, each at its edges, with its exact answer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pyinstance.postprocess._arrays import (
    as_float_array,
    as_index_array,
    as_index_pairs,
    check_float,
    check_int,
    check_kind,
    l2_normalize,
)


def test_float_arrays_come_back_float32_contiguous_and_equal() -> None:
    given = np.arange(12, dtype=np.float64).reshape(3, 4)[:, ::2]  # not contiguous
    out = as_float_array(given, "x", 2, "(N, D)")
    assert out.dtype == np.float32 and out.flags.c_contiguous
    np.testing.assert_array_equal(out, [[0, 2], [4, 6], [8, 10]])
    # nested lists of ints, numpy integers
    np.testing.assert_array_equal(as_float_array([[1, 2]], "x", 2, "(N, D)"), [[1.0, 2.0]])
    assert as_float_array(np.array([3], dtype=np.int16), "x", 1, "(D,)").dtype == np.float32


def test_float_arrays_take_tensors_that_require_grad_and_of_any_float_dtype() -> None:
    tensor = torch.tensor([[1.5, -2.0]], dtype=torch.float64, requires_grad=True)
    out = as_float_array(tensor, "x", 2, "(N, D)")
    assert isinstance(out, np.ndarray) and out.dtype == np.float32
    np.testing.assert_array_equal(out, [[1.5, -2.0]])
    half = as_float_array(torch.tensor([0.5, 1.0], dtype=torch.bfloat16), "x", 1, "(D,)")
    assert half.dtype == np.float32
    np.testing.assert_array_equal(half, [0.5, 1.0])


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [
        ([[1.0, 2.0], [3.0]], TypeError, r"^x: expected a \(N, D\) array \("),
        (
            np.array([[True, False]]),
            TypeError,
            r"^x: expected a real-valued \(N, D\) array, got dtype bool",
        ),
        (
            np.array([["a", "b"]]),
            TypeError,
            r"^x: expected a real-valued \(N, D\) array, got dtype <U1",
        ),
        (
            np.array([[1j, 2]]),
            TypeError,
            r"^x: expected a real-valued \(N, D\) array, got dtype complex128",
        ),
        (np.zeros(3), ValueError, r"^x: expected a \(N, D\) array, got shape \(3,\)"),
        (np.zeros((2, 3, 1)), ValueError, r"^x: expected a \(N, D\) array, got shape \(2, 3, 1\)"),
        (
            np.zeros((0, 3)),
            ValueError,
            r"^x: expected a non-empty \(N, D\) array, got shape \(0, 3\)",
        ),
        (
            np.zeros((3, 0)),
            ValueError,
            r"^x: expected a non-empty \(N, D\) array, got shape \(3, 0\)",
        ),
        (np.array([[1.0, np.nan]]), ValueError, r"^x: contains NaN or infinite values"),
        (np.array([[1.0, -np.inf]]), ValueError, r"^x: contains NaN or infinite values"),
        # finite in float64, infinite once stored as float32
        pytest.param(
            np.array([[1e39, 0.0]]),
            ValueError,
            r"^x: contains NaN or infinite values",
            marks=pytest.mark.filterwarnings("ignore:overflow encountered in cast"),
        ),
        (
            torch.zeros(2, 2, device="meta"),
            ValueError,
            r"^x: expected a CPU array, got a tensor on meta",
        ),
    ],
)
def test_float_array_errors_name_the_argument(value, error, message) -> None:
    with pytest.raises(error, match=message):
        as_float_array(value, "x", 2, "(N, D)")


def test_index_arrays_are_int64_and_inclusive_of_the_edges() -> None:
    out = as_index_array(np.array([0, 4, 2], dtype=np.int32), "idx", 5)
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, [0, 4, 2])
    np.testing.assert_array_equal(as_index_array([np.uint8(1)], "idx", 2), [1])


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [
        (
            np.array([[0, 1]]),
            ValueError,
            r"^idx: expected a 1-D array of row indices, got shape \(1, 2\)",
        ),
        (np.int64(1), ValueError, r"^idx: expected a 1-D array of row indices, got shape \(\)"),
        (
            np.array([], dtype=np.int64),
            ValueError,
            r"^idx: expected at least one row index, got none",
        ),
        (np.array([True, False]), TypeError, r"^idx: expected integer row indices, got dtype bool"),
        (np.array([0.0, 1.0]), TypeError, r"^idx: expected integer row indices, got dtype float64"),
        (np.array([0, 5]), ValueError, r"^idx: row indices must lie in \[0, 5\), got 0\.\.5"),
        (np.array([-1, 2]), ValueError, r"^idx: row indices must lie in \[0, 5\), got -1\.\.2"),
    ],
)
def test_index_array_errors_name_the_argument(value, error, message) -> None:
    with pytest.raises(error, match=message):
        as_index_array(value, "idx", 5)


def test_index_pairs_check_each_side_and_their_lengths() -> None:
    queries, positives = as_index_pairs([0, 1], np.array([1, 0], dtype=np.int32), 2)
    assert queries.dtype == positives.dtype == np.int64
    np.testing.assert_array_equal(queries, [0, 1])
    np.testing.assert_array_equal(positives, [1, 0])
    with pytest.raises(ValueError, match=r"^query_idx: row indices must lie in \[0, 2\)"):
        as_index_pairs([2], [0], 2)
    with pytest.raises(ValueError, match=r"^positive_idx: row indices must lie in \[0, 2\)"):
        as_index_pairs([0], [2], 2)
    with pytest.raises(
        ValueError, match=r"^positive_idx: expected 2 entries like query_idx, got 3"
    ):
        as_index_pairs([0, 1], [1, 0, 1], 2)


def test_check_int_accepts_numpy_integers_from_the_minimum() -> None:
    assert check_int(3, "k", 3) == 3
    value = check_int(np.int32(7), "k", 1)
    assert value == 7 and type(value) is int
    with pytest.raises(ValueError, match=r"^k: expected an integer >= 3, got 2"):
        check_int(2, "k", 3)
    for bad in (True, 2.0, "2", None):
        with pytest.raises(TypeError, match=rf"^k: expected an integer, got {type(bad).__name__}"):
            check_int(bad, "k", 1)


def test_check_float_accepts_both_bounds_and_numpy_reals() -> None:
    assert check_float(0.0, "a", 0.0, 1.0) == 0.0
    assert check_float(1, "a", 0.0, 1.0) == 1.0
    value = check_float(np.float32(0.5), "a", 0.0, 1.0)
    assert value == 0.5 and type(value) is float
    assert type(check_float(2, "a", 0.0)) is float
    assert check_float(1e300, "a", 0.0) == 1e300  # no upper bound by default
    for bad in (-1e-9, 1.0 + 1e-9, float("nan")):
        with pytest.raises(ValueError, match=r"^a: expected a number in \[0\.0, 1\.0\], got"):
            check_float(bad, "a", 0.0, 1.0)
    with pytest.raises(ValueError, match=r"^a: expected a number in \[0\.0, inf\], got -1"):
        check_float(-1, "a", 0.0)
    for bad in (False, "1", None):
        with pytest.raises(
            TypeError, match=rf"^a: expected a real number, got {type(bad).__name__}"
        ):
            check_float(bad, "a", 0.0)


def test_check_kind_names_the_kind_and_every_missing_key() -> None:
    check_kind({"kind": "dba", "k": 1, "alpha": 3}, "dba", ("k", "alpha"))
    with pytest.raises(TypeError, match=r"^data: expected a dict, got list"):
        check_kind([("kind", "dba")], "dba", ())
    with pytest.raises(ValueError, match=r"^data: expected kind 'dba', got 'qe'"):
        check_kind({"kind": "qe", "k": 1}, "dba", ("k",))
    with pytest.raises(ValueError, match=r"^data: expected kind 'dba', got None"):
        check_kind({"k": 1}, "dba", ("k",))
    with pytest.raises(ValueError, match=r"^data: missing key\(s\) k, alpha for kind 'dba'$"):
        check_kind({"kind": "dba", "other": 1}, "dba", ("k", "alpha"))
    with pytest.raises(ValueError, match=r"^data: missing key\(s\) alpha for kind 'dba'$"):
        check_kind({"kind": "dba", "k": 1}, "dba", ("k", "alpha"))


def test_l2_normalize_rows_in_float32_with_zero_and_tiny_rows() -> None:
    x = np.array([[3.0, 4.0], [0.0, 0.0], [1e-13, 0.0]], dtype=np.float64)
    out = l2_normalize(x)
    assert out.dtype == np.float32 and out.shape == (3, 2)
    # the last row is divided by the 1e-12 floor, not by its own norm
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0], [0.1, 0.0]], rtol=1e-6, atol=0)
    sets = np.array([[[3.0, 4.0], [0.0, 2.0]]], dtype=np.float32)  # (1, 2, 2): last axis
    np.testing.assert_allclose(l2_normalize(sets), [[[0.6, 0.8], [0.0, 1.0]]], rtol=1e-6)
