"""Multi-scale descriptors: weighted sum over scales, and similarity-matrix scoring.

An image described at S scales has an ``S×D`` descriptor set (``pyinstance.extract``
returns ``N×S×D``). Either aggregate the scales into one descriptor
(:class:`ScaleAggregation`), or keep all of them and score a query against a reference
from their ``S×T`` similarity matrix ``M`` (``M[s, t]`` = query scale ``s`` · reference
scale ``t``; Bouček, §5.3), with one of :data:`REDUCTIONS`:

- ``max``: ``max M``, the best-matching pair of scales;
- ``row_max_sum``: ``sum_s max_t M[s, t]``, every query scale matched to its best
  reference scale;
- ``col_max_sum``: ``sum_t max_s M[s, t]``, every reference scale to its best query scale;
- ``*_squared``: the same on ``M * |M|`` (each similarity squared, its sign kept), which
  favours strong matches over many weak ones. ``max_squared`` ranks like ``max``.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from pyinstance.postprocess._arrays import (
    as_float_array,
    as_index_pairs,
    check_int,
    check_kind,
    l2_normalize,
)

REDUCTIONS = (
    "max",
    "row_max_sum",
    "col_max_sum",
    "max_squared",
    "row_max_squared_sum",
    "col_max_squared_sum",
)

_MAX_GRID = 20_000
_BLOCK_ELEMENTS = 1 << 24  # similarities held at once while scoring (64 MiB of float32)


def _scale_sets(value: Any, name: str) -> np.ndarray:
    return as_float_array(value, name, 3, "(N, S, D)")


def _weights(value: Any) -> np.ndarray:
    weights = np.asarray(value, dtype=np.float64)
    if weights.ndim != 1 or weights.size == 0:
        raise ValueError(f"weights: expected a non-empty 1-D array, got shape {weights.shape}")
    if not np.isfinite(weights).all() or (weights < 0).any() or weights.sum() <= 0:
        raise ValueError(
            f"weights: expected finite non-negative weights, not all zero, got {weights.tolist()}"
        )
    return weights / weights.sum()


def _simplex_grid(n_scales: int, steps: int) -> np.ndarray:
    """All weight vectors with entries in {0, 1/steps, ..., 1} summing to 1."""
    points = [
        np.diff([0, *bars, steps])
        for bars in itertools.combinations_with_replacement(range(steps + 1), n_scales - 1)
    ]
    return np.array(points, dtype=np.float64) / steps


@dataclass(frozen=True, eq=False)
class ScaleAggregation:
    """One descriptor per image: ``l2_normalize(sum_s weights[s] * x[:, s])``.

    Attributes:
        weights: ``(S,)`` non-negative scale weights (normalised to sum 1); a zero weight
            leaves its scale out. Equal weights give ``pyinstance.aggregate_scales(x)``.
    """

    weights: np.ndarray
    kind: ClassVar[str] = "scale_sum"

    def __post_init__(self) -> None:
        object.__setattr__(self, "weights", _weights(self.weights))

    @classmethod
    def fit_pairs(
        cls, descriptors: Any, query_idx: Any, positive_idx: Any, *, steps: int = 10
    ) -> ScaleAggregation:
        """Weights learnt from matching pairs by a search over the simplex.

        Every weight vector with entries in multiples of ``1/steps`` is tried; each pair's
        aggregated query is ranked against all other rows of ``descriptors`` except the
        rows paired with it, and the weights with the highest mean reciprocal rank of the
        positive win (ties: the larger mean margin between the positive and the best
        competitor, then the first in the grid).

        Args:
            descriptors: ``(N, S, D)`` descriptor sets holding both ends of every pair.
            query_idx, positive_idx: ``(P,)`` rows of matching pairs.
            steps: grid resolution; at most 20 000 weight vectors are tried.
        """
        x = _scale_sets(descriptors, "descriptors")
        n, n_scales, _ = x.shape
        queries, positives = as_index_pairs(query_idx, positive_idx, n)
        if (queries == positives).any():
            raise ValueError("positive_idx: a pair matches a descriptor with itself")
        steps = check_int(steps, "steps", 1)
        size = math.comb(steps + n_scales - 1, n_scales - 1)
        if size > _MAX_GRID:
            raise ValueError(
                f"steps: {steps} steps over {n_scales} scales make {size} weight vectors "
                f"(at most {_MAX_GRID}); use fewer steps"
            )
        grid = _simplex_grid(n_scales, steps)
        competitor = np.ones((queries.size, n), dtype=bool)
        competitor[np.arange(queries.size), queries] = False
        for query in np.unique(queries):  # the query's positives do not compete
            competitor[np.ix_(queries == query, positives[queries == query])] = False
        best: tuple[float, float] | None = None
        best_weights = grid[0]
        for weights in grid:
            aggregated = l2_normalize(np.einsum("nsd,s->nd", x, weights.astype(np.float32)))
            similarity = aggregated[queries] @ aggregated.T
            positive = similarity[np.arange(queries.size), positives]
            rivals = np.where(competitor, similarity, -np.inf)
            ranks = 1 + (rivals >= positive[:, None]).sum(axis=1)
            score = (float((1.0 / ranks).mean()), float((positive - rivals.max(axis=1)).mean()))
            if best is None or score > best:
                best, best_weights = score, weights
        return cls(best_weights)

    def apply(self, descriptors: Any) -> np.ndarray:
        """``(N, S, D)`` -> ``(N, D)`` L2-normalised float32 descriptors."""
        x = _scale_sets(descriptors, "descriptors")
        if x.shape[1] != self.weights.size:
            raise ValueError(
                f"descriptors: expected {self.weights.size} scales (like weights), got {x.shape[1]}"
            )
        return l2_normalize(np.einsum("nsd,s->nd", x, self.weights.astype(np.float32)))

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "weights": self.weights.tolist()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ScaleAggregation:
        check_kind(data, cls.kind, ("weights",))
        return cls(np.asarray(data["weights"]))


def _check_pair(queries: Any, references: Any, reduction: str) -> tuple[np.ndarray, np.ndarray]:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction: expected one of {REDUCTIONS}, got {reduction!r}")
    q = as_float_array(queries, "queries", 3, "(Q, S, D)")
    r = as_float_array(references, "references", 3, "(N, T, D)")
    if q.shape[2] != r.shape[2]:
        raise ValueError(
            f"references: expected descriptors of dimension D={q.shape[2]} like queries, "
            f"got {r.shape[2]}"
        )
    return q, r


def _reduce(similarity: np.ndarray, reduction: str) -> np.ndarray:
    """``(B, S, N, T)`` similarity matrices -> ``(B, N)`` scores."""
    if "squared" in reduction:
        similarity = similarity * np.abs(similarity)
    if reduction.startswith("max"):
        return similarity.max(axis=(1, 3))
    if reduction.startswith("row"):
        return similarity.max(axis=3).sum(axis=1)
    return similarity.max(axis=1).sum(axis=2)


def _score_blocks(q: np.ndarray, r: np.ndarray, reduction: str):
    """Yield ``(start, scores)`` for blocks of queries: one dense product per block."""
    n_queries, n_scales, dim = q.shape
    n_refs, n_ref_scales, _ = r.shape
    flat_refs = r.reshape(n_refs * n_ref_scales, dim).T
    block = max(1, _BLOCK_ELEMENTS // (n_scales * n_refs * n_ref_scales))
    for start in range(0, n_queries, block):
        rows = q[start : start + block]
        similarity = (rows.reshape(-1, dim) @ flat_refs).reshape(
            rows.shape[0], n_scales, n_refs, n_ref_scales
        )
        yield start, _reduce(similarity, reduction)


def multiscale_scores(queries: Any, references: Any, reduction: str = "max") -> np.ndarray:
    """``(Q, N)`` float32 scores of every query's against every reference's descriptor set.

    Args:
        queries: ``(Q, S, D)`` descriptor sets.
        references: ``(N, T, D)`` descriptor sets (T may differ from S).
        reduction: one of :data:`REDUCTIONS`.

    The ``S×T`` matrices come from one matrix product per block of queries against all
    ``N·T`` reference rows (bounded memory), reduced over the scale axes at once.
    """
    q, r = _check_pair(queries, references, reduction)
    out = np.empty((q.shape[0], r.shape[0]), dtype=np.float32)
    for start, scores in _score_blocks(q, r, reduction):
        out[start : start + scores.shape[0]] = scores
    return out


def multiscale_search(
    queries: Any, references: Any, k: int, reduction: str = "max"
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best references of each query under :func:`multiscale_scores`.

    Returns:
        ``(scores, indices)``: ``(Q, k)`` float32 scores, descending, and int64 reference
        indices; equal scores ordered by the smaller index (as ``knn_dot``).
    """
    q, r = _check_pair(queries, references, reduction)
    k = check_int(k, "k", 1)
    if k > r.shape[0]:
        raise ValueError(
            f"k: expected 1 <= k <= N={r.shape[0]} (the number of references), got {k}"
        )
    top_scores = np.empty((q.shape[0], k), dtype=np.float32)
    top_indices = np.empty((q.shape[0], k), dtype=np.int64)
    for start, scores in _score_blocks(q, r, reduction):
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        top_indices[start : start + scores.shape[0]] = order
        top_scores[start : start + scores.shape[0]] = np.take_along_axis(scores, order, axis=1)
    return top_scores, top_indices
