"""Search against a brute-force oracle: dtypes, tombstones, compaction, windows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pyinstance.index import InstanceIndex

from .conftest import DIM, tiny_recipe, unit_rows


def oracle(refs: np.ndarray, rows: np.ndarray, queries: np.ndarray, k: int):
    """Top-k (score, row) by the max over each query's descriptors, plain numpy."""
    if queries.ndim == 2:
        queries = queries[:, None]
    scores = np.einsum("qrd,nd->qrn", queries, refs).max(axis=1)
    order = np.lexsort((np.broadcast_to(rows, scores.shape), -scores), axis=1)[:, :k]
    return np.take_along_axis(scores, order, 1), rows[order]


def stored(x: np.ndarray, dtype: str) -> np.ndarray:
    t = torch.from_numpy(x)
    return t.to(getattr(torch, dtype)).float().numpy()


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_search_matches_oracle_for_each_dtype(tmp_path: Path, dtype: str) -> None:
    recipe = tiny_recipe(dtype)
    x = unit_rows(200)
    with InstanceIndex.create(tmp_path / "ix", recipe) as index:
        rows = index.add_descriptors(
            x, [f"i{i % 9}" for i in range(200)], [f"m{i}" for i in range(200)], recipe
        )
        queries = unit_rows(5, seed=1)
        found = index.search(queries, 7)
        scores, expected_rows = oracle(stored(x, dtype), np.array(rows), queries, 7)
        np.testing.assert_array_equal(found.rows, expected_rows)
        np.testing.assert_allclose(found.scores, scores, rtol=1e-5, atol=1e-5)
        codes = {name: i for i, name in enumerate(found.instances)}
        np.testing.assert_array_equal(
            found.labels, [[codes[f"i{r % 9}"] for r in q] for q in found.rows]
        )
        np.testing.assert_allclose(index.descriptors(), stored(x, dtype))
        assert isinstance(index._store.snapshot().descriptors, np.memmap)  # searched in place


def test_removed_rows_are_never_found_and_rows_stay_stable(filled) -> None:
    index, x = filled
    index.remove(instance="i2")
    index.remove(image=["im0", "im7"])
    gone = {i for i in range(60) if i % 6 == 2} | {0, 7}
    live = np.array([i for i in range(60) if i not in gone])
    assert len(index) == len(live)
    assert "i2" not in index.instances
    found = index.search(x[[0, 2, 7, 8]], 10)  # queries equal to removed references
    assert not set(found.rows.ravel()) & gone
    _, expected = oracle(x[live], live, x[[0, 2, 7, 8]], 10)
    np.testing.assert_array_equal(found.rows, expected)
    np.testing.assert_array_equal(index.rows(), live)
    assert index.image_ids([9, 0, -1]) == ["im9", None, None]


def test_removal_alone_keeps_tombstones_until_compaction(filled, monkeypatch) -> None:
    import pyinstance.index.instance_index as module

    monkeypatch.setattr(module, "AUTO_COMPACT_FRACTION", 0.9)
    index, x = filled
    index.remove(instance="i1")
    assert index.info()["removed_rows"] == 10
    before = index.search(x[:4], 5)
    assert index.compact() == 10
    info = index.info()
    assert info["removed_rows"] == 0 and info["generation"] == 1
    after = index.search(x[:4], 5)
    np.testing.assert_array_equal(after.rows, before.rows)  # row ids survive compaction
    np.testing.assert_array_equal(after.scores, before.scores)
    assert sorted(p.name for p in index.path.glob("descriptors-*.bin")) == ["descriptors-1.bin"]
    assert index.compact() == 0


def test_auto_compaction_past_the_threshold(filled) -> None:
    index, _ = filled
    index.remove(instance="i0")  # 10 of 60: below 25 %
    assert index.info()["removed_rows"] == 10
    index.remove(instance=["i1", "i3"])  # 30 of 60
    info = index.info()
    assert info["removed_rows"] == 0 and info["images"] == 30 and info["generation"] == 1


def test_k_above_the_collection_pads(filled) -> None:
    index, x = filled
    index.remove(instance=["i0", "i1", "i2", "i3", "i4"])
    found = index.search(x[:2], 15)
    assert (found.rows[:, :10] >= 0).all() and (found.rows[:, 10:] == -1).all()
    assert np.isneginf(found.scores[:, 10:]).all() and (found.labels[:, 10:] == -1).all()


