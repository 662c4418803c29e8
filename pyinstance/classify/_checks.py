"""Validation of classifier parameters and inputs; errors name the argument."""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np
import torch

from pyinstance.index.neighbours import Neighbours

#: Rows checked at a time when validating a possibly memory-mapped collection.
CHUNK_ROWS = 65536


def check_count(value: Any, name: str, *, minimum: int) -> int:
    """An integer >= ``minimum`` (bools, floats and NaN refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    return int(value)


def check_real(value: Any, name: str, *, low: float, high: float = math.inf) -> float:
    """A finite real number in ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name}: expected a finite number, got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{name}: expected a number in [{low:g}, {high:g}], got {value!r}")
    return float(value)


def as_float_array(value: Any, name: str) -> np.ndarray | torch.Tensor:
    """A numpy array (memmaps stay memmaps) or a CPU tensor of floats, not copied."""
    if isinstance(value, torch.Tensor):
        if not value.is_floating_point():
            raise ValueError(f"{name}: expected floating-point values, got dtype {value.dtype}")
        return value.detach().cpu()
    array = np.asarray(value)
    if array.dtype.kind != "f":
        raise ValueError(f"{name}: expected floating-point values, got dtype {array.dtype}")
    return array


def float32_rows(array: np.ndarray | torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """Rows ``start:stop`` as a float32 CPU tensor."""
    rows = array[start:stop]
    if isinstance(rows, np.ndarray):
        rows = torch.from_numpy(np.array(rows, dtype=np.float32))  # a chunk, copied
    return rows.to(torch.float32)


def check_collection(descriptors: Any, labels: Any) -> tuple[np.ndarray | torch.Tensor, np.ndarray]:
    """Validate ``fit``'s N×D descriptors and N int64 codes (-1: a row to ignore)."""
    array = as_float_array(descriptors, "descriptors")
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(
            f"descriptors: expected a non-empty (N, D) array, got shape {tuple(array.shape)}"
        )
    codes = np.asarray(labels.detach().cpu() if isinstance(labels, torch.Tensor) else labels)
    if codes.dtype.kind not in "iu":
        raise ValueError(f"labels: expected int64 instance codes, got dtype {codes.dtype}")
    if codes.shape != (array.shape[0],):
        raise ValueError(
            f"labels: expected shape ({array.shape[0]},), one code per descriptor, got {codes.shape}"
        )
    codes = codes.astype(np.int64, copy=False)
    if bool((codes < -1).any()):
        raise ValueError("labels: expected instance codes >= 0 (or -1 for a row to ignore)")
    if not bool((codes >= 0).any()):
        raise ValueError("labels: every row is ignored (-1); expected at least one instance")
    for start in range(0, array.shape[0], CHUNK_ROWS):
        if not bool(torch.isfinite(float32_rows(array, start, start + CHUNK_ROWS)).all()):
            raise ValueError("descriptors: NaN or infinite values")
    return array, codes


def check_queries(queries: Any, count: int, dim: int | None) -> np.ndarray | torch.Tensor:
    """Validate Q×D or Q×R×D finite float queries (numpy or a CPU tensor, not copied)."""
    array = as_float_array(queries, "queries")
    if array.ndim not in (2, 3) or array.shape[-1] == 0:
        raise ValueError(
            f"queries: expected a (Q, D) or (Q, R, D) array, got shape {tuple(array.shape)}"
        )
    if array.shape[0] != count:
        raise ValueError(
            f"queries: expected {count} rows, one per neighbours row, got {array.shape[0]}"
        )
    if dim is not None and array.shape[-1] != dim:
        raise ValueError(
            f"queries: expected dimension D={dim} (the fitted descriptors'), got {array.shape[-1]}"
        )
    finite = (
        torch.isfinite(array).all() if isinstance(array, torch.Tensor) else np.isfinite(array).all()
    )
    if not bool(finite):
        raise ValueError("queries: NaN or infinite values")
    return array


def check_neighbours(neighbours: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``k`` columns of ``neighbours``: (scores float64, labels int64)."""
    if not isinstance(neighbours, Neighbours):
        raise TypeError(
            f"neighbours: expected a pyinstance.index.Neighbours, got {type(neighbours).__name__}"
        )
    if neighbours.k < k:
        raise ValueError(
            f"neighbours: the classifier needs k={k} neighbours per query, got {neighbours.k}"
        )
    scores = np.asarray(neighbours.scores)[:, :k]
    labels = np.asarray(neighbours.labels)[:, :k]
    if scores.dtype.kind != "f":
        raise ValueError(f"neighbours.scores: expected floats, got dtype {scores.dtype}")
    if labels.dtype.kind not in "iu":
        raise ValueError(f"neighbours.labels: expected int64 codes, got dtype {labels.dtype}")
    labels = labels.astype(np.int64, copy=False)
    if bool((labels < -1).any()) or bool((labels >= len(neighbours.instances)).any()):
        raise ValueError(
            f"neighbours.labels: expected codes in [0, {len(neighbours.instances)}) or -1 (padding)"
        )
    if not bool(np.isfinite(scores[labels >= 0]).all()):
        raise ValueError("neighbours.scores: NaN or infinite score for a real (unpadded) neighbour")
    return scores.astype(np.float64), labels
