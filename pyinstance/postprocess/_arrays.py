"""Checks and small array helpers shared by the post-processing methods."""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np
import torch

_EPS = 1e-12


def as_float_array(value: Any, name: str, ndim: int, layout: str) -> np.ndarray:
    """``value`` as a C-contiguous float32 numpy array of ``ndim`` dims, finite, non-empty.

    Accepts numpy arrays, nested sequences and CPU torch tensors.
    """
    if isinstance(value, torch.Tensor):
        if value.device.type != "cpu":
            raise ValueError(f"{name}: expected a CPU array, got a tensor on {value.device}")
        value = value.detach().to(torch.float32).numpy()
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as error:
        raise TypeError(f"{name}: expected a {layout} array ({error})") from None
    if array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.number):
        raise TypeError(f"{name}: expected a real-valued {layout} array, got dtype {array.dtype}")
    if np.iscomplexobj(array):
        raise TypeError(f"{name}: expected a real-valued {layout} array, got dtype {array.dtype}")
    if array.ndim != ndim:
        raise ValueError(f"{name}: expected a {layout} array, got shape {array.shape}")
    if 0 in array.shape:
        raise ValueError(f"{name}: expected a non-empty {layout} array, got shape {array.shape}")
    array = np.ascontiguousarray(array, dtype=np.float32)
    if not np.isfinite(array).all():
        raise ValueError(f"{name}: contains NaN or infinite values")
    return array


def as_index_array(value: Any, name: str, n: int) -> np.ndarray:
    """``value`` as a 1-D int64 array of row indices in ``[0, n)``."""
    array = np.asarray(value)
    if array.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array of row indices, got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"{name}: expected at least one row index, got none")
    if array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"{name}: expected integer row indices, got dtype {array.dtype}")
    if array.min() < 0 or array.max() >= n:
        raise ValueError(
            f"{name}: row indices must lie in [0, {n}), got {array.min()}..{array.max()}"
        )
    return array.astype(np.int64, copy=False)


def as_index_pairs(query_idx: Any, positive_idx: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``query_idx`` and ``positive_idx``: 1-D int64 arrays of as many row indices in
    ``[0, n)``, the matching pairs a method is fitted on."""
    queries = as_index_array(query_idx, "query_idx", n)
    positives = as_index_array(positive_idx, "positive_idx", n)
    if positives.shape != queries.shape:
        raise ValueError(
            f"positive_idx: expected {queries.size} entries like query_idx, got {positives.size}"
        )
    return queries, positives


def check_int(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected an integer, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value}")
    return int(value)


def check_float(value: Any, name: str, minimum: float, maximum: float = float("inf")) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a real number, got {type(value).__name__}")
    if not minimum <= value <= maximum:
        raise ValueError(f"{name}: expected a number in [{minimum}, {maximum}], got {value}")
    return float(value)


def check_kind(data: Any, kind: str, keys: tuple[str, ...]) -> None:
    """``data`` is a dict holding ``keys`` and ``"kind": kind``."""
    if not isinstance(data, dict):
        raise TypeError(f"data: expected a dict, got {type(data).__name__}")
    if data.get("kind") != kind:
        raise ValueError(f"data: expected kind {kind!r}, got {data.get('kind')!r}")
    missing = [key for key in keys if key not in data]
    if missing:
        raise ValueError(f"data: missing key(s) {', '.join(missing)} for kind {kind!r}")


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows (last axis) scaled to unit L2 norm; all-zero rows stay zero."""
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.maximum(norms, _EPS)).astype(np.float32, copy=False)
