"""An int8 screening copy of reference rows: ``knn_dot(..., screen=)`` reads it instead of
the references and scores exactly only the rows that can still be among the k best.

Row ``r`` is stored as ``s c`` (int8 codes ``c`` in [-127, 127], ``s = max|r| / 127``) with
``n >= ||r||`` and a slack ``e >= ||r - s c|| + 16 u s ||c||`` (``u = 2^-24``), computed in
float64 and rounded up. The kernel quantises each query the same way, to int16 codes (signed
bytes where the CPU has AVX512_VNNI), ``q = t b + f``, sums ``<b, c>`` exactly in int32 and
takes ``a = fl(fl(<b, c>) fl(t s))``. With
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

import os
import secrets
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pyinstance.ops._arrays import to_tensor

#: Queries per call up to which ``knn_dot`` reads the screen; more scan the references
#: plainly. Measured (``python benchmarks/index.py``: 100,000 x 1280 float32, one thread,
#: AVX512_VNNI, CPU time): the screen is 3.5-4x faster than the plain scan at 1 query,
#: 2.5x at 12, 2.1x at 19, 1.9x at 32, 1.6x at 48, 1.5x at 63; from 64 queries per thread
#: the plain scan's many-query kernel takes over and is as fast (135 ms at 64 against the
#: screen's 146 ms at 63).
MAX_SCREENED_QUERIES = 48
#: Row stride of the codes (bytes): the kernel reads whole 64-byte vectors.
_STRIDE = 64
#: Rows quantised at a time (bounds the float64 temporaries).
_CHUNK = 4096
_UNIT = 2.0**-24
#: A screen file: magic, dim, stride, rows, CRC-32 of everything after it; then the codes
#: (rows x stride int8), scales, slacks, norms (float32) and code sums (int32), little-endian.
_MAGIC = b"PYISCRN1"
_HEADER = struct.Struct("<8sQQQI")
#: Rows a loaded screen re-quantises from the references it is loaded for (evenly spaced,
#: the first and last included): enough to tell another array, as an index's append-only
#: descriptor generations need; not a check of every row.
_PROBES = 256


class ScreenFileError(ValueError):
    """A screen file is damaged or was made from other references."""


def _round_up(value: int, step: int) -> int:
    return (value + step - 1) // step * step


class KnnScreen:
    """The int8 screening copy of the first ``rows`` rows of a reference array.

    Build it with :meth:`of`, follow rows appended to the same array with
    :meth:`extended`, and pass it as ``knn_dot(queries, refs, k, screen=...)`` with exactly
    those rows. About a quarter of the size of float32 references. A screen never changes
    once built, so searches in other threads may keep using it.

    ``max_queries``: calls with more queries than this scan ``refs`` plainly (the same
    results; see :data:`MAX_SCREENED_QUERIES`).
    """

    def __init__(self, dim: int, *, max_queries: int = MAX_SCREENED_QUERIES) -> None:
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
            raise ValueError(f"dim: expected a positive int, got {dim!r}")
        if isinstance(max_queries, bool) or not isinstance(max_queries, (int, np.integer)):
            raise TypeError(f"max_queries: expected an int, got {type(max_queries).__name__}")
        if max_queries < 0:
            raise ValueError(f"max_queries: expected an int >= 0, got {max_queries}")
        self.max_queries = int(max_queries)
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
        other = KnnScreen(self.dim, max_queries=self.max_queries)
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

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the screen to ``path`` atomically (a temporary file in the same folder,
        then renamed over ``path``). Not fsynced: a file torn by a crash fails
        :meth:`load`'s checksum and is rebuilt, never used."""
        path = Path(path)
        rows = self.rows
        parts = self._parts(rows)
        fields = _HEADER.pack(_MAGIC, self.dim, self.stride, rows, 0)[:-4]
        crc = zlib.crc32(fields[len(_MAGIC) :])
        for part in parts:
            crc = zlib.crc32(memoryview(part).cast("B"), crc)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        try:
            with open(temporary, "wb") as handle:
                handle.write(fields + struct.pack("<I", crc))
                for part in parts:
                    handle.write(memoryview(part).cast("B"))
            os.replace(temporary, path)
        finally:
            temporary.unlink(missing_ok=True)

    @classmethod
    def load(cls, path: str | os.PathLike[str], refs: Any) -> KnnScreen:
        """The screen saved at ``path``, checked against ``refs`` (the array it screens, or
        that array grown by appends: the screen then covers its first rows; extend it).

        Raises :class:`ScreenFileError` when the file is damaged (size, header, checksum) or
        was not made from ``refs`` (shape, or rows re-quantised from ``refs`` differ: up to
        256 evenly spaced, the first and last included; a change to other rows goes
        unseen); ``FileNotFoundError`` when it is absent.
        """
        path = Path(path)
        tensor = _ref_tensor(refs)
        with open(path, "rb") as handle:
            header = handle.read(_HEADER.size)
            if len(header) < _HEADER.size:
                raise ScreenFileError(f"screen file {str(path)!r}: truncated header")
            magic, dim, stride, rows, crc = _HEADER.unpack(header)
            if magic != _MAGIC:
                raise ScreenFileError(f"screen file {str(path)!r}: not a screen file")
            if dim != tensor.shape[1] or stride != _round_up(dim, _STRIDE):
                raise ScreenFileError(
                    f"screen file {str(path)!r}: made for D={dim}, not these refs' "
                    f"D={tensor.shape[1]}"
                )
            if not 0 < rows <= tensor.shape[0]:
                raise ScreenFileError(
                    f"screen file {str(path)!r}: covers {rows} rows, refs hold {tensor.shape[0]}"
                )
            expected = _HEADER.size + rows * (stride + 16)
            if os.fstat(handle.fileno()).st_size != expected:
                raise ScreenFileError(f"screen file {str(path)!r}: wrong size (damaged)")
            screen = cls(dim)
            screen._reserve(rows)
            check = zlib.crc32(header[len(_MAGIC) : -4])
            for part in screen._parts(rows):
                view = memoryview(part).cast("B")
                if handle.readinto(view) != view.nbytes:
                    raise ScreenFileError(f"screen file {str(path)!r}: truncated")
                check = zlib.crc32(view, check)
        if check != crc:
            raise ScreenFileError(f"screen file {str(path)!r}: checksum mismatch (damaged)")
        screen.rows = int(rows)
        screen.max_norm = float(screen._norms[:rows].max())
        if not screen._agrees_with(tensor[:rows]):
            raise ScreenFileError(f"screen file {str(path)!r}: made from other references (stale)")
        return screen

    def _parts(self, rows: int) -> list[np.ndarray]:
        """The first ``rows`` rows of each array, in file order."""
        return [
            self._codes[:rows],
            self._scales[:rows],
            self._slacks[:rows],
            self._norms[:rows],
            self._sums[:rows],
        ]

    def _agrees_with(self, refs: torch.Tensor) -> bool:
        """Whether up to ``_PROBES`` rows of ``refs``, the first and last included,
        quantise to this screen's codes, scales and sums, within its bounds."""
        probe = np.unique(np.linspace(0, self.rows - 1, min(self.rows, _PROBES)).astype(np.int64))
        codes, scales, slacks, norms = _quantised(refs[probe].float().numpy())
        return bool(
            np.array_equal(codes, self._codes[probe, : self.dim])
            and not self._codes[probe, self.dim :].any()
            and np.array_equal(scales, self._scales[probe])
            and np.array_equal(codes.sum(axis=1, dtype=np.int32), self._sums[probe])
            and (self._slacks[probe] >= slacks).all()
            and (self._norms[probe] >= norms).all()
        )

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
        codes, scales = _codes_and_scales(refs[probe].float().numpy())
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


