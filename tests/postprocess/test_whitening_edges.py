"""PCAWhitening at its edges: the smallest sets and dims, dead directions, singular pairs,
the Cholesky ridge, and the constructor's checks (expectations written with numpy here)."""

from __future__ import annotations

import numpy as np
import pytest

from pyinstance.postprocess import PCAWhitening
from pyinstance.postprocess import whitening as whitening_module


def test_two_descriptors_give_one_whitened_direction() -> None:
    x = np.array([[1.0, 0.0, 0.0], [3.0, 0.0, 0.0]])  # variance 1 along the first axis only
    whitening = PCAWhitening.fit(x)
    assert whitening.out_dim == 1
    np.testing.assert_allclose(whitening.mean, [2.0, 0.0, 0.0])
    np.testing.assert_allclose(np.abs(whitening.projection[:, 0]), [1.0, 0.0, 0.0], atol=1e-6)


def test_dim_one_keeps_the_leading_direction_whitened() -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((40, 5)) * np.array([4.0, 2.0, 1.0, 0.5, 0.25])
    values, vectors = np.linalg.eigh(np.cov(x.T, bias=True))
    expected = vectors[:, -1] / np.sqrt(values[-1])  # the largest eigenvalue comes last
    projection = PCAWhitening.fit(x, dim=1).projection[:, 0].astype(np.float64)
    np.testing.assert_allclose(projection * np.sign(projection @ expected), expected, rtol=1e-4)


def test_a_direction_without_variance_gets_the_floor_not_infinity() -> None:
    rng = np.random.default_rng(4)
    x = np.column_stack([rng.standard_normal(10) * 3.0, rng.standard_normal(10), np.full(10, 5.0)])
    largest = np.linalg.eigvalsh(np.cov(x.T, bias=True))[-1]
    whitening = PCAWhitening.fit(x)  # min(D=3, N-1=9) = 3 directions, the last one dead
    assert whitening.out_dim == 3
    dead = whitening.projection[:, 2].astype(np.float64)
    np.testing.assert_allclose(np.abs(dead), [0.0, 0.0, (1e-12 * largest) ** -0.5], rtol=1e-5)
    half = PCAWhitening.fit(x, power=0.5).projection[:, 2].astype(np.float64)
    np.testing.assert_allclose(np.abs(half[2]), (1e-12 * largest) ** -0.25, rtol=1e-5)


def test_pairs_whose_differences_span_a_subspace_get_the_smallest_ridge() -> None:
    rng = np.random.default_rng(5)
    x = rng.standard_normal((12, 4)).astype(np.float32)
    x[6:] = x[:6]
    x[6:, :2] += rng.integers(1, 4, size=(6, 2)).astype(np.float32)  # differences in axes 0, 1
    queries, positives = np.arange(6), np.arange(6, 12)
    differences = x[queries].astype(np.float64) - x[positives]
    assert (differences[:, 2:] == 0).all()
    covariance = differences.T @ differences / 6
    scale = np.trace(covariance) / 4
    # axes 2, 3 have no variance: Cholesky fails with no ridge and succeeds with 1e-10·scale
    projection = PCAWhitening.fit_pairs(x, queries, positives).projection.astype(np.float64)
    inverse = np.linalg.inv(covariance + 1e-10 * scale * np.eye(4))
    gram = projection @ projection.T  # = inverse(covariance + ridge), the rotation cancels
    np.testing.assert_allclose(gram[2:, 2:], inverse[2:, 2:], rtol=1e-4, atol=1e-5 * inverse[2, 2])


@pytest.mark.parametrize(
    ("matrix", "alpha"),
    [
        (np.diag([4.0, 1.0]), 0.0),  # positive definite: no ridge
        (np.diag([2.0, 0.0]), 1e-10),  # singular: the first step
        (np.diag([1.0, -1e-9]), 1e-8),  # 1e-10 and 1e-9 (× the mean eigenvalue) are too small
    ],
)
def test_cholesky_adds_the_smallest_ridge_in_steps_of_ten(matrix, alpha) -> None:
    factor = whitening_module._cholesky(matrix)
    scale = np.trace(matrix) / 2
    np.testing.assert_allclose(factor @ factor.T, matrix + alpha * scale * np.eye(2), rtol=1e-12)
    assert np.allclose(factor, np.tril(factor))


def test_a_pair_of_a_descriptor_with_itself_is_allowed_among_others() -> None:
    x = np.random.default_rng(6).standard_normal((8, 3))
    whitening = PCAWhitening.fit_pairs(x, [0, 1, 2, 3], [0, 5, 6, 7])
    assert whitening.out_dim == 3 and np.isfinite(whitening.projection).all()


def test_constructor_stores_float32_and_accepts_the_bounds() -> None:
    whitening = PCAWhitening(np.zeros(2), np.eye(2), "pairs", 0.0, 0.0)
    assert whitening.mean.dtype == np.float32 and whitening.projection.dtype == np.float32
    assert (whitening.in_dim, whitening.out_dim) == (2, 2)
    assert PCAWhitening([1.0, 2.0], np.ones((2, 3)), "pca", 1.0, 5.0).out_dim == 3
    np.testing.assert_allclose(
        PCAWhitening([1.0, 1.0], [[1.0], [2.0]]).apply([[2.0, 3.0], [1.0, 0.0]]), [[1.0], [-1.0]]
    )


