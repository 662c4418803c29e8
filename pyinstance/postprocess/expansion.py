"""Database-side augmentation (DBA) and query expansion (average and α-QE).

Both replace a descriptor by a weighted sum of itself (weight 1) and its ``k`` nearest
references, re-normalised (Chum et al. 2007; Arandjelović & Zisserman 2012; Radenović
et al. TPAMI 2018). Descriptors are expected L2-normalised, so that dot products are
cosine similarities.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from pyinstance.ops import knn_dot
from pyinstance.postprocess._arrays import (
    as_float_array,
    check_float,
    check_int,
    check_kind,
    l2_normalize,
)


def _similarity_weights(scores: np.ndarray, alpha: float) -> np.ndarray:
    """``max(s, 0)^alpha``; ``alpha = 0`` gives weight 1 to every neighbour."""
    if alpha == 0.0:
        return np.ones_like(scores)
    return np.maximum(scores, 0.0) ** alpha


def _expand(
    x: np.ndarray, references: np.ndarray, indices: np.ndarray, weights: np.ndarray
) -> np.ndarray:
    """``l2_normalize(x + sum_j weights[:, j] * references[indices[:, j]])``; index -1 skipped."""
    valid = indices >= 0
    gathered = references[np.where(valid, indices, 0)]
    weights = np.where(valid, weights, 0.0).astype(np.float32)
    return l2_normalize(x + np.einsum("qk,qkd->qd", weights, gathered))


@dataclass(frozen=True)
class DatabaseAugmentation:
    """Each reference becomes the weighted sum of itself and its ``k`` nearest references.

    Attributes:
        k: neighbours per reference (found with :func:`pyinstance.ops.knn_dot`, the
            reference itself excluded).
        alpha: None: rank weights, ``(k + 1 - r) / (k + 1)`` for the ``r``-th neighbour
            (the reference itself has weight 1, the ``k``-th neighbour ``1 / (k + 1)``);
            a number: similarity weights ``max(s, 0)^alpha`` (α-DBA; 0: plain average).

    Nothing is learnt: the state is the parameters; re-apply it when the collection
    changes.
    """

    k: int = 1
    alpha: float | None = None
    kind: ClassVar[str] = "dba"

    def __post_init__(self) -> None:
        check_int(self.k, "k", 1)
        if self.alpha is not None:
            object.__setattr__(self, "alpha", check_float(self.alpha, "alpha", 0.0))

    def apply(self, references: Any, *, threads: int | None = None) -> np.ndarray:
        """``(N, D)`` references -> ``(N, D)`` augmented, L2-normalised float32 references."""
        x = as_float_array(references, "references", 2, "(N, D)")
        if x.shape[0] <= self.k:
            raise ValueError(
                f"references: DBA with k={self.k} needs more than {self.k} references, "
                f"got {x.shape[0]}"
            )
        scores, indices = knn_dot(
            x, x, self.k, exclude=np.arange(x.shape[0], dtype=np.int64), threads=threads
        )
        if self.alpha is None:
            ranks = np.arange(1, self.k + 1, dtype=np.float32)
            weights = np.broadcast_to((self.k + 1 - ranks) / (self.k + 1), scores.shape)
        else:
            weights = _similarity_weights(scores, self.alpha)
        return _expand(x, x, indices, weights)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "k": self.k, "alpha": self.alpha}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DatabaseAugmentation:
        check_kind(data, cls.kind, ("k", "alpha"))
        return cls(data["k"], data["alpha"])


@dataclass(frozen=True)
class QueryExpansion:
    """A query becomes the weighted sum of itself and its top ``k`` references.

    Attributes:
        k: references added to each query.
        alpha: weights ``max(s, 0)^alpha`` of a reference of similarity ``s``: 0 is average
            query expansion (every weight 1), α > 0 is α-QE (Radenović et al. use 3).

    Search again with the expanded queries. Nothing is learnt: the state is the parameters.
    """

    k: int = 1
    alpha: float = 0.0
    kind: ClassVar[str] = "qe"

    def __post_init__(self) -> None:
        check_int(self.k, "k", 1)
        object.__setattr__(self, "alpha", check_float(self.alpha, "alpha", 0.0))

    def apply(
        self,
        queries: Any,
        references: Any,
        *,
        neighbours: tuple[Any, Any] | None = None,
        threads: int | None = None,
    ) -> np.ndarray:
        """``(Q, D)`` queries -> ``(Q, D)`` expanded, L2-normalised float32 queries.

        Args:
            queries: ``(Q, D)`` descriptors.
            references: ``(N, D)`` descriptors of the collection.
            neighbours: ``(scores, indices)``, each ``(Q, K)`` with ``K >= k``, best first,
                indices into ``references`` (-1: none); default: searched here with
                :func:`pyinstance.ops.knn_dot`.
            threads: CPU threads for that search.
        """
        q = as_float_array(queries, "queries", 2, "(Q, D)")
        refs = as_float_array(references, "references", 2, "(N, D)")
        if refs.shape[1] != q.shape[1]:
            raise ValueError(
                f"references: expected {q.shape[1]} columns like queries, got {refs.shape[1]}"
            )
        if neighbours is None:
            if refs.shape[0] < self.k:
                raise ValueError(
                    f"references: query expansion with k={self.k} needs at least {self.k} "
                    f"references, got {refs.shape[0]}"
                )
            scores, indices = knn_dot(q, refs, self.k, threads=threads)
        else:
            scores, indices = self._neighbours(neighbours, q.shape[0], refs.shape[0])
        return _expand(q, refs, indices, _similarity_weights(scores, self.alpha))

    def _neighbours(
        self, neighbours: tuple[Any, Any], n_queries: int, n_refs: int
    ) -> tuple[np.ndarray, np.ndarray]:
        if not isinstance(neighbours, tuple) or len(neighbours) != 2:
            raise TypeError("neighbours: expected a (scores, indices) tuple")
        indices = np.asarray(neighbours[1])
        if indices.dtype == np.bool_ or not np.issubdtype(indices.dtype, np.integer):
            raise TypeError(f"neighbours: expected integer indices, got dtype {indices.dtype}")
        if indices.ndim != 2 or indices.shape[0] != n_queries or indices.shape[1] < self.k:
            raise ValueError(
                f"neighbours: expected ({n_queries}, K >= {self.k}) indices, got shape "
                f"{indices.shape}"
            )
        if indices.min() < -1 or indices.max() >= n_refs:
            raise ValueError(f"neighbours: indices must be -1 or lie in [0, {n_refs})")
        scores = np.asarray(neighbours[0], dtype=np.float32)
        if scores.shape != indices.shape:
            raise ValueError(
                f"neighbours: expected scores of shape {indices.shape} like the indices, "
                f"got {scores.shape}"
            )
        indices, scores = indices[:, : self.k], scores[:, : self.k]
        if np.isnan(scores[indices >= 0]).any():
            raise ValueError("neighbours: scores contain NaN")
        return scores, indices.astype(np.int64)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "k": self.k, "alpha": self.alpha}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QueryExpansion:
        check_kind(data, cls.kind, ("k", "alpha"))
        return cls(data["k"], data["alpha"])
