"""Open-set rejection: below a confidence threshold the answer is unknown.

:func:`fit_threshold` estimates, from the collection itself, the threshold that accepts a
target fraction of unknown queries (the false-accept rate, FAR):

- known queries: each reference of an instance with two or more references, held out and
  searched against the rest (leave-one-out, in folds holding at most one reference per
  instance, the classifier refitted without them); augmented views of references
  (``views``), searched against the whole collection;
- unknown queries: every reference and view searched with its whole instance removed
  (instances are split into ``instance_folds`` groups; a group is removed at once and the
  classifier refitted without it), and distractor descriptors (photos of things not in the
  collection) searched against the whole collection.

The threshold is the smallest that accepts at most ``target_far`` of the unknown queries;
the report gives the FAR and false-reject rate (FRR) it reaches on these queries.

A post-processing learnt from the references (a PCA-whitening fitted on the collection) is
refitted in every search on the references searched (``refit``): a held-out reference or
view must be as foreign to the state as a real query is. Fitted with them, a whitening of
N references in N - 1 directions maps them onto a regular simplex (cosine -1/(N-1) between
any two), so every held-out instance would look unlike the rest and the threshold would
land far below where real unknown photos score.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from pyinstance._validate import check_float_array
from pyinstance.classify._checks import check_collection, check_count, check_real
from pyinstance.classify.prediction import UNKNOWN, Prediction
from pyinstance.classify.rerank import Reranking
from pyinstance.index.neighbours import Neighbours
from pyinstance.ops import knn_dot

#: ``refit(keep)``: the learnt post-processing fitted on the references in the boolean mask
#: ``keep`` (over the rows given to :func:`fit_threshold`) only; returns those references
#: post-processed (K×D_out) and the function post-processing raw query rows with that state.
PostProcessingFit = Callable[[np.ndarray], tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]]


def reject(prediction: Prediction, threshold: float) -> Prediction:
    """``prediction`` with every answer whose confidence is below ``threshold`` unknown (-1).

    Confidences and ranked lists are kept.
    """
    if not isinstance(prediction, Prediction):
        raise TypeError(
            f"prediction: expected a pyinstance.classify.Prediction, got {type(prediction).__name__}"
        )
    threshold = check_real(threshold, "threshold", low=0.0, high=1.0)
    labels = np.where(prediction.confidence >= threshold, prediction.labels, UNKNOWN)
    return Prediction(labels, prediction.confidence, prediction.ranked, prediction.ranked_scores)


@dataclass(frozen=True)
class ThresholdFit:
    """A fitted rejection threshold and how it does on the queries it was fitted on.

    Attributes:
        threshold: accept an answer when its confidence is ``>= threshold``.
        target_far: the false-accept rate asked for.
        far: fraction of unknown queries accepted at ``threshold``.
        frr: fraction of known queries rejected at ``threshold`` (None without any).
        misidentified: known queries accepted with the wrong instance.
        known: known queries by source (``leave_one_out``, ``views``).
        unknown: unknown queries by source (``leave_instance_out``, ``distractors``).
    """

    threshold: float
    target_far: float
    far: float
    frr: float | None
    misidentified: int
    known: dict[str, int] = field(default_factory=dict)
    unknown: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy (what an index stores)."""
        return asdict(self)


def threshold_for_far(unknown_confidence: np.ndarray, target_far: float) -> float:
    """The smallest threshold in [0, 1] accepting at most ``target_far`` of ``unknown_confidence``."""
    scores = np.sort(np.asarray(unknown_confidence, dtype=np.float32))[::-1]
    allowed = math.floor(target_far * scores.size + 1e-9)
    if allowed >= scores.size:
        return 0.0
    above = np.nextafter(scores[allowed], np.float32(np.inf), dtype=np.float32)
    return float(min(above, np.float32(1.0)))


