"""An int8 screening copy of reference rows: ``knn_dot(..., screen=)`` reads it instead of
the references and scores exactly only the rows that can still be among the k best.

Row ``r`` is stored as ``s c`` (int8 codes ``c`` in [-127, 127], ``s = max|r| / 127``) with
``n >= ||r||`` and a slack ``e >= ||r - s c|| + 16 u s ||c||`` (``u = 2^-24``), computed in
float64 and rounded up. The kernel quantises each query the same way to int16, ``q = t b +
f``, sums ``<b, c>`` exactly in int32 and takes ``a = fl(fl(<b, c>) fl(t s))``. With
``g = (D + 4) u / (1 - (D + 4) u)``, which bounds the rounding of any float32 dot product of
``D`` terms whatever the summation order,

    |fl(<q, r>) - a| <= g ||q|| ||r||                     (knn_dot's float32 score)
                      + |<t b, r - s c>| + |<f, r>|       (<q, r> - t s <b, c>)
                      + 12 u t ||b|| s ||c||              (a's conversions and products)
                     <= t ||b|| e + (||f|| + g ||q||) n.

The kernel keeps every row whose upper bound reaches the k-th largest lower bound: k rows
score at least that much, so no other row can be among the k best, ties included, and the
kept rows get knn_dot's exact scores.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from pyinstance.ops._arrays import to_tensor

#: Row stride of the codes (bytes): the kernel reads whole 64-byte vectors.
_STRIDE = 64
#: Rows quantised at a time (bounds the float64 temporaries).
_CHUNK = 4096
_UNIT = 2.0**-24


def _round_up(value: int, step: int) -> int:
    return (value + step - 1) // step * step


class KnnScreen:
    """The int8 screening copy of the first ``rows`` rows of a reference array.

    Build it with :meth:`of`, follow rows appended to the same array with
    :meth:`extended`, and pass it as ``knn_dot(queries, refs, k, screen=...)`` with exactly
    those rows. About a quarter of the size of float32 references. A screen never changes
    once built, so searches in other threads may keep using it.
    """

    def __init__(self, dim: int) -> None:
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
            raise ValueError(f"dim: expected a positive int, got {dim!r}")
        self.dim = int(dim)
        self.stride = _round_up(self.dim, _STRIDE)
        self.rows = 0
        self.max_norm = 0.0
        self._codes = np.zeros((0, self.stride), dtype=np.int8)
        self._scales = np.zeros(0, dtype=np.float32)
        self._slacks = np.zeros(0, dtype=np.float32)
        self._norms = np.zeros(0, dtype=np.float32)
        self._sums = np.zeros(0, dtype=np.int32)

    @classmethod
    def of(cls, refs: Any) -> KnnScreen:
        """The screen of every row of ``refs`` (N × D float32, float16 or bfloat16, CPU)."""
        rows = _float_rows(refs)
        screen = cls(rows.shape[1])
        screen._append(rows)
        return screen

    def prefix(self, rows: int) -> KnnScreen:
        """The screen of the first ``rows`` rows (sharing this one's arrays)."""
        if isinstance(rows, bool) or not isinstance(rows, (int, np.integer)):
            raise TypeError(f"rows: expected an int, got {type(rows).__name__}")
        if not 0 <= rows <= self.rows:
            raise ValueError(f"rows: expected 0 <= rows <= {self.rows}, got {rows}")
        head = self._sharing()
        head.rows = int(rows)
        return head

    def _sharing(self) -> KnnScreen:
        """A new screen object over this one's arrays and rows."""
        other = KnnScreen(self.dim)
        other.rows, other.max_norm = self.rows, self.max_norm
        other._codes, other._scales = self._codes, self._scales
        other._slacks, other._norms, other._sums = self._slacks, self._norms, self._sums
        return other

    def extended(self, refs: Any) -> KnnScreen:
        """The screen of ``refs``: the array this screen was built from, grown by appends
        (only the new rows are quantised; the arrays are shared while they have room)."""
        rows = _float_rows(refs)
        grown = self._sharing()
        grown._append(rows)
        return grown

    def _append(self, rows: np.ndarray) -> None:
        """Quantise the rows of ``rows`` past the ``rows`` already screened."""
        if rows.shape[1] != self.dim:
            raise ValueError(f"refs: expected D={self.dim} columns, got {rows.shape[1]}")
        if rows.shape[0] < self.rows:
            raise ValueError(
                f"refs: {rows.shape[0]} rows, fewer than the {self.rows} already screened"
            )
        total = rows.shape[0]
        self._reserve(total)
        for start in range(self.rows, total, _CHUNK):
            stop = min(start + _CHUNK, total)
            self._quantise(rows[start:stop], start)
        self.rows = total

    def arrays(self) -> tuple[np.ndarray, ...]:
        """(codes, scales, slacks, norms, code sums) as the kernel reads them (padded past
        ``rows``)."""
        return self._codes, self._scales, self._slacks, self._norms, self._sums

    def matches(self, refs: torch.Tensor) -> bool:
        """Whether ``refs`` (a float tensor) has this screen's shape and, spot-checked on its
        first and last rows, content."""
        if tuple(refs.shape) != (self.rows, self.dim):
            return False
        probe = [0, self.rows - 1]
        codes, scales, _, _ = _quantised(refs[probe].float().numpy())
        return bool(
            np.array_equal(codes, self._codes[probe, : self.dim])
            and np.array_equal(scales, self._scales[probe])
        )

    def _reserve(self, rows: int) -> None:
        needed = _round_up(max(rows, 1), _STRIDE)
        if needed <= self._codes.shape[0]:
            return
        capacity = max(needed, _round_up(self._codes.shape[0] * 3 // 2, _STRIDE))
        codes = np.zeros((capacity, self.stride), dtype=np.int8)
        scales = np.zeros(capacity, dtype=np.float32)
        slacks = np.zeros(capacity, dtype=np.float32)
        norms = np.zeros(capacity, dtype=np.float32)
        sums = np.zeros(capacity, dtype=np.int32)
        sums[: self.rows] = self._sums[: self.rows]
        codes[: self.rows] = self._codes[: self.rows]
        scales[: self.rows] = self._scales[: self.rows]
        slacks[: self.rows] = self._slacks[: self.rows]
        norms[: self.rows] = self._norms[: self.rows]
        self._codes, self._scales, self._slacks, self._norms = codes, scales, slacks, norms
        self._sums = sums

    def _quantise(self, rows: np.ndarray, start: int) -> None:
        codes, scales, slacks, norms = _quantised(rows)
        stop = start + rows.shape[0]
        self._codes[start:stop, : self.dim] = codes
        self._scales[start:stop] = scales
        self._slacks[start:stop] = slacks
        self._norms[start:stop] = norms
        self._sums[start:stop] = codes.sum(axis=1, dtype=np.int32)
        self.max_norm = max(self.max_norm, float(norms.max(initial=0.0)))


def _float_rows(refs: Any) -> np.ndarray:
    """``refs`` as a float32 numpy array (a view when it already is one)."""
    tensor, _ = to_tensor(refs, "refs")
    if tensor.device.type != "cpu":
        raise ValueError(f"refs: expected a CPU array, got device {tensor.device}")
    if tensor.dim() != 2:
        raise ValueError(f"refs: expected a 2-D (N x D) array, got shape {tuple(tensor.shape)}")
    if tensor.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise TypeError(f"refs: expected float32, float16 or bfloat16, got {tensor.dtype}")
    if tensor.dtype == torch.float32 and isinstance(refs, np.ndarray):
        return refs
    return tensor.detach().float().numpy()


def _quantised(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """int8 codes, float32 scales, slacks and norms (both rounded up) of float32 ``rows``."""
    rows = np.asarray(rows, dtype=np.float32)
    if not np.isfinite(rows).all():
        raise ValueError("refs: contains NaN or infinite values")
    scales = (np.abs(rows).max(axis=1) / np.float32(127)).astype(np.float32)
    inverse = np.divide(1, scales, out=np.zeros_like(scales), where=scales > 0)[:, None]
    with np.errstate(over="ignore", invalid="ignore"):
        codes = np.clip(np.rint(rows * inverse), -127, 127).astype(np.int8)
    code_squares = np.einsum("ij,ij->i", codes, codes, dtype=np.int64).astype(np.float64)
    residual = codes.astype(np.float64)
    residual *= -scales.astype(np.float64)[:, None]
    residual += rows
    residual_norms = np.sqrt(np.einsum("ij,ij->i", residual, residual))
    norms = np.sqrt(np.einsum("ij,ij->i", rows, rows, dtype=np.float64))
    slacks = residual_norms + 16 * _UNIT * scales * np.sqrt(code_squares)
    return codes, scales, _rounded_up(slacks), _rounded_up(norms)


def _rounded_up(values: np.ndarray) -> np.ndarray:
    """float64 ``values`` as float32 no smaller (with a relative margin for their own sums)."""
    return np.nextafter((values * (1 + 1e-6)).astype(np.float32), np.float32(np.inf))


__all__ = ["KnnScreen"]