def test_window_queries_score_a_reference_by_its_best_window(filled) -> None:
    index, x = filled
    rng = np.random.default_rng(3)
    for windows in (1, 2, 5):
        queries = unit_rows(4 * windows, seed=windows).reshape(4, windows, DIM)
        queries[0, -1] = x[11]  # one window is exactly a reference
        queries = queries + 0.01 * rng.normal(size=queries.shape).astype(np.float32)
        for k in (1, 3, 60):
            found = index.search(queries, k)
            scores, rows = oracle(x, np.arange(60), queries, k)
            np.testing.assert_array_equal(found.rows, rows)
            np.testing.assert_allclose(found.scores, scores, rtol=1e-5, atol=1e-6)
            assert len(set(found.rows[0])) == k  # each reference once


def test_window_queries_with_tombstones(filled, monkeypatch) -> None:
    import pyinstance.index.instance_index as module

    monkeypatch.setattr(module, "AUTO_COMPACT_FRACTION", 0.9)
    index, x = filled
    index.remove(instance=["i0", "i4"])
    live = np.array([i for i in range(60) if i % 6 not in (0, 4)])
    queries = np.stack([x[[0, 4, 5]], x[[6, 10, 12]]])
    found = index.search(queries, 8)
    scores, rows = oracle(x[live], live, queries, 8)
    np.testing.assert_array_equal(found.rows, rows)
    np.testing.assert_allclose(found.scores, scores, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("queries", "k", "error", "message"),
    [
        (np.zeros((2, DIM + 1), np.float32), 3, ValueError, "descriptor size 17 does not match"),
        (np.zeros((2,), np.float32), 3, ValueError, "Q×D or Q×R×D"),
        (np.full((1, DIM), np.nan, np.float32), 3, ValueError, "NaN"),
        (np.zeros((1, DIM), np.int64), 3, TypeError, "floating-point"),
        ([[0.0] * DIM], 3, TypeError, "numpy array or tensor"),
        (np.zeros((1, DIM), np.float32), 0, ValueError, "k: expected a positive int"),
    ],
)
def test_bad_queries_are_clear_errors(filled, queries, k, error, message) -> None:
    index, _ = filled
    with pytest.raises(error, match=message):
        index.search(queries, k)


def test_search_accepts_torch_and_float64(filled) -> None:
    index, x = filled
    a = index.search(x[:2].astype(np.float64), 4)
    b = index.search(torch.from_numpy(x[:2]), 4)
    np.testing.assert_array_equal(a.rows, b.rows)


def test_search_of_an_empty_index_is_all_padding(tmp_path: Path) -> None:
    with InstanceIndex.create(tmp_path / "ix", tiny_recipe()) as index:
        found = index.search(unit_rows(2), 3)
        assert (found.rows == -1).all() and found.instances == ()


def test_exclude_leaves_each_querys_own_row_out(filled, monkeypatch) -> None:
    import pyinstance.index.instance_index as module

    monkeypatch.setattr(module, "AUTO_COMPACT_FRACTION", 0.9)
    index, x = filled
    index.remove(instance="i5")  # tombstones too
    live = index.rows()
    queries = x[live[:6]]
    found = index.search(queries, 4, exclude=live[:6])
    for q, row in enumerate(live[:6]):
        others = live[live != row]
        _, expected = oracle(x[others], others, queries[q : q + 1], 4)
        np.testing.assert_array_equal(found.rows[q], expected[0])
    mixed = index.search(queries[:2], 3, exclude=np.array([live[0], -1]))
    assert mixed.rows[0, 0] != live[0] and mixed.rows[1, 0] == live[1]
    windows = index.search(np.stack([queries[:2], queries[:2]], 1), 3, exclude=live[:2])
    assert live[0] not in windows.rows[0] and live[1] not in windows.rows[1]
    with pytest.raises(ValueError, match=r"row id\(s\) \[5\] are not live"):
        index.search(queries[:1], 3, exclude=np.array([5]))  # i5's row: removed
    with pytest.raises(ValueError, match="expected 2 int row ids"):
        index.search(queries[:2], 3, exclude=np.array([1]))