def _ref_tensor(refs: Any) -> torch.Tensor:
    """``refs`` as a CPU float tensor (sharing its memory), checked."""
    tensor, _ = to_tensor(refs, "refs")
    if tensor.device.type != "cpu":
        raise ValueError(f"refs: expected a CPU array, got device {tensor.device}")
    if tensor.dim() != 2:
        raise ValueError(f"refs: expected a 2-D (N x D) array, got shape {tuple(tensor.shape)}")
    if tensor.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise TypeError(f"refs: expected float32, float16 or bfloat16, got {tensor.dtype}")
    return tensor.detach()


def _float_rows(refs: Any) -> np.ndarray:
    """``refs`` as a float32 numpy array (a view when it already is one)."""
    tensor = _ref_tensor(refs)
    if tensor.dtype == torch.float32 and isinstance(refs, np.ndarray):
        return refs
    return tensor.float().numpy()


def _codes_and_scales(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """int8 codes and float32 scales of float32 ``rows``."""
    if not np.isfinite(rows).all():
        raise ValueError("refs: contains NaN or infinite values")
    largest = np.maximum(rows.max(axis=1), -rows.min(axis=1))  # max |r|, no temporary
    scales = (largest / np.float32(127)).astype(np.float32)
    # Where max|r| < 127 * 2^-128, 1 / s overflows to inf: the row's nonzero entries clip to
    # +-127 and its zeros (0 * inf = NaN) are set to 0 (casting NaN to int8 is left to the
    # platform); the bounds hold for any codes. Silently.
    with np.errstate(over="ignore", invalid="ignore"):
        inverse = np.divide(1, scales, out=np.zeros_like(scales), where=scales > 0)[:, None]
        scaled = rows * inverse
    if np.isinf(inverse).any():
        np.nan_to_num(scaled, copy=False, nan=0.0)
    np.rint(scaled, out=scaled)
    np.clip(scaled, -127, 127, out=scaled)
    return scaled.astype(np.int8), scales


def _quantised(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """int8 codes, float32 scales, slacks and norms (both rounded up) of float32 ``rows``."""
    rows = np.asarray(rows, dtype=np.float32)
    codes, scales = _codes_and_scales(rows)
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


__all__ = ["MAX_SCREENED_QUERIES", "KnnScreen", "ScreenFileError"]