class _Collection:
    """The references (float32, ignored rows dropped) and the searches over subsets of them
    (with ``refit``, the references are raw and post-processed per subset)."""

    def __init__(
        self, descriptors: Any, labels: Any, threads: int | None, refit: PostProcessingFit | None
    ):
        array, codes = check_collection(descriptors, labels)
        keep = codes >= 0
        self.size = codes.size
        self.rows = np.flatnonzero(keep)
        self.descriptors = np.ascontiguousarray(np.asarray(array)[keep], dtype=np.float32)
        self.codes = codes[keep]
        self.instances = tuple(str(code) for code in range(int(self.codes.max()) + 1))
        self.threads = threads
        self.refit = refit

    def searched(self, subset: np.ndarray) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]:
        """The references in ``subset`` (a mask) in the space searched, and the function
        taking queries there."""
        if self.refit is None:
            return self.descriptors[subset], lambda queries: queries
        keep = np.zeros(self.size, dtype=bool)
        keep[self.rows[subset]] = True
        references, postprocess = self.refit(keep)
        references = check_float_array(references, "refit references", "(M, D)", ndim=2)
        return references, lambda queries: check_float_array(
            postprocess(queries), "refit queries", "(M, D)", ndim=2, dim=references.shape[1]
        )

    def classify(
        self,
        classifier: Any,
        subset: np.ndarray,
        queries: np.ndarray,
        reranking: Reranking | None = None,
    ) -> Prediction:
        """Fit ``classifier`` on the references in ``subset`` (a mask) and classify ``queries``
        (then re-rank them, with ``reranking`` over the whole collection)."""
        refs, postprocess = self.searched(subset)
        queries = postprocess(queries)
        codes, rows = self.codes[subset], self.rows[subset]
        classifier.fit(refs, codes)
        k = max(int(classifier.k), 1, reranking.k if reranking is not None else 0)
        found = min(k, refs.shape[0])
        scores, index = knn_dot(queries, refs, found, threads=self.threads)
        pad = ((0, 0), (0, k - found))
        neighbours = Neighbours(
            np.pad(scores, pad, constant_values=-np.inf),
            np.pad(rows[index], pad, constant_values=-1),
            np.pad(codes[index], pad, constant_values=-1),
            self.instances,
        )
        prediction = classifier.predict(neighbours, queries)
        if reranking is not None:
            prediction = reranking.rerank(queries, neighbours, prediction)
        return prediction


def _within_instance_rank(codes: np.ndarray) -> np.ndarray:
    """For each reference, how many references of its instance come before it."""
    order = np.argsort(codes, kind="stable")
    starts = np.searchsorted(codes[order], codes[order], side="left")
    rank = np.empty_like(codes)
    rank[order] = np.arange(codes.size) - starts
    return rank


