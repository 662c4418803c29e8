"""PCA-whitening and the learnt whitening from matching pairs.

Follows cnnimageretrieval-pytorch (``cirtorch/utils/whiten.py``: ``pcawhitenlearn``,
``whitenlearn``, ``whitenapply``; Radenović, Tolias, Chum, TPAMI 2018), with the
eigenvalue shrinkage of ``pcawhitenlearn_shrinkage`` (gtolias/how): a direction of
variance ``λ`` is scaled by ``λ^(-power/2)``, so ``power=1`` whitens fully and ``power=0``
only rotates (plain PCA). Descriptors are rows here (the references use columns).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from pyinstance.postprocess._arrays import (
    as_float_array,
    as_index_pairs,
    check_float,
    check_int,
    check_kind,
    l2_normalize,
)

_METHODS = ("pca", "pairs")


def _dim(dim: int | None, limit: int, why: str) -> int:
    if dim is None:
        return limit
    dim = check_int(dim, "dim", 1)
    if dim > limit:
        raise ValueError(f"dim: expected at most {limit} ({why}), got {dim}")
    return dim


def _descending_eigh(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return values[::-1], vectors[:, ::-1]


def _principal_directions(centred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (descending) and eigenvectors (columns) of the covariance of the
    ``N × D`` centred rows: from the ``D × D`` covariance, or, with fewer rows than
    dimensions, from the thin SVD of the rows (``O(N² D)`` instead of ``O(D³)``; the same
    leading directions, up to sign)."""
    n, d = centred.shape
    if n >= d:
        return _descending_eigh(centred.T @ centred / n)
    _, singular, vectors_t = np.linalg.svd(centred, full_matrices=False)
    return singular**2 / n, vectors_t.T


def _cholesky(matrix: np.ndarray) -> np.ndarray:
    """Lower Cholesky factor of ``matrix``, adding the smallest ``α I`` (×10 steps) needed."""
    scale = max(float(np.trace(matrix)) / matrix.shape[0], np.finfo(np.float64).tiny)
    alpha = 0.0
    while True:
        try:
            return np.linalg.cholesky(matrix + alpha * scale * np.eye(matrix.shape[0]))
        except np.linalg.LinAlgError:
            alpha = 1e-10 if alpha == 0.0 else alpha * 10


