"""search.py's helpers on hand-made snapshots: the checks, exclusion, tombstones, windows."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pyinstance.index import search as search_module
from pyinstance.index.store import Snapshot


def _snapshot(descriptors: np.ndarray, live: list[int]) -> Snapshot:
    """Slots ``live`` of ``descriptors`` alive (row id = slot + 100, label = slot % 2)."""
    slots = np.array(live, dtype=np.int64)
    return Snapshot(
        version=1,
        generation=0,
        descriptors=np.ascontiguousarray(descriptors, dtype=np.float32),
        slots=slots,
        rows=slots + 100,
        labels=slots % 2,
        image_ids=tuple(f"im{s}" for s in live),
        instances=("even", "odd"),
        dtype="float32",
    )


def _oracle(refs: np.ndarray, live: list[int], queries: np.ndarray, k: int):
    """Top-k (score, row id) by the max over each query's descriptors, ties by row."""
    out_scores, out_rows = [], []
    for query in queries:
        best = {s: max(float(q @ refs[s]) for q in query) for s in live}
        ranked = sorted(best, key=lambda s: (-best[s], s))[:k]
        out_scores.append([best[s] for s in ranked] + [-np.inf] * (k - len(ranked)))
        out_rows.append([s + 100 for s in ranked] + [-1] * (k - len(ranked)))
    return np.array(out_scores), np.array(out_rows)


