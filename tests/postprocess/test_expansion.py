"""DBA and query expansion against plain per-row loops."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pyinstance.postprocess import DatabaseAugmentation, QueryExpansion, from_dict


def _unit_rows(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _expand_oracle(x: np.ndarray, refs: np.ndarray, k: int, weight, skip_self: bool):
    out = []
    for i, row in enumerate(x.astype(np.float64)):
        sims = refs.astype(np.float64) @ row
        candidates = [j for j in range(len(refs)) if not (skip_self and j == i)]
        ranked = sorted(candidates, key=lambda j: (-sims[j], j))[:k]
        total = row.copy()
        for rank, j in enumerate(ranked, start=1):
            total += weight(rank, sims[j]) * refs[j]
        out.append(total / np.linalg.norm(total))
    return np.array(out)


@pytest.mark.parametrize("k", [1, 3])
def test_dba_rank_weights_match_the_loop(k):
    refs = _unit_rows(np.random.default_rng(0), 40, 16)
    expected = _expand_oracle(refs, refs, k, lambda r, s: (k + 1 - r) / (k + 1), skip_self=True)
    out = DatabaseAugmentation(k=k).apply(refs, threads=1)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_alpha_dba_weights_by_similarity():
    refs = _unit_rows(np.random.default_rng(1), 30, 8)
    expected = _expand_oracle(refs, refs, 4, lambda r, s: max(s, 0) ** 3, skip_self=True)
    np.testing.assert_allclose(DatabaseAugmentation(k=4, alpha=3).apply(refs), expected, atol=1e-5)


def test_dba_pulls_near_duplicates_together():
    rng = np.random.default_rng(2)
    base = _unit_rows(rng, 10, 32)
    refs = np.concatenate([base, base + 0.3 * _unit_rows(rng, 10, 32)])
    refs /= np.linalg.norm(refs, axis=1, keepdims=True)
    out = DatabaseAugmentation(k=1).apply(refs)
    before = (refs[:10] * refs[10:]).sum(axis=1)
    after = (out[:10] * out[10:]).sum(axis=1)
    assert (after > before).all()


@pytest.mark.parametrize("alpha", [0.0, 3.0])
def test_query_expansion_matches_the_loop(alpha):
    rng = np.random.default_rng(3)
    refs, queries = _unit_rows(rng, 50, 16), _unit_rows(rng, 7, 16)
    weight = (lambda r, s: 1.0) if alpha == 0 else (lambda r, s: max(s, 0) ** alpha)
    expected = _expand_oracle(queries, refs, 5, weight, skip_self=False)
    out = QueryExpansion(k=5, alpha=alpha).apply(queries, refs)
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_query_expansion_with_given_neighbours_and_padding():
    rng = np.random.default_rng(4)
    refs, queries = _unit_rows(rng, 6, 4), _unit_rows(rng, 2, 4)
    indices = np.array([[2, 5, -1], [0, 1, 3]])
    scores = np.array([[0.9, 0.5, -np.inf], [0.8, 0.7, 0.1]], dtype=np.float32)
    out = QueryExpansion(k=3).apply(queries, refs, neighbours=(scores, indices))
    expected = np.stack([queries[0] + refs[2] + refs[5], queries[1] + refs[0] + refs[1] + refs[3]])
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(out, expected, atol=1e-6)
    # Only the first k of K given neighbours are used.
    first = QueryExpansion(k=1).apply(queries, refs, neighbours=(scores, indices))
    expected = queries + refs[[2, 0]]
    np.testing.assert_allclose(
        first, expected / np.linalg.norm(expected, axis=1, keepdims=True), atol=1e-6
    )


def test_states_round_trip_through_json():
    for step in (
        DatabaseAugmentation(k=3),
        DatabaseAugmentation(k=2, alpha=1.5),
        QueryExpansion(k=4, alpha=3.0),
    ):
        assert from_dict(json.loads(json.dumps(step.to_dict()))) == step


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: DatabaseAugmentation(k=0), ValueError, "k: expected an integer >= 1"),
        (lambda: DatabaseAugmentation(k=2.5), TypeError, "k: expected an integer"),
        (lambda: DatabaseAugmentation(k=1, alpha=-1), ValueError, "alpha: expected a number"),
        (
            lambda: DatabaseAugmentation(k=3).apply(np.eye(3)),
            ValueError,
            "references: DBA with k=3 needs more than 3",
        ),
        (
            lambda: DatabaseAugmentation(k=1).apply(np.full((3, 2), np.inf)),
            ValueError,
            "references: contains NaN or inf",
        ),
        (
            lambda: QueryExpansion(k=2).apply(np.eye(2), np.eye(3)),
            ValueError,
            "references: expected 2 columns",
        ),
        (
            lambda: QueryExpansion(k=4).apply(np.eye(3), np.eye(3)),
            ValueError,
            "references: query expansion with k=4",
        ),
        (
            lambda: QueryExpansion(k=2).apply(
                np.eye(2), np.eye(2), neighbours=(np.zeros((2, 1)), np.zeros((2, 1), int))
            ),
            ValueError,
            r"neighbours: expected \(2, K >= 2\)",
        ),
        (
            lambda: QueryExpansion(k=1).apply(
                np.eye(2), np.eye(2), neighbours=(np.zeros((2, 1)), np.full((2, 1), 7))
            ),
            ValueError,
            r"neighbours: indices must be -1 or lie in \[0, 2\)",
        ),
        (
            lambda: QueryExpansion(k=1).apply(np.eye(2), np.eye(2), neighbours=[1, 2]),
            TypeError,
            "neighbours: expected a",
        ),
        (lambda: QueryExpansion.from_dict({"kind": "qe", "k": 1}), ValueError, "data: missing key"),
    ],
)
def test_bad_input_names_the_argument(call, error, message):
    with pytest.raises(error, match=message):
        call()
