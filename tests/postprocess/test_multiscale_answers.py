"""ScaleAggregation at its edges: the smallest grid, ties broken by the margin and then by
the grid's order, weights normalised in float64."""

from __future__ import annotations

import numpy as np

from pyinstance.postprocess import ScaleAggregation, multiscale

from .conftest import unit_sets


def test_a_single_scale_is_learnt_as_weight_one() -> None:
    descriptors = unit_sets(4, p=1, d=5, seed=2)
    learnt = ScaleAggregation.fit_pairs(descriptors, [0, 2], [1, 3], steps=3)
    np.testing.assert_array_equal(learnt.weights, [1.0])
    np.testing.assert_allclose(learnt.apply(descriptors), descriptors[:, 0], rtol=0, atol=1e-7)


def _margins(x: np.ndarray, queries: np.ndarray, positives: np.ndarray, weights) -> tuple:
    """(mean reciprocal rank, mean of positive minus best rival) in float64, by loops."""
    aggregated = np.einsum("nsd,s->nd", x.astype(np.float64), weights)
    aggregated /= np.linalg.norm(aggregated, axis=1, keepdims=True)
    reciprocal, margin = [], []
    for query, positive in zip(queries, positives, strict=True):
        paired = set(positives[queries == query]) | {query}
        rivals = [aggregated[query] @ aggregated[j] for j in range(len(x)) if j not in paired]
        score = aggregated[query] @ aggregated[positive]
        reciprocal.append(1 / (1 + sum(r >= score for r in rivals)))
        margin.append(score - max(rivals))
    return float(np.mean(reciprocal)), float(np.mean(margin))


def test_equal_reciprocal_ranks_are_decided_by_the_mean_margin() -> None:
    """Every weight vector ranks both positives first; the middle one has the largest mean
    margin over each query's own best rival (neither the largest mean of positive plus
    rival, nor the margin over the best rival of all queries)."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(6, 2, 4))
    x /= np.linalg.norm(x, axis=2, keepdims=True)
    x[1] = x[0] + 0.3 * rng.normal(size=(2, 4))
    x[3] = x[2] + 0.3 * rng.normal(size=(2, 4))
    x = (x / np.linalg.norm(x, axis=2, keepdims=True)).astype(np.float32)
    queries, positives = np.array([0, 2]), np.array([1, 3])
    grid = [np.array([i, 4 - i]) / 4 for i in range(5)]
    scores = [_margins(x, queries, positives, w) for w in grid]
    assert all(reciprocal == 1.0 for reciprocal, _ in scores)
    margins = [margin for _, margin in scores]
    assert int(np.argmax(margins)) == 2 and sorted(margins)[-1] - sorted(margins)[-2] > 0.05
    learnt = ScaleAggregation.fit_pairs(x, queries, positives, steps=4)
    np.testing.assert_array_equal(learnt.weights, [0.5, 0.5])


def test_exact_ties_keep_the_first_weights_of_the_grid() -> None:
    """Two identical scales of small integers: every weight vector on the 1/2 grid gives the
    same descriptors exactly, and the first, (0, 1), is kept."""
    rows = np.array([[1, 2, 0], [2, 1, 0], [0, 1, 2], [1, 0, 2]], dtype=np.float32)
    x = np.stack([rows, rows], axis=1)
    learnt = ScaleAggregation.fit_pairs(x, [0, 2], [1, 3], steps=2)
    np.testing.assert_array_equal(learnt.weights, [0.0, 1.0])


def test_weights_are_normalised_in_float64() -> None:
    weights = ScaleAggregation(np.array([1, 2], dtype=np.float32)).weights
    assert weights.dtype == np.float64 and weights.tolist() == [1 / 3, 2 / 3]


def _blocks(queries: np.ndarray, references: np.ndarray) -> list[tuple[int, tuple[int, int]]]:
    return [(start, s.shape) for start, s in multiscale._score_blocks(queries, references, "max")]


def test_queries_are_scored_in_disjoint_blocks_of_the_memory_budget(monkeypatch) -> None:  # noqa: ANN001
    """Each query is in exactly one block (one dense product): blocks of
    ``_BLOCK_ELEMENTS // (S·N·T)`` queries, at least one, starting at 0, block, 2·block, …;
    each block's scores are the best product over both scale axes, by loops."""
    queries, references = unit_sets(5, p=3, d=4, seed=3), unit_sets(7, p=2, d=4, seed=4)
    budget_per_query = 3 * 7 * 2  # S·N·T similarities a query
    monkeypatch.setattr(multiscale, "_BLOCK_ELEMENTS", 2 * budget_per_query + 1)
    assert _blocks(queries, references) == [(0, (2, 7)), (2, (2, 7)), (4, (1, 7))]
    for budget in (budget_per_query, budget_per_query - 1):  # one query, less than one
        monkeypatch.setattr(multiscale, "_BLOCK_ELEMENTS", budget)
        assert _blocks(queries, references) == [(i, (1, 7)) for i in range(5)]
    q64, r64 = queries.astype(np.float64), references.astype(np.float64)
    for start, scores in multiscale._score_blocks(queries, references, "max"):
        for row, i in enumerate(range(start, start + scores.shape[0])):
            for j in range(7):
                best = max(q64[i, s] @ r64[j, t] for s in range(3) for t in range(2))
                assert abs(scores[row, j] - best) < 1e-6