@pytest.mark.parametrize(
    ("args", "error", "message"),
    [
        ((np.zeros(3), np.zeros((2, 2))), ValueError, "^projection: expected 3 rows like mean, got 2"),
        ((np.zeros(2), np.eye(2), "lda"), ValueError, "^method: expected one of"),
        ((np.zeros(2), np.eye(2), "pca", 1.5), ValueError, r"^power: expected a number in \[0.0, 1.0\]"),
        ((np.zeros(2), np.eye(2), "pca", -0.5), ValueError, r"^power: expected a number"),
        ((np.zeros(2), np.eye(2), "pca", 1.0, -0.1), ValueError, r"^ridge: expected a number in \[0.0, inf\]"),
        ((np.zeros((2, 1)), np.eye(2)), ValueError, r"^mean: expected a \(D,\) array"),
        ((np.zeros(2), np.zeros(2)), ValueError, r"^projection: expected a \(D, D_out\) array"),
    ],
)  # fmt: skip
def test_constructor_checks_name_the_argument(args, error, message) -> None:
    with pytest.raises(error, match=message):
        PCAWhitening(*args)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dim": 0}, "^dim: expected an integer >= 1, got 0"),
        ({"dim": 13}, r"^dim: expected at most 12 \(min\(D=12, N-1=19\) directions have variance\)"),
        ({"power": -0.1}, r"^power: expected a number in \[0.0, 1.0\]"),
        ({"ridge": -1.0}, r"^ridge: expected a number in \[0.0, inf\]"),
    ],
)  # fmt: skip
def test_fit_checks_name_the_argument(kwargs, message) -> None:
    x = np.random.default_rng(7).standard_normal((20, 12))
    with pytest.raises(ValueError, match=message):
        PCAWhitening.fit(x, **kwargs)


def test_fit_pairs_dim_is_bounded_by_d() -> None:
    x = np.random.default_rng(8).standard_normal((10, 3))
    assert PCAWhitening.fit_pairs(x, [0, 1, 2], [3, 4, 5], dim=3).out_dim == 3
    with pytest.raises(ValueError, match=r"^dim: expected at most 3 \(D=3\), got 4"):
        PCAWhitening.fit_pairs(x, [0, 1, 2], [3, 4, 5], dim=4)
    with pytest.raises(ValueError, match="^positive_idx: every pair matches a descriptor with"):
        PCAWhitening.fit_pairs(x, [0, 1], [0, 1])


def test_pairs_whitening_cut_to_fewer_dims_matches_the_reference_formula() -> None:
    # descriptors far from the origin: the rotation must come from the centred descriptors
    rng = np.random.default_rng(9)
    x = rng.standard_normal((40, 6)) * np.linspace(2.0, 0.5, 6) + 3.0
    queries, positives = np.arange(20), np.arange(20, 40)
    x[20:] = x[:20] + 0.3 * rng.standard_normal((20, 6))
    cols = x.T
    m = cols[:, queries].mean(axis=1, keepdims=True)
    df = cols[:, queries] - cols[:, positives]
    p = np.linalg.inv(np.linalg.cholesky(df @ df.T / df.shape[1]))
    w = p @ (cols - m)
    values, vectors = np.linalg.eigh(w @ w.T)
    expected = (vectors[:, ::-1][:, :3].T @ p).T  # (D, 3), columns up to sign
    projection = PCAWhitening.fit_pairs(x, queries, positives, dim=3).projection.astype(float)
    signs = np.sign((projection * expected).sum(axis=0))
    np.testing.assert_allclose(projection * signs, expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda x: PCAWhitening.fit_pairs(x[:, :, None], [0], [1]), ValueError, r"^descriptors: expected a \(N, D\) array"),
        (lambda x: PCAWhitening.fit_pairs(x, [0], [20]), ValueError, r"^positive_idx: row indices must lie in \[0, 20\)"),
        (lambda x: PCAWhitening.fit(x).apply(x[0]), ValueError, r"^descriptors: expected a \(N, D\) array"),
    ],
)  # fmt: skip
def test_pairs_and_apply_errors_name_the_argument(call, error, message) -> None:
    x = np.random.default_rng(10).standard_normal((20, 4))
    with pytest.raises(error, match=message):
        call(x)


@pytest.mark.parametrize(("n", "power"), [(5, 1.0), (7, 0.5)])
def test_fewer_rows_than_dimensions_match_the_covariance_eigenvectors(n, power) -> None:
    # N < D takes the thin SVD of the rows; the answer is the D×D covariance's
    rng = np.random.default_rng(11)
    x = rng.standard_normal((n, 12)) * np.linspace(3.0, 0.5, 12) + 1.0
    centred = x - x.mean(axis=0)
    values, vectors = np.linalg.eigh(centred.T @ centred / n)
    values, vectors = values[::-1][: n - 1], vectors[:, ::-1][:, : n - 1]
    expected = vectors * values ** (-power / 2)
    whitening = PCAWhitening.fit(x, power=power)
    assert whitening.out_dim == n - 1
    projection = whitening.projection.astype(np.float64)
    signs = np.sign((projection * expected).sum(axis=0))
    np.testing.assert_allclose(projection * signs, expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(whitening.mean, x.mean(axis=0), rtol=1e-6)
