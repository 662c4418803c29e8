"""Multi-scale aggregation and similarity-matrix scoring against double-loop oracles."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import pyinstance
from pyinstance.postprocess import (
    REDUCTIONS,
    ScaleAggregation,
    from_dict,
    multiscale_scores,
    multiscale_search,
)
from pyinstance.postprocess import multiscale as multiscale_module


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _score_oracle(query: np.ndarray, reference: np.ndarray, reduction: str) -> float:
    """One query's S×D set against one reference's T×D set, element by element."""
    m = np.array([[float(np.dot(a, b)) for b in reference] for a in query])
    if "squared" in reduction:
        m = m * np.abs(m)
    if reduction.startswith("max"):
        return m.max()
    if reduction.startswith("row"):
        return sum(max(row) for row in m)
    return sum(max(col) for col in m.T)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_scores_match_the_double_loop(reduction, monkeypatch):
    rng = np.random.default_rng(0)
    queries = _unit(rng.standard_normal((5, 3, 8)))
    references = _unit(rng.standard_normal((7, 2, 8)))  # T != S
    monkeypatch.setattr(multiscale_module, "_BLOCK_ELEMENTS", 3 * 7 * 2 * 2)  # 2 queries a block
    expected = np.array([[_score_oracle(q, r, reduction) for r in references] for q in queries])
    np.testing.assert_allclose(
        multiscale_scores(queries, references, reduction), expected, atol=1e-5
    )


@pytest.mark.parametrize("reduction", ["max", "row_max_squared_sum"])
def test_search_returns_the_best_references_in_order(reduction):
    rng = np.random.default_rng(1)
    queries = _unit(rng.standard_normal((4, 2, 6)))
    references = _unit(rng.standard_normal((9, 3, 6)))
    references[5] = references[2]  # a tie: the smaller index comes first
    scores, indices = multiscale_search(queries, references, 4, reduction)
    full = np.array([[_score_oracle(q, r, reduction) for r in references] for q in queries])
    for i in range(4):
        expected = sorted(range(9), key=lambda j: (-round(full[i, j], 5), j))[:4]
        np.testing.assert_array_equal(indices[i], expected)
        np.testing.assert_allclose(scores[i], full[i, expected], atol=1e-5)
    assert scores.dtype == np.float32 and indices.dtype == np.int64


def test_equal_weights_equal_aggregate_scales():
    x = _unit(np.random.default_rng(2).standard_normal((6, 3, 10)))
    expected = pyinstance.aggregate_scales(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(ScaleAggregation(np.ones(3)).apply(x), expected, atol=1e-6)


def test_zero_weight_leaves_a_scale_out():
    x = _unit(np.random.default_rng(3).standard_normal((6, 3, 10)))
    aggregation = ScaleAggregation([2.0, 0.0, 2.0])
    np.testing.assert_allclose(aggregation.weights, [0.5, 0.0, 0.5])
    np.testing.assert_allclose(aggregation.apply(x), _unit(x[:, 0] + x[:, 2]), atol=1e-6)


def test_learnt_weights_prefer_the_informative_scale():
    rng = np.random.default_rng(4)
    n = 30
    anchors = _unit(rng.standard_normal((n, 2, 16)))
    positives = anchors.copy()
    positives[:, 0] = _unit(anchors[:, 0] + 0.2 * rng.standard_normal((n, 16)))  # scale 0 matches
    positives[:, 1] = _unit(rng.standard_normal((n, 16)))  # scale 1 is noise
    x = np.concatenate([anchors, positives])
    learnt = ScaleAggregation.fit_pairs(x, np.arange(n), np.arange(n, 2 * n), steps=10)
    assert learnt.weights[0] >= 0.8


def test_state_round_trips_through_json():
    aggregation = ScaleAggregation([0.2, 0.5, 0.3])
    restored = from_dict(json.loads(json.dumps(aggregation.to_dict())))
    np.testing.assert_array_equal(restored.weights, aggregation.weights)


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (
            lambda x: ScaleAggregation([0.0, 0.0]),
            ValueError,
            "weights: expected finite non-negative",
        ),
        (
            lambda x: ScaleAggregation([1.0, -1.0]),
            ValueError,
            "weights: expected finite non-negative",
        ),
        (
            lambda x: ScaleAggregation([1.0, 1.0]).apply(x),
            ValueError,
            "descriptors: expected 2 scales",
        ),
        (
            lambda x: ScaleAggregation([1.0]).apply(x[:, 0]),
            ValueError,
            r"descriptors: expected a \(N, S, D\)",
        ),
        (
            lambda x: ScaleAggregation.fit_pairs(x, [0], [0]),
            ValueError,
            "positive_idx: a pair matches",
        ),
        (
            lambda x: ScaleAggregation.fit_pairs(x, [0, 1], [1]),
            ValueError,
            "positive_idx: expected 2 entries like query_idx, got 1",
        ),
        (lambda x: ScaleAggregation.fit_pairs(x, [0], [1], steps=10**6), ValueError, "steps: "),
        (lambda x: multiscale_scores(x, x, "mean"), ValueError, "reduction: expected one of"),
        (
            lambda x: multiscale_scores(x, x[..., :2]),
            ValueError,
            "references: expected descriptors of dimension D=4",
        ),
        (lambda x: multiscale_search(x, x, 5), ValueError, r"k: expected 1 <= k <= N=4"),
        (
            lambda x: multiscale_scores(np.full_like(x, np.nan), x),
            ValueError,
            "queries: contains NaN",
        ),
    ],
)
def test_bad_input_names_the_argument(call, error, message):
    x = _unit(np.random.default_rng(5).standard_normal((4, 3, 4)))
    with pytest.raises(error, match=message):
        call(x)
