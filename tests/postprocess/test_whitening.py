"""PCAWhitening against the cnnimageretrieval formulas (columns convention) in float64."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pyinstance.postprocess import PCAWhitening, from_dict


def _normalize_columns(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=0, keepdims=True)


def _pca_oracle(x: np.ndarray, dim: int) -> np.ndarray:
    """pcawhitenlearn + whitenapply with descriptors as columns; returns the whitened rows."""
    cols = x.T.astype(np.float64)
    m = cols.mean(axis=1, keepdims=True)
    cov = (cols - m) @ (cols - m).T / cols.shape[1]
    values, vectors = np.linalg.eig(cov)
    order = values.real.argsort()[::-1]
    p = np.diag(values.real[order] ** -0.5) @ vectors.real[:, order].T
    return _normalize_columns(p[:dim] @ (cols - m)).T


def _pairs_oracle(x: np.ndarray, qidx: np.ndarray, pidx: np.ndarray) -> np.ndarray:
    """whitenlearn + whitenapply with descriptors as columns."""
    cols = x.T.astype(np.float64)
    m = cols[:, qidx].mean(axis=1, keepdims=True)
    df = cols[:, qidx] - cols[:, pidx]
    p = np.linalg.inv(np.linalg.cholesky(df @ df.T / df.shape[1]))
    w = p @ (cols - m)
    values, vectors = np.linalg.eig(w @ w.T)
    order = values.real.argsort()[::-1]
    return _normalize_columns(vectors.real[:, order].T @ p @ (cols - m)).T


@pytest.fixture
def data() -> np.ndarray:
    rng = np.random.default_rng(0)
    return (rng.standard_normal((200, 12)) * np.linspace(3, 0.2, 12)).astype(np.float32)


def _gram(x: np.ndarray) -> np.ndarray:  # invariant to the sign of each eigenvector
    return x.astype(np.float64) @ x.T.astype(np.float64)


@pytest.mark.parametrize("dim", [12, 5])
def test_pca_whitening_matches_the_reference_formula(data, dim):
    whitening = PCAWhitening.fit(data, dim=dim)
    out = whitening.apply(data)
    assert out.shape == (200, dim) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(_gram(out), _gram(_pca_oracle(data, dim)), atol=1e-4)


def test_whitened_training_set_has_identity_covariance(data):
    whitening = PCAWhitening.fit(data)
    z = (data - whitening.mean) @ whitening.projection
    np.testing.assert_allclose(z.T @ z / len(z), np.eye(12), atol=1e-3)


def test_shrinkage_power_and_ridge(data):
    values = np.linalg.eigvalsh(np.cov(data.T.astype(np.float64), bias=True))[::-1]
    for power, ridge in [(0.5, 0.0), (1.0, 0.1), (0.0, 0.0)]:
        whitening = PCAWhitening.fit(data, power=power, ridge=ridge)
        z = (data - whitening.mean) @ whitening.projection
        variances = np.sort(np.var(z.astype(np.float64), axis=0))[::-1]
        expected = np.sort(values / (values + ridge * values[0]) ** power)[::-1]
        np.testing.assert_allclose(variances, expected, rtol=1e-3)


def test_pca_dimension_is_bounded_by_the_training_set():
    x = np.random.default_rng(1).standard_normal((5, 12))
    assert PCAWhitening.fit(x).out_dim == 4  # N - 1 directions have variance
    with pytest.raises(ValueError, match=r"dim: expected at most 4"):
        PCAWhitening.fit(x, dim=5)


def test_learnt_whitening_from_pairs_matches_the_reference_formula(data):
    rng = np.random.default_rng(2)
    anchors = rng.choice(200, 60, replace=False)
    # Matching pairs: the anchor plus noise mostly along the first (largest) axes.
    noise = rng.standard_normal((60, 12)) * np.linspace(1.0, 0.1, 12)
    x = np.concatenate([data, data[anchors] + noise.astype(np.float32)])
    qidx, pidx = anchors, np.arange(200, 260)
    whitening = PCAWhitening.fit_pairs(x, qidx, pidx)
    assert whitening.method == "pairs"
    np.testing.assert_allclose(
        _gram(whitening.apply(x)), _gram(_pairs_oracle(x, qidx, pidx)), atol=1e-4
    )
    # The matching-pair differences come out whitened.
    d = (x[qidx] - x[pidx]) @ whitening.projection
    np.testing.assert_allclose(d.T @ d / len(d), np.eye(12), atol=1e-3)


def test_pairs_with_a_singular_difference_covariance_still_fit(data):
    whitening = PCAWhitening.fit_pairs(data, np.arange(3), np.arange(3, 6), dim=4)
    assert np.isfinite(whitening.projection).all() and whitening.apply(data).shape == (200, 4)


def test_state_round_trips_through_json(data):
    whitening = PCAWhitening.fit(data, dim=6, power=0.7, ridge=0.01)
    restored = from_dict(json.loads(json.dumps(whitening.to_dict())))
    assert isinstance(restored, PCAWhitening)
    assert (restored.power, restored.ridge, restored.method) == (0.7, 0.01, "pca")
    np.testing.assert_array_equal(restored.apply(data), whitening.apply(data))


def test_cpu_tensors_are_accepted_and_other_devices_named(data):
    whitening = PCAWhitening.fit(torch.from_numpy(data), dim=4)
    np.testing.assert_array_equal(whitening.apply(torch.from_numpy(data)), whitening.apply(data))
    with pytest.raises(ValueError, match="descriptors: expected a CPU array"):
        whitening.apply(torch.empty(3, 12, device="meta"))


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (
            lambda x: PCAWhitening.fit(x[:1]),
            ValueError,
            "descriptors: PCA-whitening needs at least 2",
        ),
        (
            lambda x: PCAWhitening.fit(x[:, :, None]),
            ValueError,
            r"descriptors: expected a \(N, D\)",
        ),
        (
            lambda x: PCAWhitening.fit(np.where(x > 2, np.nan, x)),
            ValueError,
            "descriptors: contains NaN",
        ),
        (lambda x: PCAWhitening.fit(x[:0]), ValueError, "descriptors: expected a non-empty"),
        (
            lambda x: PCAWhitening.fit(x, power=2),
            ValueError,
            r"power: expected a number in \[0.0, 1.0\]",
        ),
        (lambda x: PCAWhitening.fit(x, dim=0), ValueError, "dim: expected an integer >= 1"),
        (
            lambda x: PCAWhitening.fit(x).apply(x[:, :5]),
            ValueError,
            "descriptors: expected 12 columns",
        ),
        (
            lambda x: PCAWhitening.fit_pairs(x, [0, 1], [2]),
            ValueError,
            "positive_idx: expected 2 entries",
        ),
        (
            lambda x: PCAWhitening.fit_pairs(x, [0, 999], [1, 2]),
            ValueError,
            r"query_idx: row indices must lie in \[0, 200\)",
        ),
        (lambda x: PCAWhitening.fit_pairs(x, [0.0], [1]), TypeError, "query_idx: expected integer"),
        (
            lambda x: PCAWhitening.from_dict({"kind": "dba"}),
            ValueError,
            "data: expected kind 'pca_whitening'",
        ),
        (
            lambda x: from_dict({"kind": "pca_whitening", "mean": [0.0]}),
            ValueError,
            "data: missing key",
        ),
        (lambda x: from_dict({"kind": "nope"}), ValueError, "data: unknown post-processing kind"),
    ],
)
def test_bad_input_names_the_argument(data, call, error, message):
    with pytest.raises(error, match=message):
        call(data)
