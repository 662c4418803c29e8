"""knn_dot's choice between the screened and the plain scan, at the edge of its bound: a
screen serves a call while the largest query norm (each query's own, in float64) times the
screen's largest reference norm stays below float32's largest value times 1e-8."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pyinstance.ops import KnnScreen, knn_dot

#: The bound on max ||q|| * max ||r|| below which a screen is used.
LIMIT = float(torch.finfo(torch.float32).max) * 1e-8


def _unit_refs(rows: int, dim: int) -> np.ndarray:
    x = np.random.default_rng(0).standard_normal((rows, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _queries(norms: list[float], dim: int) -> np.ndarray:
    """Rows of equal entries with the given float64 norms (float32 entries)."""
    return np.array([[norm / np.sqrt(dim)] * dim for norm in norms], np.float32)


def test_the_screen_serves_queries_whose_own_norms_stay_within_the_bound(screened_calls) -> None:  # noqa: ANN001
    refs = _unit_refs(64, 16)
    screen = KnnScreen.of(refs)
    assert screen.max_norm <= 1.0 + 1e-5  # unit rows (rounded up)
    # Each query's norm is 0.8 of the bound: screened. Together (the norm of the whole
    # matrix, 0.8 * sqrt(2)) they would pass it, and their float32 squares overflow.
    queries = _queries([0.8 * LIMIT, 0.8 * LIMIT], 16)
    with np.errstate(over="ignore"):  # float32 arithmetic: the squares overflow
        assert np.isinf(np.linalg.norm(queries[0]))
    plain = knn_dot(queries, refs, 3)
    screened = knn_dot(queries, refs, 3, screen=screen)
    assert screened_calls == [2]
    np.testing.assert_array_equal(screened[1], plain[1])
    np.testing.assert_array_equal(screened[0], plain[0])


@pytest.mark.parametrize(
    ("query_norm", "ref_norm"), [(1.2 * LIMIT, 1.0), (0.5 * LIMIT, 4.0), (LIMIT / 4, 4.5)]
)
def test_a_query_beyond_the_bound_is_scanned_plainly(screened_calls, query_norm, ref_norm) -> None:  # noqa: ANN001
    refs = _unit_refs(64, 16) * np.float32(ref_norm)
    screen = KnnScreen.of(refs)
    queries = _queries([query_norm], 16)
    plain = knn_dot(queries, refs, 3)
    got = knn_dot(queries, refs, 3, screen=screen)
    assert screened_calls == []
    np.testing.assert_array_equal(got[1], plain[1])
    np.testing.assert_array_equal(got[0], plain[0])


def test_a_product_of_exactly_the_bound_is_scanned_plainly(screened_calls) -> None:  # noqa: ANN001
    refs = _unit_refs(64, 16)
    screen = KnnScreen.of(refs)
    value = float(np.float32(LIMIT))  # one entry: the query's norm is exactly this
    screen.max_norm = LIMIT / value  # the product is exactly the bound (checked below)
    assert value * screen.max_norm == LIMIT
    queries = np.zeros((1, 16), np.float32)
    queries[0, 3] = value
    knn_dot(queries, refs, 3, screen=screen)
    assert screened_calls == []
    screen.max_norm = np.nextafter(screen.max_norm, 0.0)
    knn_dot(queries, refs, 3, screen=screen)
    assert screened_calls == [1]


def test_an_exclude_that_is_not_an_array_is_refused_by_name() -> None:
    with pytest.raises(TypeError) as caught:
        knn_dot(np.ones((2, 4), np.float32), np.ones((5, 4), np.float32), 1, exclude="0 1")
    assert str(caught.value) == (
        "exclude: expected a numpy array, torch tensor or cupy array, got str"
    )