@dataclass(frozen=True, eq=False)
class PCAWhitening:
    """An affine map ``x -> l2_normalize((x - mean) @ projection)`` learnt from descriptors.

    Build it with :meth:`fit` (unsupervised PCA-whitening) or :meth:`fit_pairs` (learnt
    whitening from matching pairs); store it with :meth:`to_dict`.

    Attributes:
        mean: ``(D,)`` float32 centre.
        projection: ``(D, D_out)`` float32 map.
        method: ``"pca"`` or ``"pairs"``.
        power, ridge: the shrinkage the map was fitted with (kept to refit it alike).
    """

    mean: np.ndarray
    projection: np.ndarray
    method: str = "pca"
    power: float = 1.0
    ridge: float = 0.0
    kind: ClassVar[str] = "pca_whitening"

    def __post_init__(self) -> None:
        mean = as_float_array(self.mean, "mean", 1, "(D,)")
        projection = as_float_array(self.projection, "projection", 2, "(D, D_out)")
        if projection.shape[0] != mean.shape[0]:
            raise ValueError(
                f"projection: expected {mean.shape[0]} rows like mean, got {projection.shape[0]}"
            )
        if self.method not in _METHODS:
            raise ValueError(f"method: expected one of {_METHODS}, got {self.method!r}")
        check_float(self.power, "power", 0.0, 1.0)
        check_float(self.ridge, "ridge", 0.0)
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "projection", projection)

    @property
    def in_dim(self) -> int:
        return int(self.mean.shape[0])

    @property
    def out_dim(self) -> int:
        return int(self.projection.shape[1])

    @classmethod
    def fit(
        cls,
        descriptors: Any,
        *,
        dim: int | None = None,
        power: float = 1.0,
        ridge: float = 0.0,
    ) -> PCAWhitening:
        """PCA-whitening of ``descriptors`` (N×D, e.g. the references or a separate set).

        Args:
            dim: output dimensions, the leading principal directions; at most
                ``min(D, N - 1)`` (N descriptors span N - 1 directions), the default.
            power: shrinkage in [0, 1]: each direction is divided by ``λ^(power/2)``.
            ridge: regularisation, ``ridge × λ_max`` added to every eigenvalue ``λ`` before
                the power (damps the noisy trailing directions).
        """
        x = as_float_array(descriptors, "descriptors", 2, "(N, D)").astype(np.float64)
        n, d = x.shape
        if n < 2:
            raise ValueError(f"descriptors: PCA-whitening needs at least 2 descriptors, got {n}")
        dim = _dim(dim, min(d, n - 1), f"min(D={d}, N-1={n - 1}) directions have variance")
        power = check_float(power, "power", 0.0, 1.0)
        ridge = check_float(ridge, "ridge", 0.0)
        mean = x.mean(axis=0)
        centred = x - mean
        values, vectors = _principal_directions(centred)
        values = values[:dim]
        floor = max(values[0], np.finfo(np.float64).tiny) * 1e-12
        values = np.maximum(values + ridge * values[0], floor)
        projection = vectors[:, :dim] * values ** (-power / 2)
        return cls(mean, projection, "pca", power, ridge)

    @classmethod
    def fit_pairs(
        cls,
        descriptors: Any,
        query_idx: Any,
        positive_idx: Any,
        *,
        dim: int | None = None,
    ) -> PCAWhitening:
        """Learnt whitening from matching pairs (Radenović et al.; ``whitenlearn``).

        Whitens the differences of matching pairs ``descriptors[query_idx[i]] -
        descriptors[positive_idx[i]]`` (Cholesky of their covariance, regularised with the
        smallest ``α I`` that makes it positive definite), then rotates to the principal
        directions of all ``descriptors`` so whitened; keeps the leading ``dim`` (default
        all D).
        """
        x = as_float_array(descriptors, "descriptors", 2, "(N, D)").astype(np.float64)
        n, d = x.shape
        queries, positives = as_index_pairs(query_idx, positive_idx, n)
        if (queries == positives).all():
            raise ValueError("positive_idx: every pair matches a descriptor with itself")
        dim = _dim(dim, d, f"D={d}")
        mean = x[queries].mean(axis=0)
        differences = x[queries] - x[positives]
        factor = _cholesky(differences.T @ differences / differences.shape[0])
        intra = np.linalg.inv(factor)  # whitens the matching-pair differences
        whitened = (x - mean) @ intra.T
        _, vectors = _descending_eigh(whitened.T @ whitened)
        projection = intra.T @ vectors[:, :dim]
        return cls(mean, projection, "pairs")

    def apply(self, descriptors: Any) -> np.ndarray:
        """``(N, D)`` -> ``(N, D_out)`` whitened, L2-normalised float32 descriptors."""
        x = as_float_array(descriptors, "descriptors", 2, "(N, D)")
        if x.shape[1] != self.in_dim:
            raise ValueError(
                f"descriptors: expected {self.in_dim} columns (the fitted D), got {x.shape[1]}"
            )
        return l2_normalize((x - self.mean) @ self.projection)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able state (arrays as nested lists of float32 values)."""
        return {
            "kind": self.kind,
            "method": self.method,
            "power": self.power,
            "ridge": self.ridge,
            "mean": self.mean.tolist(),
            "projection": self.projection.tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PCAWhitening:
        """Inverse of :meth:`to_dict` (arrays may also be numpy arrays)."""
        check_kind(data, cls.kind, ("method", "power", "ridge", "mean", "projection"))
        return cls(data["mean"], data["projection"], data["method"], data["power"], data["ridge"])
