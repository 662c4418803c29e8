"""The post-processed view of an index snapshot: the references queries are compared with.

Stored descriptors stay raw (what the recipe's network made); the learnt state (the
whitening) is stored beside them, refitted in the commit of every change of the
collection. A view applies that state (and DBA) to the live references of one snapshot;
the index caches it until the next commit.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from pyinstance.index.neighbours import Neighbours
from pyinstance.index.recipe import Recipe
from pyinstance.index.search import check_k
from pyinstance.index.store import Refit, Snapshot, from_storage
from pyinstance.postprocess import FittedPostProcessing, multiscale_scores
from pyinstance.postprocess.pipeline import (
    scale_weights_state,
    whitening_skipped,
    whitening_state,
)

#: Key of the fitted whitening in the index's ``fitted`` table.
WHITENING_KEY = "whitening"
#: Key of a whitening fitted once on a separate set (written at build, never refitted).
WHITENING_SET_KEY = "whitening_set"
#: Key of the scale weights learnt from the collection.
SCALE_WEIGHTS_KEY = "scale_weights"


class StalePostProcessingError(ValueError):
    """The stored post-processing state was not fitted on the index's current collection."""


@dataclasses.dataclass(frozen=True)
class ProcessedView:
    """One snapshot's live references, post-processed.

    Attributes:
        snapshot: the snapshot with ``descriptors`` replaced by the post-processed live
            rows (float32, ``N × P·D_out``, no tombstones: slot = position).
        fitted: the post-processing with the state of that snapshot.
        references: the same rows as ``(N, P, D_out)`` sets.
    """

    snapshot: Snapshot
    fitted: FittedPostProcessing | None
    references: np.ndarray


def refit_function(recipe: Recipe) -> Refit | None:
    """What the store calls in each commit that changes the collection of an index of
    ``recipe``: the learnt state fitted on the new collection (None: nothing is learnt)."""
    config = recipe.postprocessing
    if not config.learnt:
        return None
    per_image, dim = recipe.descriptors_per_image, recipe.dim

    def refit(rows: np.ndarray, instances: list[str]) -> dict[str, bytes | None]:
        if rows.shape[0] == 0:
            return {WHITENING_KEY: None, SCALE_WEIGHTS_KEY: None}
        sets = rows.reshape(-1, per_image, dim)
        aggregation = config.fit_aggregation(sets, instances)
        state: dict[str, bytes | None] = {}
        if config.learnt_whitening:
            state[WHITENING_KEY] = config.fit(sets, instances, aggregation).state_bytes()
        if aggregation is not None and config.scale_weights == "learnt":
            state[SCALE_WEIGHTS_KEY] = scale_weights_state(aggregation)
        return state

    return refit


def whitening_set_state(
    recipe: Recipe, rows: np.ndarray, fitted_on: dict[str, Any], name: str = "whiten_from"
) -> dict[str, bytes | None]:
    """The ``fitted`` entry of the recipe's whitening fitted on a separate set: its raw
    descriptors ``rows`` (``(M, D)``), described by ``fitted_on`` (errors name ``name``)."""
    config = recipe.postprocessing
    if not config.separate_whitening or config.whiten is None:
        raise ValueError(f"{name}: the recipe does not whiten with a separate set (fit_on)")
    whitening = config.whiten.fit_separate(rows, name)
    return {WHITENING_SET_KEY: whitening_state(whitening, fitted_on)}


def searches_whitened(recipe: Recipe, snapshot: Snapshot) -> bool:
    """Whether searches of ``snapshot`` whiten: the recipe whitens and a whitening is
    stored (one learnt from the collection is skipped below its ``min_references``)."""
    config = recipe.postprocessing
    key = WHITENING_SET_KEY if config.separate_whitening else WHITENING_KEY
    stored = snapshot.fitted.get(key)
    return config.whiten is not None and stored is not None and whitening_skipped(stored[1]) is None


def _fitted(recipe: Recipe, snapshot: Snapshot, path: str) -> FittedPostProcessing | None:
    """The snapshot's post-processing; a missing or stale learnt state is an error."""
    config = recipe.postprocessing
    if config.learnt and snapshot.slots.size == 0:
        return None  # nothing to fit on, nothing to search
    whitening = _separate(snapshot, path) if config.separate_whitening else None
    if config.learnt_whitening:
        whitening = _current(snapshot, WHITENING_KEY, "whitens descriptors", path)
    weights = None
    if config.scale_weights == "learnt":
        weights = _current(snapshot, SCALE_WEIGHTS_KEY, "learns scale weights", path)
    return FittedPostProcessing.from_state(config, whitening, weights)


