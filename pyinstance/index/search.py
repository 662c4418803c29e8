"""Exact k-NN over a snapshot's memory-mapped descriptors, tombstones excluded.

Queries with ``R`` descriptors each (one per window) score a reference by the maximum
over the ``R`` similarities.

Why per-descriptor top-k lists suffice for the exact top-k by that maximum: let
``s(r) = max_j <q_j, r>`` and ``r`` be in the true top-k by ``s``, with ``j*`` its best
descriptor. If ``r`` were missing from ``q_j*``'s top-k list, that list would hold ``k``
other references ``r'`` with ``<q_j*, r'> >= <q_j*, r> = s(r)``, hence ``s(r') >= s(r)``:
``k`` references at least as good as ``r``, so ``r`` is not in the top-k (up to ties).
Hence every true top-k reference appears in the list of its best descriptor, with its
exact score ``s(r)``. A candidate's score taken as the maximum over the lists that hold it
never exceeds its true ``s``, so no other candidate can overtake a true top-k member.
The union of the ``R`` lists, deduplicated by maximum, then cut to ``k``, is exact.

Large snapshots are searched through an int8 screen of their descriptors
(:class:`~pyinstance.ops.KnnScreen`: a quarter of float32's bytes to stream per query, the
same results bit for bit), which :mod:`pyinstance.index.screen_cache` loads, builds,
extends and saves; many-window queries scan plainly (``KnnScreen.max_queries``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from pyinstance.index import screen_cache
from pyinstance.index.neighbours import Neighbours
from pyinstance.index.store import Snapshot
from pyinstance.ops import knn_dot


def check_queries(queries: Any, dim: int) -> np.ndarray:
    """``queries`` (Q × D or Q × R × D, numpy or torch CPU) as float32 Q × R × D."""
    if isinstance(queries, torch.Tensor):
        if queries.device.type != "cpu":
            raise ValueError(f"queries: expected a CPU array, got device {queries.device}")
        queries = queries.detach().float().numpy()
    if not isinstance(queries, np.ndarray):
        raise TypeError(f"queries: expected a numpy array or tensor, got {type(queries).__name__}")
    if queries.ndim == 2:
        queries = queries[:, None, :]
    if queries.ndim != 3:
        raise ValueError(f"queries: expected a Q×D or Q×R×D array, got shape {queries.shape}")
    if not np.issubdtype(queries.dtype, np.floating):
        raise TypeError(f"queries: expected floating-point values, got dtype {queries.dtype}")
    if queries.shape[2] != dim:
        raise ValueError(
            f"queries: descriptor size {queries.shape[2]} does not match the index's D={dim}"
        )
    if queries.shape[1] == 0:
        raise ValueError("queries: R = 0 descriptors per query")
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if not np.isfinite(queries).all():
        raise ValueError("queries: contains NaN or infinite values")
    return queries


def check_k(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k: expected a positive int, got {k!r}")
    return int(k)


def search(snapshot: Snapshot, queries: Any, k: int, exclude: Any = None) -> Neighbours:
    """The ``k`` best live references of each query of ``queries``.

    ``exclude``: optional ``Q`` row ids to leave out, one per query (-1: none), e.g. the
    query's own reference in leave-one-out; at most ``N - 1`` neighbours are then found.
    """
    k = check_k(k)
    batch = check_queries(queries, snapshot.descriptors.shape[1])
    n_queries, n_windows, dim = batch.shape
    live = snapshot.slots.shape[0]
    excluded = _excluded_slots(snapshot, exclude, n_queries)
    scores = np.full((n_queries, k), -np.inf, dtype=np.float32)
    positions = np.full((n_queries, k), -1, dtype=np.int64)
    kk = min(k, live - (excluded is not None))
    if kk > 0 and n_queries:
        flat_excluded = None if excluded is None else np.repeat(excluded, n_windows)
        flat_scores, flat_positions = _live_knn(snapshot, batch.reshape(-1, dim), kk, flat_excluded)
        if n_windows == 1:
            scores[:, :kk], positions[:, :kk] = flat_scores, flat_positions
        else:
            best_scores, best_positions = _max_over_windows(
                flat_scores.reshape(n_queries, -1), flat_positions.reshape(n_queries, -1), kk
            )
            scores[:, :kk], positions[:, :kk] = best_scores, best_positions
    padded = positions < 0
    safe = np.where(padded, 0, positions)
    rows = np.where(padded, -1, snapshot.rows[safe]) if live else np.full_like(positions, -1)
    labels = np.where(padded, -1, snapshot.labels[safe]) if live else np.full_like(positions, -1)
    return Neighbours(scores=scores, rows=rows, labels=labels, instances=snapshot.instances)


def _excluded_slots(snapshot: Snapshot, exclude: Any, n_queries: int) -> np.ndarray | None:
    """The slot of each query's excluded row (-1: none), or ``None`` when nothing is excluded."""
    if exclude is None:
        return None
    rows = np.asarray(exclude)
    if rows.shape != (n_queries,) or not np.issubdtype(rows.dtype, np.integer):
        raise ValueError(
            f"exclude: expected {n_queries} int row ids (one per query, -1: none), got "
            f"shape {rows.shape} dtype {rows.dtype}"
        )
    rows = rows.astype(np.int64)
    if not (rows >= 0).any():
        return None
    wanted = rows >= 0
    live_rows = snapshot.rows  # ascending: rows and slots are both handed out in order
    if len(live_rows) == 0:
        raise ValueError(f"exclude: row id(s) {rows[wanted][:5].tolist()} are not in the index")
    found = np.searchsorted(live_rows, rows).clip(0, len(live_rows) - 1)
    hit = wanted & (live_rows[found] == rows)
    if (wanted & ~hit).any():
        missing = rows[wanted & ~hit][:5].tolist()
        raise ValueError(f"exclude: row id(s) {missing} are not live rows of the index")
    return np.where(hit, snapshot.slots[found], -1)


