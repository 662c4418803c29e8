"""The re-ranking step after the classifier: a pairwise verifier re-scores the top candidates.

Two protocols meet here:

- :class:`Reranker`, the pipeline stage :func:`~pyinstance.classify.classify` runs after
  the classifier: ``rerank(queries, neighbours, prediction) -> Prediction``.
- :class:`PairScorer`, what a re-ranker plugin (hook ``pyinstance_register_rerankers``)
  provides: ``k`` and ``score(queries, candidates)``, the probability that the query and
  each candidate reference show the same object.

:class:`Reranking` turns a pair scorer into the stage: it looks the first ``k``
neighbours' descriptors up among the references, scores them, and answers with the
instance of the most probable candidate, that probability being the confidence open-set
rejection thresholds.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

from pyinstance._validate import check_float_array
from pyinstance.classify._checks import check_count
from pyinstance.classify.prediction import UNKNOWN, Prediction
from pyinstance.index.neighbours import Neighbours


@runtime_checkable
class Reranker(Protocol):
    """Re-orders or re-scores a classifier's answers for the same queries.

    ``rerank`` gets the queries' descriptors (Q×D or Q×R×D), their k-NN results and the
    classifier's :class:`Prediction`, and returns a Prediction for the same Q queries
    (confidence in [0, 1]: open-set rejection thresholds it afterwards).
    """

    def rerank(self, queries: Any, neighbours: Neighbours, prediction: Prediction) -> Prediction:
        """The re-ranked prediction."""
        ...


@runtime_checkable
class PairScorer(Protocol):
    """What a re-ranker plugin builds (see :func:`pyinstance.testing.check_reranker`).

    Attributes:
        k: candidates (first neighbours) it re-scores per query, >= 1.
        recipe: the index recipe (a dict, :meth:`pyinstance.index.Recipe.to_dict`) whose
            descriptors it was trained on, or None when it accepts any.
    """

    k: int
    recipe: dict[str, Any] | None

    def score(self, queries: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """``(Q, k)`` probabilities in [0, 1] that query ``q`` (``queries[q]``: R×D, one
        descriptor per window) and candidate ``candidates[q, i]`` (D) show the same object."""
        ...


class Reranking:
    """The :class:`Reranker` stage of a :class:`PairScorer` over a collection.

    Args:
        scorer: the pair scorer (a re-ranker plugin's object).
        references: the collection's descriptors, N×D (the space queries are searched in).
        rows: the row id of each reference (what ``Neighbours.rows`` holds); default
            ``0..N-1``.

    Per query, the first ``min(scorer.k, neighbours.k)`` real neighbours are scored; each
    instance among them scores its best candidate's probability; the instances are ranked
    by it (the classifier's other ranked instances follow with score 0), the best one is
    the answer and its probability the confidence. A query without any real neighbour is
    unknown with confidence 0.
    """

    def __init__(self, scorer: Any, references: Any, rows: Any = None):
        if not isinstance(scorer, PairScorer):
            raise TypeError(
                f"reranker: expected an object with k, recipe and score() (a re-ranker "
                f"plugin's), got {type(scorer).__name__}"
            )
        self.k = check_count(scorer.k, "reranker.k", minimum=1)
        self.scorer = scorer
        self.references = check_float_array(references, "references", "(N, D)", ndim=2)
        if self.references.shape[0] == 0:
            raise ValueError("references: empty collection; nothing to re-rank against")
        if rows is None:
            rows = np.arange(self.references.shape[0])
        rows = np.asarray(rows)
        if rows.dtype.kind not in "iu" or rows.shape != (self.references.shape[0],):
            raise ValueError(
                f"rows: expected {self.references.shape[0]} integer row ids, one per reference, "
                f"got {rows.dtype} {rows.shape}"
            )
        self._order = np.argsort(rows, kind="stable")
        self._sorted = rows.astype(np.int64)[self._order]
        if np.unique(self._sorted).size != self._sorted.size:
            raise ValueError("rows: row ids must be unique")

    def __repr__(self) -> str:
        return f"Reranking({self.scorer!r}, {self.references.shape[0]} references)"

    def probabilities(self, queries: Any, neighbours: Neighbours) -> tuple[np.ndarray, np.ndarray]:
        """``(Q, m)`` probabilities of the first ``m = min(k, neighbours.k)`` neighbours
        (0 where padded) and the ``(Q, m)`` mask of real ones."""
        if not isinstance(neighbours, Neighbours):
            raise TypeError(
                f"neighbours: expected a pyinstance.index.Neighbours, got {type(neighbours).__name__}"
            )
        windows = check_float_array(
            queries,
            "queries",
            "(Q, D) or (Q, R, D)",
            ndim=(2, 3),
            dim=self.references.shape[1],
        )
        if windows.ndim == 2:
            windows = windows[:, None, :]
        if windows.shape[0] != len(neighbours):
            raise ValueError(
                f"queries: expected {len(neighbours)} rows, one per neighbours row, got "
                f"{windows.shape[0]}"
            )
        m = min(self.k, neighbours.k)
        rows = np.asarray(neighbours.rows)[:, :m].astype(np.int64)
        real = rows >= 0
        positions = np.searchsorted(self._sorted, rows)
        found = real & (positions < self._sorted.size)
        found[found] = self._sorted[positions[found]] == rows[found]
        if not np.array_equal(found, real):
            missing = rows[real & ~found][:5].tolist()
            raise ValueError(f"neighbours.rows: row ids {missing} are not among the references")
        probabilities = np.zeros(rows.shape, np.float32)
        width = int(real.sum(axis=1).max()) if rows.size else 0
        if width == 0:
            return probabilities, real
        # Padded slots (rows with fewer real neighbours) repeat the row's first candidate;
        # their probabilities are discarded.
        filled = np.where(real, positions, positions[:, :1])[:, :width]
        has_any = real[:, 0]
        candidates = self.references[self._order[np.where(has_any[:, None], filled, 0)]]
        scored = _checked_scores(self.scorer.score(windows, candidates), rows.shape[0], width)
        probabilities[:, :width] = np.where(real[:, :width] & has_any[:, None], scored, 0.0)
        return probabilities, real

    def rerank(self, queries: Any, neighbours: Neighbours, prediction: Prediction) -> Prediction:
        """The prediction of the scored candidates (see the class doc)."""
        if not isinstance(prediction, Prediction) or len(prediction) != len(neighbours):
            raise ValueError(
                f"prediction: expected a Prediction for the {len(neighbours)} queries, got "
                f"{type(prediction).__name__}"
            )
        probabilities, real = self.probabilities(queries, neighbours)
        codes = np.asarray(neighbours.labels)[:, : probabilities.shape[1]].astype(np.int64)
        labels, confidence, ranked, scores = [], [], [], []
        for q in range(len(neighbours)):
            best: dict[int, float] = {}
            for code, p in zip(codes[q][real[q]], probabilities[q][real[q]], strict=True):
                best[int(code)] = max(best.get(int(code), 0.0), float(p))
            order = sorted(best, key=lambda code: -best[code])  # stable: neighbour order on ties
            rest = [int(c) for c in prediction.ranked[q] if c >= 0 and int(c) not in best]
            ranked.append(order + rest)
            scores.append([best[c] for c in order] + [0.0] * len(rest))
            labels.append(order[0] if order else UNKNOWN)
            confidence.append(best[order[0]] if order else 0.0)
        width = max([1, *(len(r) for r in ranked)])  # no queries: one padded column
        ranked_array = np.full((len(ranked), width), UNKNOWN, np.int64)
        scores_array = np.full((len(ranked), width), -np.inf, np.float32)
        for q, (r, s) in enumerate(zip(ranked, scores, strict=True)):
            ranked_array[q, : len(r)] = r
            scores_array[q, : len(s)] = s
        return Prediction(np.asarray(labels, np.int64), confidence, ranked_array, scores_array)

    def reorder(self, queries: Any, neighbours: Neighbours) -> Neighbours:
        """``neighbours`` with the first ``min(k, neighbours.k)`` real ones sorted by
        probability (ties keep their order); the others stay where they are."""
        probabilities, real = self.probabilities(queries, neighbours)
        m = probabilities.shape[1]
        key = np.where(real, -probabilities, np.inf)
        order = np.argsort(key, axis=1, kind="stable")
        order = np.concatenate(
            [
                order,
                np.broadcast_to(np.arange(m, neighbours.k), (len(neighbours), neighbours.k - m)),
            ],
            axis=1,
        )

        def take(array: np.ndarray) -> np.ndarray:
            return np.take_along_axis(np.asarray(array), order, axis=1)

        return Neighbours(
            take(neighbours.scores),
            take(neighbours.rows),
            take(neighbours.labels),
            neighbours.instances,
        )


def _checked_scores(scores: Any, queries: int, width: int) -> np.ndarray:
    array = np.asarray(scores.detach().cpu() if hasattr(scores, "detach") else scores)
    if array.shape != (queries, width) or array.dtype.kind != "f":
        raise ValueError(
            f"reranker.score(): expected ({queries}, {width}) float probabilities, got "
            f"{array.dtype} {array.shape}"
        )
    if not bool(((array >= 0) & (array <= 1)).all()):  # NaN fails too
        raise ValueError("reranker.score(): expected probabilities in [0, 1] (got NaN or beyond)")
    return array.astype(np.float32)
