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


def test_arguments_that_are_not_arrays_are_refused_by_name() -> None:
    queries, refs = np.ones((2, 4), np.float32), np.ones((5, 4), np.float32)
    for call, name in [
        (lambda: knn_dot(queries, refs, 1, exclude="0 1"), "exclude"),
        (lambda: knn_dot("queries", refs, 1), "queries"),
        (lambda: knn_dot(queries, "refs", 1), "refs"),
    ]:
        with pytest.raises(TypeError) as caught:
            call()
        assert str(caught.value) == (
            f"{name}: expected a numpy array, torch tensor or cupy array, got str"
        )


@pytest.mark.parametrize(
    ("queries", "refs", "k", "options", "error", "message"),
    [
        ((4,), (5, 4), 1, {}, ValueError, "queries: expected a 2-D (Q x D) array, got shape (4,)"),
        (
            (2, 4),
            (1, 5, 4),
            1,
            {},
            ValueError,
            "refs: expected a 2-D (N x D) array, got shape (1, 5, 4)",
        ),
        (
            (2, 3),
            (5, 4),
            1,
            {},
            ValueError,
            "queries and refs must have the same dimension D, got 3 and 4",
        ),
        ((2, 0), (3, 0), 1, {}, ValueError, "queries: expected D >= 1 columns, got 0"),
        (
            (2, 4),
            (5, 4),
            6,
            {},
            ValueError,
            "k: expected 1 <= k <= N=5 (the number of references), got 6",
        ),
        (
            (3, 4),
            (5, 4),
            1,
            {"exclude": np.zeros(2, np.int64)},
            ValueError,
            "exclude: expected 3 entries (one per query), got 2",
        ),
        (
            (3, 4),
            (5, 4),
            1,
            {"exclude": np.zeros((3, 1), np.int64)},  # the right entries, the wrong shape
            ValueError,
            "exclude: expected a 1-D array, got shape (3, 1)",
        ),
        (
            (3, 4),
            (5, 4),
            1,
            {"exclude": np.array([0, 5, 1])},
            ValueError,
            "exclude: entries must be -1 (none) or a reference index in [0, 5)",
        ),
        (
            (3, 4),
            (5, 4),
            5,
            {"exclude": np.array([-1, 2, -1])},
            ValueError,
            "k: expected k <= N - 1 = 4 when exclude removes a reference, got 5",
        ),
        (
            (2, 4),
            (5, 4),
            1,
            {"screen": "screen"},
            TypeError,
            "screen: expected a KnnScreen or None, got str",
        ),
        (
            (2, 4),
            (6, 4),
            1,
            {"screen": KnnScreen.of(np.ones((5, 4), np.float32))},
            ValueError,
            "screen: built for 5 x 4 references, not these (6, 4) (build it with "
            "KnnScreen.of(refs) or extend it)",
        ),
    ],
)
def test_every_refusal_names_the_argument_and_what_was_expected(
    queries, refs, k, options, error, message
) -> None:  # noqa: ANN001
    with pytest.raises(error) as caught:
        knn_dot(np.ones(queries, np.float32), np.ones(refs, np.float32), k, **options)
    assert str(caught.value) == message


def test_no_queries_with_an_exclude_of_none_give_empty_results() -> None:
    scores, indices = knn_dot(
        np.ones((0, 4), np.float32), np.ones((5, 4), np.float32), 5, exclude=np.zeros(0, np.int64)
    )
    assert scores.shape == (0, 5) and scores.dtype == np.float32
    assert indices.shape == (0, 5) and indices.dtype == np.int64


def test_results_are_float32_and_right_under_a_float64_default_dtype() -> None:
    rng = np.random.default_rng(3)
    queries = rng.integers(-3, 4, (3, 8)).astype(np.float32)  # exact integer products
    refs = rng.integers(-3, 4, (10, 8)).astype(np.float32)
    want = queries.astype(np.float64) @ refs.T.astype(np.float64)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        scores, indices = knn_dot(torch.from_numpy(queries), torch.from_numpy(refs), 4)
    finally:
        torch.set_default_dtype(previous)
    assert scores.dtype == torch.float32 and indices.dtype == torch.int64
    order = np.argsort(-want, axis=1, kind="stable")[:, :4]  # ties: the smaller index
    np.testing.assert_array_equal(indices.numpy(), order)
    np.testing.assert_array_equal(scores.numpy(), np.take_along_axis(want, order, 1))


def test_no_queries_read_no_references() -> None:
    # CPU references are checked for NaN while the kernel streams them: without queries
    # the kernel does not run, and nothing reads them.
    refs = np.ones((5, 4), np.float32)
    refs[2, 1] = np.nan
    scores, indices = knn_dot(np.ones((0, 4), np.float32), refs, 2)
    assert scores.shape == indices.shape == (0, 2)
    with pytest.raises(ValueError, match="^refs: contains NaN or infinite values$"):
        knn_dot(np.ones((1, 4), np.float32), refs, 2)
