"""search.py's query and k checks at their edges, and ``_max_over_windows`` against a loop
oracle (max over duplicates, ties by the smaller position, -inf as missing)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pyinstance.index import search as search_module


def test_queries_keep_their_values_as_contiguous_float32() -> None:
    x = np.random.default_rng(0).standard_normal((4, 3))
    got = search_module.check_queries(x[::2], 3)  # float64, not contiguous
    assert got.dtype == np.float32 and got.flags.c_contiguous and got.shape == (2, 1, 3)
    np.testing.assert_array_equal(got[:, 0], x[::2].astype(np.float32))
    windows = torch.from_numpy(x.reshape(2, 2, 3)).requires_grad_(True)
    got = search_module.check_queries(windows, 3)
    assert got.dtype == np.float32 and got.shape == (2, 2, 3)
    np.testing.assert_array_equal(got, x.reshape(2, 2, 3).astype(np.float32))
    halves = np.array([[65504.0, -2.0]], dtype=np.float16)
    np.testing.assert_array_equal(search_module.check_queries(halves, 2), [[[65504.0, -2.0]]])


def test_queries_that_are_refused() -> None:
    ok = np.ones((2, 3), dtype=np.float32)
    with pytest.raises(TypeError, match=r"^queries: expected a numpy array or tensor, got list$"):
        search_module.check_queries(ok.tolist(), 3)
    with pytest.raises(
        ValueError, match=r"^queries: descriptor size 3 does not match the index's D=4$"
    ):
        search_module.check_queries(ok, 4)
    with pytest.raises(ValueError, match=r"^queries: expected a Q×D or Q×R×D array, got shape \(3,\)$"):  # fmt: skip
        search_module.check_queries(ok[0], 3)
    with pytest.raises(TypeError, match=r"^queries: expected floating-point values, got dtype int64$"):  # fmt: skip
        search_module.check_queries(np.ones((2, 3), dtype=np.int64), 3)
    for bad in (np.nan, -np.inf):
        values = ok.copy()
        values[1, 2] = bad
        with pytest.raises(ValueError, match=r"^queries: contains NaN or infinite values$"):
            search_module.check_queries(values, 3)
    with np.errstate(over="ignore"), pytest.raises(ValueError, match=r"^queries: contains NaN"):
        search_module.check_queries(np.array([[1e39, 0, 0]]), 3)  # finite float64, inf as float32
    assert search_module.check_queries(np.zeros((0, 3), dtype=np.float32), 3).shape == (0, 1, 3)


def test_k_is_a_positive_int() -> None:
    assert search_module.check_k(7) == 7 and search_module.check_k(np.uint8(1)) == 1
    for bad in (0, np.int64(0), -3, False, 1.0, np.float32(2)):
        with pytest.raises(ValueError, match=r"^k: expected a positive int, got"):
            search_module.check_k(bad)


def _oracle(scores: np.ndarray, positions: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    out_scores, out_positions = [], []
    for row_scores, row_positions in zip(scores, positions, strict=True):
        best: dict[int, float] = {}
        for score, position in zip(row_scores, row_positions, strict=True):
            if np.isfinite(score):
                best[int(position)] = max(best.get(int(position), -np.inf), float(score))
        ranked = sorted(best, key=lambda p: (-best[p], p))[:k]
        out_scores.append([best[p] for p in ranked] + [-np.inf] * (k - len(ranked)))
        out_positions.append(ranked + [-1] * (k - len(ranked)))
    return np.array(out_scores), np.array(out_positions)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("k", [1, 3, 8])
def test_max_over_windows_matches_the_oracle(seed: int, k: int) -> None:
    rng = np.random.default_rng(seed)
    windows, per_window = 3, k
    scores = rng.choice([0.1, 0.25, 0.5, 0.75, 0.9], size=(5, windows * per_window))
    positions = rng.integers(0, 2 * k + 1, size=scores.shape)
    missing = rng.random(scores.shape) < 0.2  # padding: -inf at position -1
    scores[missing], positions[missing] = -np.inf, -1
    got_scores, got_positions = search_module._max_over_windows(scores, positions, k)
    want_scores, want_positions = _oracle(scores, positions, k)
    np.testing.assert_array_equal(got_positions, want_positions)
    np.testing.assert_array_equal(got_scores, want_scores)
    assert got_positions.dtype == np.int64 and got_scores.shape == (5, k)


def test_max_over_windows_with_large_positions_and_negative_scores() -> None:
    scores = np.array([[-0.5, -0.2, -0.9, -0.2]])
    positions = np.array([[10**12, 5, 10**12, 10**12 + 1]])
    got_scores, got_positions = search_module._max_over_windows(scores, positions, 3)
    np.testing.assert_array_equal(got_positions, [[5, 10**12 + 1, 10**12]])
    np.testing.assert_array_equal(got_scores, [[-0.2, -0.2, -0.5]])
