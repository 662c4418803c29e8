"""DBA and query expansion at their edges: α = 0 and 1, negative similarities, a collection
exactly as large as k, and every check of given neighbours (expectations written here)."""

from __future__ import annotations

import numpy as np
import pytest

from pyinstance.postprocess import DatabaseAugmentation, QueryExpansion


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _top(sims: np.ndarray, k: int) -> np.ndarray:
    return np.array([sorted(range(len(row)), key=lambda j: (-row[j], j))[:k] for row in sims])


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_dba_with_similarity_weights_zero_and_one(alpha) -> None:
    refs = _unit(np.random.default_rng(0).standard_normal((12, 6))).astype(np.float32)
    x = refs.astype(np.float64)
    sims = x @ x.T
    np.fill_diagonal(sims, -np.inf)
    top = _top(sims, 3)
    expected = []
    for i, row in enumerate(top):
        weights = [1.0 if alpha == 0 else max(sims[i, j], 0.0) for j in row]
        expected.append(x[i] + sum(w * x[j] for w, j in zip(weights, row, strict=True)))
    out = DatabaseAugmentation(k=3, alpha=alpha).apply(refs)
    np.testing.assert_allclose(out, _unit(np.array(expected)), atol=1e-5)


@pytest.mark.parametrize("alpha", [1.0, 3.0])
def test_negative_similarities_get_no_weight(alpha) -> None:
    query = np.array([[1.0, 0.0, 0.0]], dtype=np.float32)
    refs = _unit([[-0.6, 0.8, 0.0], [-0.8, 0.0, 0.6], [0.6, 0.0, 0.8]]).astype(np.float32)
    out = QueryExpansion(k=3, alpha=alpha).apply(query, refs)
    np.testing.assert_allclose(out, _unit(query + 0.6**alpha * refs[2]), atol=1e-6)


def test_alpha_one_weights_by_similarity_and_zero_similarity_adds_nothing() -> None:
    query = np.array([[1.0, 0.0]], dtype=np.float32)
    refs = np.array([[0.0, 1.0], [0.6, 0.8]], dtype=np.float32)
    out = QueryExpansion(k=2, alpha=1.0).apply(query, refs)
    np.testing.assert_allclose(out, _unit([[1.36, 0.48]]), atol=1e-6)
    out = QueryExpansion(k=2, alpha=0.0).apply(query, refs)
    np.testing.assert_allclose(out, _unit([[1.6, 1.8]]), atol=1e-6)


def test_a_collection_exactly_as_large_as_k() -> None:
    refs = _unit(np.eye(3) + 0.1).astype(np.float32)
    queries = _unit([[1.0, 0.2, 0.0]]).astype(np.float32)
    out = QueryExpansion(k=3).apply(queries, refs)
    np.testing.assert_allclose(out, _unit(queries + refs.sum(axis=0)), atol=1e-6)
    refs = _unit([[1.0, 0.1, 0.2], [0.1, 1.0, 0.4], [0.2, 0.4, 1.0]]).astype(np.float32)
    augmented = DatabaseAugmentation(k=2).apply(refs)  # N = k + 1: the smallest allowed
    order = {0: (2, 1), 1: (2, 0), 2: (1, 0)}  # by similarity: 0·2 > 0·1, 1·2 > 1·0
    expected = [refs[i] + 2 / 3 * refs[a] + 1 / 3 * refs[b] for i, (a, b) in order.items()]
    np.testing.assert_allclose(augmented, _unit(np.array(expected)), atol=1e-6)


def test_padding_in_a_one_reference_collection() -> None:
    refs = np.array([[0.0, 1.0]], dtype=np.float32)
    queries = np.array([[1.0, 0.0], [0.6, 0.8]], dtype=np.float32)
    neighbours = (np.array([[0.0, -np.inf], [0.8, np.nan]]), np.array([[0, -1], [0, -1]]))
    out = QueryExpansion(k=2).apply(queries, refs, neighbours=neighbours)
    np.testing.assert_allclose(out, _unit(queries + refs[0]), atol=1e-6)


def test_dba_augments_with_its_neighbours_by_rank() -> None:
    refs = _unit([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]]).astype(np.float32)
    out = DatabaseAugmentation(k=2).apply(refs)
    # neighbours of 0: 1 then 2; of 1: 0 (0.8) then 2 (0.6); of 2: 1 then 0
    weights = (2 / 3, 1 / 3)
    expected = [
        refs[0] + weights[0] * refs[1] + weights[1] * refs[2],
        refs[1] + weights[0] * refs[0] + weights[1] * refs[2],
        refs[2] + weights[0] * refs[1] + weights[1] * refs[0],
    ]
    np.testing.assert_allclose(out, _unit(np.array(expected)), atol=1e-6)