def _live_knn(
    snapshot: Snapshot, queries: np.ndarray, k: int, exclude: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k live positions per query: ask ``knn_dot`` for more until ``k`` live ones remain."""
    total = snapshot.descriptors.shape[0]
    limit = total - (exclude is not None)  # knn_dot finds at most N - 1 when excluding
    refs = snapshot.refs()
    screen = screen_cache.screens.get(snapshot)
    if snapshot.dead == 0:
        scores, slots = knn_dot(queries, refs, k, exclude=exclude, screen=screen)
        return scores, slots  # slots are positions when nothing is dead
    position = snapshot.position_of_slot
    ask = min(limit, k + min(snapshot.dead, 2 * k))
    while True:
        scores, slots = knn_dot(queries, refs, ask, exclude=exclude, screen=screen)
        found = position[slots]
        alive = found >= 0
        if ask == limit or bool((alive.sum(axis=1) >= k).all()):
            break
        ask = min(limit, 4 * ask)
    # live results first, in their ranked order (stable), then cut to k
    order = np.argsort(~alive, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, 1), np.take_along_axis(found, order, 1)


def _max_over_windows(
    scores: np.ndarray, positions: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the ``k`` distinct positions with the highest score (max over duplicates)."""
    n_rows, width = scores.shape
    # sort each row by (position, -score): the first of each position run holds its max
    by_position = np.lexsort((-scores, positions), axis=1)
    positions = np.take_along_axis(positions, by_position, 1)
    scores = np.take_along_axis(scores, by_position, 1)
    repeated = np.zeros_like(positions, dtype=bool)
    repeated[:, 1:] = positions[:, 1:] == positions[:, :-1]
    scores = np.where(repeated, -np.inf, scores)
    positions = np.where(repeated, np.iinfo(np.int64).max, positions)
    # rank by score descending, ties by smaller position (knn_dot's order)
    ranked = np.lexsort((positions, -scores), axis=1)[:, :k]
    best_scores = np.take_along_axis(scores, ranked, 1)
    best_positions = np.take_along_axis(positions, ranked, 1)
    missing = ~np.isfinite(best_scores)
    return best_scores, np.where(missing, -1, best_positions)