def _unit(n: int, d: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("k", [1, 2, 5, 9])
@pytest.mark.parametrize("windows", [1, 3])
def test_mostly_dead_snapshot_matches_the_oracle(k, windows) -> None:
    refs = _unit(30, 8, 0)
    live = [0, 7, 13, 21, 29]  # 25 tombstones: the search must ask for more, several times
    queries = _unit(4 * windows, 8, 1).reshape(4, windows, 8)
    queries[0, 0] = refs[3]  # a query equal to a tombstone
    found = search_module.search(_snapshot(refs, live), queries, k)
    scores, rows = _oracle(refs, live, queries, k)
    np.testing.assert_array_equal(found.rows, rows)
    np.testing.assert_allclose(found.scores, scores, atol=1e-6)
    expected_labels = np.where(rows >= 0, (rows - 100) % 2, -1)
    np.testing.assert_array_equal(found.labels, expected_labels)
    assert found.scores.dtype == np.float32 and found.rows.dtype == np.int64


@pytest.mark.parametrize("dead", [[], [2, 5]])
def test_exclusion_leaves_out_one_row_per_query(dead) -> None:
    refs = _unit(8, 4, 2)
    live = [s for s in range(8) if s not in dead]
    queries = refs[[0, 1, 3]]
    exclude = np.array([100, -1, 103])
    found = search_module.search(_snapshot(refs, live), queries, len(live), exclude=exclude)
    for q, row in enumerate(exclude):
        kept = [s for s in live if s + 100 != row]
        _, rows = _oracle(refs, kept, queries[q : q + 1, None], len(live))
        np.testing.assert_array_equal(found.rows[q, :-1], rows[0, : len(live) - 1])
    # with an exclusion, at most N - 1 neighbours are searched (even for the query without
    # one): the last column is padding
    assert (found.rows[:, -1] == -1).all() and np.isneginf(found.scores[:, -1]).all()
    nothing = search_module.search(_snapshot(refs, live), queries, 3, exclude=np.full(3, -1))
    plain = search_module.search(_snapshot(refs, live), queries, 3)
    np.testing.assert_array_equal(nothing.rows, plain.rows)  # all -1: nothing excluded


def test_exclusion_errors_name_the_rows() -> None:
    refs = _unit(6, 4, 3)
    snapshot = _snapshot(refs, [0, 2, 4])
    q = refs[:2]
    with pytest.raises(ValueError, match=r"^exclude: row id\(s\) \[101\] are not live rows"):
        search_module.search(snapshot, q, 2, exclude=np.array([101, 100]))
    with pytest.raises(ValueError, match=r"^exclude: row id\(s\) \[105\] are not live rows"):
        search_module.search(snapshot, q, 2, exclude=np.array([-1, 105]))  # past the last
    with pytest.raises(ValueError, match=r"^exclude: expected 2 int row ids .one per query"):
        search_module.search(snapshot, q, 2, exclude=np.array([100.0, 102.0]))
    with pytest.raises(ValueError, match=r"^exclude: expected 2 int row ids"):
        search_module.search(snapshot, q, 2, exclude=np.array([[100, 102]]))
    empty = _snapshot(refs, [])
    with pytest.raises(ValueError, match=r"^exclude: row id\(s\) \[100\] are not in the index"):
        search_module.search(empty, q, 2, exclude=np.array([100, -1]))
    assert (search_module.search(empty, q, 2, exclude=np.array([-1, -1])).rows == -1).all()


def test_max_over_windows_keeps_each_position_once_at_its_best() -> None:
    scores = np.array([[0.9, 0.5, 0.8, 0.7, 0.7, 0.9], [0.2, 0.2, -np.inf, 0.1, 0.1, 0.1]])
    positions = np.array([[4, 2, 2, 7, 1, 4], [3, 3, -1, 3, 3, 3]])
    best_scores, best_positions = search_module._max_over_windows(scores, positions, 4)
    np.testing.assert_array_equal(best_positions, [[4, 2, 1, 7], [3, -1, -1, -1]])
    np.testing.assert_array_equal(best_scores[0], np.array([0.9, 0.8, 0.7, 0.7]))
    assert best_scores[1, 0] == np.float64(0.2) and np.isneginf(best_scores[1, 1:]).all()


def test_query_checks() -> None:
    q = search_module.check_queries(np.ones((2, 3), dtype=np.float16), 3)
    assert q.shape == (2, 1, 3) and q.dtype == np.float32 and q.flags.c_contiguous
    t = search_module.check_queries(torch.ones(2, 4, 3, dtype=torch.float64), 3)
    assert t.shape == (2, 4, 3) and t.dtype == np.float32
    with pytest.raises(ValueError, match="^queries: expected a CPU array, got device meta"):
        search_module.check_queries(torch.ones(2, 3, device="meta"), 3)
    with pytest.raises(ValueError, match="^queries: R = 0 descriptors per query"):
        search_module.check_queries(np.ones((2, 0, 3), dtype=np.float32), 3)
    with pytest.raises(ValueError, match="^queries: contains NaN or infinite values"):
        search_module.check_queries(np.full((1, 3), np.inf, dtype=np.float32), 3)
    with pytest.raises(ValueError, match=r"^queries: expected a Q×D or Q×R×D array, got shape \(1, 1, 1, 3\)"):  # fmt: skip
        search_module.check_queries(np.ones((1, 1, 1, 3), dtype=np.float32), 3)
    with pytest.raises(TypeError, match="^queries: expected floating-point values, got dtype bool"):
        search_module.check_queries(np.ones((1, 3), dtype=bool), 3)


def test_k_checks() -> None:
    assert search_module.check_k(1) == 1 and search_module.check_k(np.int32(4)) == 4
    assert type(search_module.check_k(np.int64(2))) is int
    for bad in (0, -1, True, 2.0, "3", None):
        with pytest.raises(ValueError, match="^k: expected a positive int, got"):
            search_module.check_k(bad)


def test_no_queries_and_k_beyond_the_live_rows() -> None:
    refs = _unit(5, 4, 4)
    snapshot = _snapshot(refs, [1, 3])
    found = search_module.search(snapshot, np.zeros((0, 4), dtype=np.float32), 3)
    assert found.rows.shape == (0, 3) and found.instances == ("even", "odd")
    found = search_module.search(snapshot, refs[:1], 4)
    scores, rows = _oracle(refs, [1, 3], refs[:1, None], 4)
    np.testing.assert_array_equal(found.rows, rows)
    np.testing.assert_array_equal(
        found.labels, [[(rows[0, 0] - 100) % 2, (rows[0, 1] - 100) % 2, -1, -1]]
    )


@pytest.mark.parametrize("k", [2, 4, 6])
def test_exclusion_in_a_mostly_dead_snapshot(k) -> None:
    # the search asks knn_dot for more neighbours until it may ask for all N - 1 rows
    refs = _unit(30, 8, 5)
    live = [0, 7, 13, 21, 29]
    queries = _unit(3, 8, 6)
    exclude = np.array([107, -1, 129])  # live rows 7 and 29 (row = slot + 100)
    found = search_module.search(_snapshot(refs, live), queries, k, exclude=exclude)
    kk = min(k, len(live) - 1)
    for q, row in enumerate(exclude):
        kept = [s for s in live if s + 100 != row]
        scores, rows = _oracle(refs, kept, queries[q : q + 1, None], kk)
        np.testing.assert_array_equal(found.rows[q, :kk], rows[0])
        np.testing.assert_allclose(found.scores[q, :kk], scores[0], atol=1e-6)
    assert (found.rows[:, kk:] == -1).all()


@pytest.mark.parametrize("windows", [1, 2])
def test_a_single_tombstone_is_never_found(windows) -> None:
    refs = _unit(6, 4, 7)
    live = [0, 1, 3, 4, 5]  # slot 2 removed
    queries = np.stack([refs[2], refs[4]])[:, None].repeat(windows, axis=1)
    found = search_module.search(_snapshot(refs, live), queries, 3)
    scores, rows = _oracle(refs, live, queries, 3)
    np.testing.assert_array_equal(found.rows, rows)
    np.testing.assert_allclose(found.scores, scores, atol=1e-6)
    np.testing.assert_array_equal(found.labels, (rows - 100) % 2)


def test_exclusion_errors_list_the_first_five_missing_rows() -> None:
    refs = _unit(3, 4, 8)
    snapshot = _snapshot(refs, [0, 1, 2])
    queries = _unit(7, 4, 9)
    exclude = np.array([100, 5, 6, 7, 8, 9, 10])
    with pytest.raises(ValueError, match=r"^exclude: row id\(s\) \[5, 6, 7, 8, 9\] are not live"):
        search_module.search(snapshot, queries, 1, exclude=exclude)
    empty = _snapshot(refs, [])
    with pytest.raises(ValueError, match=r"^exclude: row id\(s\) \[100, 5, 6, 7, 8\] are not in"):
        search_module.search(empty, queries, 1, exclude=exclude)


def test_one_live_row_and_padding() -> None:
    refs = _unit(3, 4, 10)
    found = search_module.search(_snapshot(refs, [2]), refs[:2], 3)
    np.testing.assert_array_equal(found.rows, [[102, -1, -1]] * 2)
    np.testing.assert_array_equal(found.labels, [[0, -1, -1]] * 2)
    np.testing.assert_allclose(found.scores[:, 0], refs[:2] @ refs[2], atol=1e-6)
    assert np.isneginf(found.scores[:, 1:]).all()


def test_a_search_of_no_live_rows_is_all_padding() -> None:
    refs = _unit(4, 4, 11)
    found = search_module.search(_snapshot(refs, []), refs[:2], 3)
    np.testing.assert_array_equal(found.rows, np.full((2, 3), -1))
    np.testing.assert_array_equal(found.labels, np.full((2, 3), -1))
    assert np.isneginf(found.scores).all() and found.labels.dtype == np.int64