def _qe(neighbours, k: int = 1):
    return QueryExpansion(k=k).apply(np.eye(2), np.eye(2), neighbours=neighbours)


@pytest.mark.parametrize(
    ("neighbours", "k", "error", "message"),
    [
        ((np.zeros((2, 1)), np.zeros((2, 1), int), None), 1, TypeError, "^neighbours: expected a"),
        ((np.zeros((2, 1)),), 1, TypeError, "^neighbours: expected a"),
        ((np.zeros((2, 1)), np.zeros((2, 1))), 1, TypeError, "^neighbours: expected integer indices, got dtype float64"),
        ((np.zeros((2, 1)), np.zeros((2, 1), bool)), 1, TypeError, "^neighbours: expected integer indices, got dtype bool"),
        ((np.zeros(2), np.zeros(2, int)), 1, ValueError, r"^neighbours: expected \(2, K >= 1\) indices, got shape \(2,\)"),
        ((np.zeros((3, 1)), np.zeros((3, 1), int)), 1, ValueError, r"^neighbours: expected \(2, K >= 1\) indices, got shape \(3, 1\)"),
        ((np.zeros((2, 1)), np.full((2, 1), -2)), 1, ValueError, r"^neighbours: indices must be -1 or lie in \[0, 2\)"),
        ((np.zeros((2, 1)), np.full((2, 1), 2)), 1, ValueError, r"^neighbours: indices must be -1 or lie in \[0, 2\)"),
        ((np.zeros((2, 2)), np.zeros((2, 1), int)), 1, ValueError, r"^neighbours: expected scores of shape \(2, 1\) like the indices, got \(2, 2\)"),
        ((np.array([[np.nan], [0.0]]), np.zeros((2, 1), int)), 1, ValueError, "^neighbours: scores contain NaN"),
        ((np.array([[0.0, np.nan], [0.0, 0.0]]), np.ones((2, 2), int)), 2, ValueError, "^neighbours: scores contain NaN"),
    ],
)  # fmt: skip
def test_given_neighbours_are_checked(neighbours, k, error, message) -> None:
    with pytest.raises(error, match=message):
        _qe(neighbours, k)


def test_given_neighbours_at_the_limits_are_accepted() -> None:
    # index N - 1, index -1 and exactly k columns; a NaN beyond the first k is never read
    scores = np.array([[0.5, np.nan], [0.0, 0.2]])
    out = _qe((scores, np.array([[1, 0], [-1, 0]])), k=1)
    np.testing.assert_allclose(out, _unit([[1.0, 1.0], [0.0, 1.0]]), atol=1e-6)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: DatabaseAugmentation(k=1, alpha=-0.5), r"^alpha: expected a number in \[0.0, inf\]"),
        (lambda: QueryExpansion(k=1, alpha=-0.5), r"^alpha: expected a number in \[0.0, inf\]"),
        (lambda: QueryExpansion(k=0), "^k: expected an integer >= 1, got 0"),
        (lambda: DatabaseAugmentation(k=0), "^k: expected an integer >= 1, got 0"),
        (lambda: DatabaseAugmentation(k=2).apply(np.eye(2)), "^references: DBA with k=2 needs more than 2 references, got 2"),
        (lambda: QueryExpansion(k=1).apply(np.eye(2)[:, :, None], np.eye(2)), r"^queries: expected a \(Q, D\) array"),
        (lambda: QueryExpansion(k=1).apply(np.eye(2), np.eye(2)[:, :, None]), r"^references: expected a \(N, D\) array"),
        (lambda: DatabaseAugmentation(k=1).apply(np.eye(2)[:, :, None]), r"^references: expected a \(N, D\) array"),
    ],
)  # fmt: skip
def test_parameters_are_checked_by_name(call, message) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        call()


def test_alpha_zero_is_accepted_and_stored_as_float() -> None:
    assert DatabaseAugmentation(k=1, alpha=0).alpha == 0.0
    assert isinstance(QueryExpansion(k=1, alpha=2).alpha, float)
    assert DatabaseAugmentation(k=1).alpha is None


def test_dba_stores_an_integer_alpha_as_a_float() -> None:
    dba = DatabaseAugmentation(k=1, alpha=np.int64(3))
    assert type(dba.alpha) is float and dba.alpha == 3.0
    assert dba.to_dict() == {"kind": "dba", "k": 1, "alpha": 3.0}
    assert type(dba.to_dict()["alpha"]) is float
