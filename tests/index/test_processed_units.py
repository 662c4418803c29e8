"""processed.py's set search on a hand-made view: scores divided into means, ranking with
ties by position, exclusion, padding; and the stored state's checks (stale, missing)."""

from __future__ import annotations

import numpy as np
import pytest

from pyinstance.index.processed import (
    SCALE_WEIGHTS_KEY,
    WHITENING_KEY,
    WHITENING_SET_KEY,
    ProcessedView,
    StalePostProcessingError,
    _current,
    _excluded_positions,
    _separate,
    _summed,
    search_sets,
)
from pyinstance.index.store import Snapshot
from pyinstance.postprocess import multiscale_scores


def _unit(*shape: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _view(references: np.ndarray, rows: list[int], fitted: dict | None = None) -> ProcessedView:
    n = references.shape[0]
    snapshot = Snapshot(
        version=3,
        generation=0,
        descriptors=references.reshape(n, references.shape[1] * references.shape[2]),
        slots=np.arange(n, dtype=np.int64),
        rows=np.array(rows, dtype=np.int64),
        labels=np.array(rows, dtype=np.int64) % 3,
        image_ids=tuple(f"im{r}" for r in rows),
        instances=("a", "b", "c"),
        dtype="float32",
        collection=7,
        fitted=fitted or {},
    )
    return ProcessedView(snapshot, None, references)


def _oracle(scores: np.ndarray, k: int, rows: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Top-k by score (ties by position), -inf scores left out, padded with (-inf, -1)."""
    out_scores, out_rows = [], []
    for row in scores:
        ranked = sorted(
            (p for p in range(len(row)) if np.isfinite(row[p])), key=lambda p: (-row[p], p)
        )[:k]
        out_scores.append([row[p] for p in ranked] + [-np.inf] * (k - len(ranked)))
        out_rows.append([rows[p] for p in ranked] + [-1] * (k - len(ranked)))
    return np.array(out_scores, dtype=np.float32), np.array(out_rows)


@pytest.mark.parametrize(
    ("reduction", "divisor"),
    [
        ("max", 1),
        ("max_squared", 1),
        ("row_max_sum", 2),
        ("row_max_squared_sum", 2),
        ("col_max_sum", 3),
        ("col_max_squared_sum", 3),
    ],
)
@pytest.mark.parametrize("k", [1, 4, 9])
def test_set_search_ranks_the_mean_scores(reduction: str, divisor: int, k: int) -> None:
    references = _unit(6, 3, 5, seed=1)
    queries = _unit(4, 2, 5, seed=2)
    rows = [10, 11, 13, 20, 21, 40]
    found = search_sets(_view(references, rows), queries, k, None, reduction)
    scores = multiscale_scores(queries, references, reduction) / np.float32(divisor)
    want_scores, want_rows = _oracle(scores, k, rows)
    np.testing.assert_allclose(found.scores, want_scores, rtol=1e-6)
    np.testing.assert_array_equal(found.rows, want_rows)
    np.testing.assert_array_equal(found.labels, np.where(want_rows < 0, -1, want_rows % 3))
    assert found.scores.dtype == np.float32 and found.scores.shape == (4, k)
    assert found.rows.dtype == np.int64 and found.instances == ("a", "b", "c")


def test_divisors_by_name() -> None:
    assert [_summed(r, 2, 3) for r in ("max", "max_squared")] == [1, 1]
    assert [_summed(r, 2, 3) for r in ("row_max_sum", "row_max_squared_sum")] == [2, 2]
    assert [_summed(r, 2, 3) for r in ("col_max_sum", "col_max_squared_sum")] == [3, 3]


def test_ties_go_to_the_first_position() -> None:
    same = np.tile(_unit(1, 2, 4, seed=3), (4, 1, 1))  # four identical references
    found = search_sets(_view(same, [5, 6, 7, 8]), same[:1], 3, None, "row_max_sum")
    np.testing.assert_array_equal(found.rows, [[5, 6, 7]])
    np.testing.assert_allclose(found.scores, [[1.0, 1.0, 1.0]], rtol=1e-6)


def test_excluded_rows_are_left_out_per_query() -> None:
    references = _unit(5, 2, 4, seed=4)
    rows = [2, 4, 6, 8, 10]
    queries = references[[0, 1, 2]]  # each query's best reference is itself
    found = search_sets(_view(references, rows), queries, 5, np.array([2, -1, 6]), "max")
    scores = multiscale_scores(queries, references, "max")
    scores[0, 0] = scores[2, 2] = -np.inf
    want_scores, want_rows = _oracle(scores, 5, rows)
    np.testing.assert_array_equal(found.rows, want_rows)
    assert (found.rows[0] != 2).all() and found.rows[0, 4] == -1 and found.rows[1, 0] == 4
    np.testing.assert_allclose(found.scores, want_scores, rtol=1e-6)


def test_exclusion_is_checked() -> None:
    view = _view(_unit(3, 1, 4, seed=5), [1, 5, 9])
    queries = _unit(2, 1, 4, seed=6)
    for bad in ([1], [1, 5, 9], np.array([1.0, 5.0]), [[1, 5]]):
        with pytest.raises(ValueError, match=r"^exclude: expected 2 int row ids \(one per query"):
            search_sets(view, queries, 2, bad, "max")
    for missing, listed in (([4, 9], "[4]"), ([0, 10], "[0, 10]"), ([9, 2], "[2]")):
        with pytest.raises(
            ValueError, match=rf"^exclude: row id\(s\) {re_list(listed)} are not live"
        ):
            search_sets(view, queries, 2, np.array(missing), "max")
    wanted, positions = _excluded_positions(np.array([1, 5, 9]), np.array([-1, 9, 1, -5]), 4)
    np.testing.assert_array_equal(wanted, [1, 2])
    np.testing.assert_array_equal(positions, [2, 0])
    many = np.arange(20, 27)
    with pytest.raises(ValueError, match=r"row id\(s\) \[20, 21, 22, 23, 24\] are not"):
        _excluded_positions(np.array([1, 5, 9]), many, 7)


def re_list(text: str) -> str:
    return text.replace("[", r"\[").replace("]", r"\]")


def test_no_references_or_no_queries_are_all_padding() -> None:
    empty = _view(np.zeros((0, 2, 4), dtype=np.float32), [])
    found = search_sets(empty, _unit(3, 2, 4, seed=7), 2, None, "max")
    assert found.scores.shape == (3, 2) and np.isneginf(found.scores).all()
    assert (found.rows == -1).all() and (found.labels == -1).all()
    assert found.rows.dtype == np.int64 and found.labels.dtype == np.int64
    view = _view(_unit(2, 2, 4, seed=8), [3, 4])
    none = search_sets(view, np.zeros((0, 2, 4), dtype=np.float32), 3, None, "max")
    assert none.scores.shape == (0, 3) and none.rows.shape == (0, 3)
    one = _view(_unit(1, 2, 4, seed=9), [42])
    found = search_sets(one, _unit(2, 2, 4, seed=10), 3, None, "max")
    np.testing.assert_array_equal(found.rows, [[42, -1, -1], [42, -1, -1]])
    np.testing.assert_array_equal(found.labels, [[0, -1, -1], [0, -1, -1]])
    with pytest.raises(ValueError, match=r"^k: expected a positive int"):
        search_sets(view, _unit(1, 2, 4, seed=1), 0, None, "max")


def test_stored_state_must_match_the_collection() -> None:
    fitted = {WHITENING_KEY: (7, b"w"), SCALE_WEIGHTS_KEY: (6, b"s"), WHITENING_SET_KEY: (2, b"x")}
    snapshot = _view(_unit(1, 1, 4, seed=0), [0], fitted).snapshot
    assert _current(snapshot, WHITENING_KEY, "whitens descriptors", "/ix") == b"w"
    with pytest.raises(StalePostProcessingError) as raised:
        _current(snapshot, SCALE_WEIGHTS_KEY, "learns scale weights", "/ix")
    assert str(raised.value) == (
        "index '/ix': the scale weights was fitted on collection version 6, the collection is "
        "at version 7 (changed without refitting); run `pyinstance index refit /ix` (or "
        "InstanceIndex.refit())"
    )
    empty = _view(_unit(1, 1, 4, seed=0), [0]).snapshot
    with pytest.raises(StalePostProcessingError) as raised:
        _current(empty, WHITENING_KEY, "whitens descriptors", "/ix")
    assert str(raised.value) == (
        "index '/ix': its recipe whitens descriptors but no whitening is stored; run "
        "`pyinstance index refit /ix` (or InstanceIndex.refit())"
    )
    assert _separate(snapshot, "/ix") == b"x"  # fitted once: any collection version
    with pytest.raises(StalePostProcessingError, match=r"^index '/ix': its recipe whitens with a separate set but none is stored; build"):  # fmt: skip
        _separate(empty, "/ix")
    assert issubclass(StalePostProcessingError, ValueError)
    assert (WHITENING_KEY, WHITENING_SET_KEY, SCALE_WEIGHTS_KEY) == (
        "whitening",
        "whitening_set",
        "scale_weights",
    )