def _current(snapshot: Snapshot, key: str, what: str, path: str) -> bytes:
    """The stored state ``key``, fitted on the snapshot's collection (else an error)."""
    stored = snapshot.fitted.get(key)
    fix = f"run `pyinstance index refit {path}` (or InstanceIndex.refit())"
    noun = key.replace("_", " ")
    if stored is None:
        raise StalePostProcessingError(
            f"index {path!r}: its recipe {what} but no {noun} is stored; {fix}"
        )
    if stored[0] != snapshot.collection:
        raise StalePostProcessingError(
            f"index {path!r}: the {noun} was fitted on collection version {stored[0]}, the "
            f"collection is at version {snapshot.collection} (changed without refitting); {fix}"
        )
    return stored[1]


def _separate(snapshot: Snapshot, path: str) -> bytes:
    """The whitening fitted on a separate set: stored once, valid for every collection."""
    stored = snapshot.fitted.get(WHITENING_SET_KEY)
    if stored is None:
        raise StalePostProcessingError(
            f"index {path!r}: its recipe whitens with a separate set but none is stored; "
            "build the index again with the whitening set (--whiten-from)"
        )
    return stored[1]


def processed_view(recipe: Recipe, snapshot: Snapshot, path: str) -> ProcessedView:
    """The post-processed live references of ``snapshot`` (an index of ``recipe`` at
    ``path``, named in errors)."""
    fitted = _fitted(recipe, snapshot, path)
    n = int(snapshot.slots.shape[0])
    raw = from_storage(snapshot.descriptors[snapshot.slots], snapshot.dtype)
    sets = raw.reshape(n, recipe.descriptors_per_image, recipe.dim)
    references = sets if fitted is None or n == 0 else fitted.references(sets)
    derived = dataclasses.replace(
        snapshot,
        descriptors=np.ascontiguousarray(
            references.reshape(n, references.shape[1] * references.shape[2])
        ),
        slots=np.arange(n, dtype=np.int64),
        dtype="float32",
    )
    return ProcessedView(derived, fitted, references)


def search_sets(
    view: ProcessedView, queries: np.ndarray, k: Any, exclude: Any, reduction: str
) -> Neighbours:
    """The ``k`` best references of each query under similarity-matrix scoring of the
    query's ``(R, D)`` set against each reference's ``(P, D)`` set (``reduction``).

    The scores come from one matrix product per block of queries against all ``N·P``
    reference rows, reduced over the set axes
    (:func:`pyinstance.postprocess.multiscale_scores`); a sum of row (column) maxima is
    divided by the number of rows (columns), so that scores stay in [-1, 1] like cosine
    similarities, which classifiers' confidences and the open-set threshold expect (the
    ranking is the sum's). ``exclude``: as :meth:`InstanceIndex.search`.
    """
    k = check_k(k)
    snapshot = view.snapshot
    n_queries, n_refs = queries.shape[0], view.references.shape[0]
    scores = np.full((n_queries, k), -np.inf, dtype=np.float32)
    positions = np.full((n_queries, k), -1, dtype=np.int64)
    if n_refs and n_queries:
        all_scores = multiscale_scores(queries, view.references, reduction)
        all_scores /= _summed(reduction, queries.shape[1], view.references.shape[1])
        if exclude is not None:
            all_scores[_excluded_positions(snapshot.rows, exclude, n_queries)] = -np.inf
        kk = min(k, n_refs)
        order = np.argsort(-all_scores, axis=1, kind="stable")[:, :kk]
        best = np.take_along_axis(all_scores, order, axis=1)
        scores[:, :kk] = best
        positions[:, :kk] = np.where(np.isfinite(best), order, -1)
    padded = positions < 0
    safe = np.where(padded, 0, positions)
    rows = np.where(padded, -1, snapshot.rows[safe]) if n_refs else positions.copy()
    labels = np.where(padded, -1, snapshot.labels[safe]) if n_refs else positions.copy()
    return Neighbours(scores=scores, rows=rows, labels=labels, instances=snapshot.instances)


def _summed(reduction: str, rows: int, columns: int) -> int:
    """How many maxima ``reduction`` sums: 1 for ``max``, else the rows or the columns."""
    if reduction.startswith("row"):
        return rows
    if reduction.startswith("col"):
        return columns
    return 1


def _excluded_positions(
    live_rows: np.ndarray, exclude: Any, n_queries: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(query, position)`` index arrays of each query's excluded row (-1: none)."""
    rows = np.asarray(exclude)
    if rows.shape != (n_queries,) or not np.issubdtype(rows.dtype, np.integer):
        raise ValueError(
            f"exclude: expected {n_queries} int row ids (one per query, -1: none), got "
            f"shape {rows.shape} dtype {rows.dtype}"
        )
    wanted = np.flatnonzero(rows >= 0)
    found = np.searchsorted(live_rows, rows[wanted]).clip(0, len(live_rows) - 1)
    missing = live_rows[found] != rows[wanted]
    if missing.any():
        raise ValueError(
            f"exclude: row id(s) {rows[wanted][missing][:5].tolist()} are not live rows of the index"
        )
    return wanted, found
