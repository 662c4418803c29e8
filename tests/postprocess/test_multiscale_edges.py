"""Scale weights and multi-scale search at their edges, against loops written here: the
simplex grid, the pair search over it (ties, shared queries), k = 1 and k = N, stable ties."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from pyinstance.postprocess import ScaleAggregation, multiscale_scores, multiscale_search
from pyinstance.postprocess import multiscale as multiscale_module


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


@pytest.mark.parametrize(("n_scales", "steps"), [(2, 1), (2, 4), (3, 2), (3, 5), (4, 3)])
def test_simplex_grid_is_every_weight_vector_on_the_lattice(n_scales, steps) -> None:
    expected = sorted(
        point
        for point in itertools.product(range(steps + 1), repeat=n_scales)
        if sum(point) == steps
    )
    grid = multiscale_module._simplex_grid(n_scales, steps)
    assert grid.dtype == np.float64
    np.testing.assert_allclose(
        sorted(map(tuple, np.rint(grid * steps).astype(int))), expected, atol=0
    )
    np.testing.assert_allclose(grid.sum(axis=1), 1.0)


def _fit_oracle(x: np.ndarray, queries, positives, steps: int) -> np.ndarray:
    """The grid search with plain loops: mean reciprocal rank, then mean margin, then order."""
    n, n_scales, _ = x.shape
    points = [
        np.array(p, dtype=np.float64) / steps
        for p in itertools.product(range(steps + 1), repeat=n_scales)
        if sum(p) == steps
    ]  # ascending lexicographic, the grid's order: the first best wins ties
    best, best_key = None, None
    for weights in points:
        aggregated = [_unit(sum(w * x[i, s] for s, w in enumerate(weights))) for i in range(n)]
        reciprocal, margins = [], []
        for q, p in zip(queries, positives, strict=True):
            own = {b for a, b in zip(queries, positives, strict=True) if a == q}
            rivals = [
                float(aggregated[q] @ aggregated[j]) for j in range(n) if j != q and j not in own
            ]
            positive = float(aggregated[q] @ aggregated[p])
            reciprocal.append(1.0 / (1 + sum(r >= positive for r in rivals)))
            margins.append(positive - max(rivals))
        key = (np.mean(reciprocal), np.mean(margins))
        if best_key is None or key > best_key:
            best, best_key = weights, key
    return best


def test_grid_order_matches_the_oracle_order() -> None:
    grid = multiscale_module._simplex_grid(3, 2)
    np.testing.assert_allclose(
        grid * 2, [[0, 0, 2], [0, 1, 1], [0, 2, 0], [1, 0, 1], [1, 1, 0], [2, 0, 0]]
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_learnt_weights_match_the_loop_search(seed) -> None:
    rng = np.random.default_rng(seed)
    x = _unit(rng.standard_normal((9, 3, 5))).astype(np.float32)
    x[8] = x[1]  # a rival exactly as similar as a positive: counted as ranked above it
    queries = np.array([0, 0, 2, 3, 4])  # query 0 has two positives: neither competes
    positives = np.array([1, 5, 6, 7, 1])
    learnt = ScaleAggregation.fit_pairs(x, queries, positives, steps=3)
    expected = _fit_oracle(x.astype(np.float64), queries, positives, 3)
    np.testing.assert_allclose(learnt.weights, expected, atol=1e-12)


def test_a_tie_with_a_rival_costs_the_positive_a_rank() -> None:
    # Scale 0: one rival above the positive and one tied with it (rank 3 when the tie counts
    # against the positive, else 2, with the better margin); scale 1: one rival above (rank 2).
    q = np.array([1.0, 0.0])
    p = _unit(np.array([1.0, 0.5]))
    x = np.zeros((4, 2, 2), dtype=np.float32)
    x[0] = [q, q]  # the query
    x[1] = [p, p]  # its positive (similarity 0.894 at both scales)
    x[2] = [p, _unit(np.array([1.0, 2.0]))]  # tied at scale 0, far at scale 1
    x[3] = [_unit(np.array([1.0, 0.45])), _unit(np.array([1.0, 0.2]))]  # above at both
    learnt = ScaleAggregation.fit_pairs(x, [0], [1], steps=1)
    np.testing.assert_array_equal(learnt.weights, [0.0, 1.0])


def test_the_largest_grid_is_allowed() -> None:
    x = _unit(np.random.default_rng(3).standard_normal((3, 2, 2))).astype(np.float32)
    with pytest.raises(ValueError, match=r"^steps: 20000 steps over 2 scales make 20001 weight"):
        ScaleAggregation.fit_pairs(x, [0], [1], steps=20_000)
    assert ScaleAggregation.fit_pairs(x, [0], [1], steps=19_999).weights.shape == (2,)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda x: ScaleAggregation([[1.0, 1.0]]), r"^weights: expected a non-empty 1-D array, got shape \(1, 2\)"),
        (lambda x: ScaleAggregation([]), r"^weights: expected a non-empty 1-D array, got shape \(0,\)"),
        (lambda x: ScaleAggregation([1.0, np.nan]), "^weights: expected finite non-negative"),
        (lambda x: ScaleAggregation([1.0, np.inf]), "^weights: expected finite non-negative"),
        (lambda x: ScaleAggregation.fit_pairs(x, [0, 1], [2]), "^positive_idx: expected 2 entries like query_idx, got 1"),
        (lambda x: ScaleAggregation.fit_pairs(x, [0], [1], steps=0), "^steps: expected an integer >= 1, got 0"),
        (lambda x: ScaleAggregation.fit_pairs(x, [0], [4]), r"^positive_idx: row indices must lie in \[0, 4\)"),
        (lambda x: multiscale_search(x, x, 0), "^k: expected an integer >= 1, got 0"),
        (lambda x: multiscale_scores(x[:, 0], x), r"^queries: expected a \(Q, S, D\) array"),
        (lambda x: multiscale_scores(x, x[:, 0]), r"^references: expected a \(N, T, D\) array"),
    ],
)  # fmt: skip
def test_bad_input_names_the_argument(call, message) -> None:
    x = _unit(np.random.default_rng(5).standard_normal((4, 3, 4))).astype(np.float32)
    with pytest.raises((ValueError, TypeError), match=message):
        call(x)


def test_zero_weight_scales_are_allowed_and_weights_normalised() -> None:
    aggregation = ScaleAggregation([0.0, 3.0])
    np.testing.assert_array_equal(aggregation.weights, [0.0, 1.0])
    assert aggregation.weights.dtype == np.float64


def test_search_with_k_one_and_k_all_and_many_ties() -> None:
    rng = np.random.default_rng(6)
    base = _unit(rng.standard_normal((5, 2, 8)))
    references = np.concatenate([base] * 40).astype(np.float32)  # 200 rows, each 40 times
    queries = _unit(rng.standard_normal((3, 2, 8))).astype(np.float32)
    full = np.array(
        [[max(float(a @ b) for a in q for b in r) for r in references] for q in queries]
    )
    for k in (1, 200):
        scores, indices = multiscale_search(queries, references, k)
        for i in range(3):
            expected = sorted(range(200), key=lambda j: (-round(full[i, j], 5), j))[:k]
            np.testing.assert_array_equal(indices[i], expected)
            np.testing.assert_allclose(scores[i], full[i, expected], atol=1e-5)
    assert multiscale_scores(queries, references).dtype == np.float32


def test_search_in_several_blocks_equals_one_block(monkeypatch) -> None:
    rng = np.random.default_rng(7)
    queries = _unit(rng.standard_normal((5, 3, 8))).astype(np.float32)
    references = _unit(rng.standard_normal((7, 2, 8))).astype(np.float32)
    whole = multiscale_search(queries, references, 3, "row_max_sum")
    monkeypatch.setattr(multiscale_module, "_BLOCK_ELEMENTS", 3 * 7 * 2 * 2)  # 2 queries a block
    blocks = multiscale_search(queries, references, 3, "row_max_sum")
    np.testing.assert_array_equal(blocks[1], whole[1])
    np.testing.assert_array_equal(blocks[0], whole[0])
    full = np.einsum("qsd,ntd->qnst", queries, references).max(axis=3).sum(axis=2)
    expected = np.argsort(-full, axis=1, kind="stable")[:, :3]
    np.testing.assert_array_equal(blocks[1], expected)


def test_fit_pairs_default_and_errors_name_descriptors() -> None:
    rng = np.random.default_rng(4)
    anchors = _unit(rng.standard_normal((30, 2, 16)))
    positives = anchors.copy()
    positives[:, 0] = _unit(anchors[:, 0] + 1.5 * rng.standard_normal((30, 16)))
    positives[:, 1] = _unit(anchors[:, 1] + 1.5 * rng.standard_normal((30, 16)))
    x = np.concatenate([anchors, positives]).astype(np.float32)
    weights = ScaleAggregation.fit_pairs(x, np.arange(30), np.arange(30, 60)).weights
    expected = ScaleAggregation.fit_pairs(x, np.arange(30), np.arange(30, 60), steps=10).weights
    np.testing.assert_array_equal(weights, expected)
    with pytest.raises(ValueError, match=r"^descriptors: expected a \(N, S, D\) array"):
        ScaleAggregation.fit_pairs(x[:, 0], [0], [1])


def test_the_default_grid_has_ten_steps() -> None:
    # data whose best weights lie on the 1/10 grid and not on a finer or coarser one
    rng = np.random.default_rng(0)
    anchors = _unit(rng.standard_normal((12, 2, 8)))
    positives = anchors.copy()
    positives[:, 0] = _unit(anchors[:, 0] + 1.0 * rng.standard_normal((12, 8)))
    positives[:, 1] = _unit(anchors[:, 1] + 1.3 * rng.standard_normal((12, 8)))
    x = np.concatenate([anchors, positives]).astype(np.float32)
    queries, pairs = np.arange(12), np.arange(12, 24)
    expected = _fit_oracle(x.astype(np.float64), queries, pairs, 10)
    assert 0 < expected[0] < 1
    learnt = ScaleAggregation.fit_pairs(x, queries, pairs).weights
    np.testing.assert_allclose(learnt, expected, atol=1e-12)
    finer = ScaleAggregation.fit_pairs(x, queries, pairs, steps=11).weights
    assert not np.allclose(finer, expected)  # the data tells the grids apart