def fit_threshold(
    classifier: Any,
    descriptors: Any,
    labels: Any,
    *,
    target_far: float = 0.01,
    views: Any = None,
    view_labels: Any = None,
    distractors: Any = None,
    instance_folds: int | None = 20,
    max_held_out: int = 5,
    threads: int | None = None,
    reranker: Any = None,
    refit: PostProcessingFit | None = None,
) -> ThresholdFit:
    """Fit a rejection threshold for ``classifier`` on the collection (see the module doc).

    Args:
        classifier: a classifier (``k``, ``fit``, ``predict``); it is refitted on subsets
            and, on return, fitted on the whole collection.
        descriptors, labels: the collection, N×D and N int64 instance codes (-1: ignore).
        target_far: the fraction of unknown queries to accept, in [0, 1).
        views, view_labels: descriptors of augmented views of references (M×D, e.g. of
            :func:`pyinstance.classify.augment_views`) and their instance codes.
        distractors: descriptors of photos of nothing in the collection (P×D).
        instance_folds: groups the instances are split into for the unknown queries (each
            query then also misses the other instances of its group, a small optimism);
            None: one group per instance (exact, one search per instance).
        max_held_out: references held out per instance for the known queries, at most.
        threads: CPU threads for the searches (default: all cores).
        reranker: a pair scorer (a re-ranker plugin's object) re-ranking every answer: the
            threshold is then fitted on its confidence, as identification with it uses.
        refit: the post-processing learnt from the references (see
            :data:`PostProcessingFit`); ``descriptors``, ``views`` and ``distractors`` are
            then raw and each search refits it on the references it searches. None: they
            are already post-processed (nothing is learnt from the references).
    """
    target_far = check_real(target_far, "target_far", low=0.0, high=1.0)
    if target_far >= 1.0:
        raise ValueError(f"target_far: expected a number in [0, 1), got {target_far!r}")
    if instance_folds is not None:
        instance_folds = check_count(instance_folds, "instance_folds", minimum=2)
    max_held_out = check_count(max_held_out, "max_held_out", minimum=1)
    if refit is not None and not callable(refit):
        raise TypeError(f"refit: expected a callable or None, got {type(refit).__name__}")
    collection = _Collection(descriptors, labels, threads, refit)
    everything = np.ones(collection.codes.size, dtype=bool)
    reranking = (
        None
        if reranker is None
        else Reranking(reranker, collection.searched(everything)[0], collection.rows)
    )
    codes = collection.codes
    dim = None if refit is not None else collection.descriptors.shape[1]
    counts = np.bincount(codes)
    if (views is None) != (view_labels is None):
        raise ValueError("views and view_labels: give both or neither")
    view_rows = (
        np.zeros((0, dim or 0), np.float32)
        if views is None
        else check_float_array(views, "views", "(M, D)", ndim=2, dim=dim)
    )
    view_codes = np.zeros(0, np.int64)
    if view_labels is not None:
        view_codes = np.asarray(view_labels)
        if view_codes.dtype.kind not in "iu" or view_codes.shape != (view_rows.shape[0],):
            raise ValueError(
                f"view_labels: expected {view_rows.shape[0]} int64 instance codes, one per view"
            )
        view_codes = view_codes.astype(np.int64)
        if bool(((view_codes < 0) | (view_codes >= counts.size)).any()) or not bool(
            (counts[view_codes] > 0).all()
        ):
            raise ValueError("view_labels: every view must belong to an instance of the collection")
    distractor_rows = (
        np.zeros((0, dim or 0), np.float32)
        if distractors is None
        else check_float_array(distractors, "distractors", "(M, D)", ndim=2, dim=dim)
    )

    known_confidence, known_right = [], []
    known = {"leave_one_out": 0, "views": 0}
    unknown_confidence = []
    unknown = {"leave_instance_out": 0, "distractors": 0}

    # Known: leave one reference per instance out, in folds.
    rank = _within_instance_rank(codes)
    several = counts[codes] >= 2
    for fold in range(min(max_held_out, int(counts.max()))):
        held = several & (rank == fold)
        if not held.any():
            break
        prediction = collection.classify(classifier, ~held, collection.descriptors[held], reranking)
        known_confidence.append(prediction.confidence)
        known_right.append(prediction.labels == codes[held])
        known["leave_one_out"] += int(held.sum())

    # Unknown: every reference and view with its whole instance removed.
    present = np.flatnonzero(counts)
    if present.size >= 2:
        folds = present.size if instance_folds is None else min(instance_folds, present.size)
        group = np.full(counts.size, -1)
        group[np.random.default_rng(0).permutation(present)] = np.arange(present.size) % folds
        for fold in range(folds):
            removed = group[codes] == fold
            queries = collection.descriptors[removed]
            fold_views = view_rows[group[view_codes] == fold]
            if fold_views.shape[0]:
                queries = np.concatenate([queries, fold_views])
            prediction = collection.classify(classifier, ~removed, queries, reranking)
            unknown_confidence.append(prediction.confidence)
            unknown["leave_instance_out"] += queries.shape[0]

    # Against the whole collection: views are known, distractors unknown.
    if view_rows.shape[0]:
        prediction = collection.classify(classifier, everything, view_rows, reranking)
        known_confidence.append(prediction.confidence)
        known_right.append(prediction.labels == view_codes)
        known["views"] = view_rows.shape[0]
    if distractor_rows.shape[0]:
        prediction = collection.classify(classifier, everything, distractor_rows, reranking)
        unknown_confidence.append(prediction.confidence)
        unknown["distractors"] = distractor_rows.shape[0]
    classifier.fit(collection.searched(everything)[0], codes)

    if not unknown_confidence:
        raise ValueError(
            "cannot fit a threshold: the collection has one instance and no distractors were "
            "given, so there is no unknown query"
        )
    unknown_scores = np.concatenate(unknown_confidence)
    threshold = threshold_for_far(unknown_scores, target_far)
    far = float((unknown_scores >= threshold).mean())
    frr, misidentified = None, 0
    if known_confidence:
        known_scores = np.concatenate(known_confidence)
        right = np.concatenate(known_right)
        accepted = known_scores >= threshold
        frr = float((~accepted).mean())
        misidentified = int((accepted & ~right).sum())
    return ThresholdFit(threshold, target_far, far, frr, misidentified, known, unknown)
