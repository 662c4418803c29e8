"""``knn_vote`` and ``knn_weighted``: instances scored by (weighted) votes of the k nearest."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from pyinstance.classify.base import NeighbourClassifier
from pyinstance.classify.grouping import InstanceGroups

#: Similarity transforms f of ``knn_weighted`` and their inverses, on similarities in [0, 1].
TRANSFORMS: dict[
    str, tuple[Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray], np.ndarray]]
] = {
    "x": (lambda x: x, lambda y: y),
    "x^2": (np.square, np.sqrt),
    "sqrt": (np.sqrt, np.square),
    "log": (lambda x: np.log(x + np.e), lambda y: np.exp(y) - np.e),
}


class KnnVote(NeighbourClassifier):
    """Majority vote of the ``k`` nearest references; a tie goes to the instance whose best
    reference ranks first.

    Confidence: the similarity of the winner's best reference, clipped to [0, 1] (a vote
    share alone cannot tell an unknown query from a known one).
    """

    def __init__(self, *, k: int = 5):
        super().__init__(k=k)

    def instance_scores(self, groups: InstanceGroups, scores: np.ndarray) -> np.ndarray:
        return groups.count.astype(np.float64)


class KnnWeighted(NeighbourClassifier):
    """Each instance scores ``sum f(s)`` over its references among the ``k`` nearest.

    ``transform`` names f: ``"x"``, ``"x^2"``, ``"sqrt"`` (√x) or ``"log"`` (ln(x + e));
    similarities are clipped to [0, 1] first (a negative similarity is no evidence).

    Confidence: the f-mean of the winner's similarities, ``f⁻¹(score / members)``: for
    ``"x"`` their mean, for ``"x^2"`` their root mean square, always in [0, 1].
    """

    def __init__(self, *, k: int = 5, transform: str = "x"):
        super().__init__(k=k)
        if transform not in TRANSFORMS:
            raise ValueError(
                f"transform: expected one of {', '.join(map(repr, TRANSFORMS))}, got {transform!r}"
            )
        self.transform = transform
        self._forward, self._inverse = TRANSFORMS[transform]

    def _weights(self, scores: np.ndarray) -> np.ndarray:
        return self._forward(np.clip(np.nan_to_num(scores, neginf=0.0), 0.0, 1.0))

    def instance_scores(self, groups: InstanceGroups, scores: np.ndarray) -> np.ndarray:
        return groups.total(self._weights(scores))

    def confidence(self, groups: InstanceGroups, key: np.ndarray, winner: np.ndarray) -> np.ndarray:
        total = np.take_along_axis(key, winner, 1)[:, 0]
        members = np.maximum(np.take_along_axis(groups.count, winner, 1)[:, 0], 1)
        return self._inverse(total / members)

    def options(self) -> dict[str, Any]:
        return {"k": self.k, "transform": self.transform}
