"""``mean_knn`` and ``alpha_mean_knn``: instances scored by mean similarity of their references."""

from __future__ import annotations

from typing import Any

import numpy as np

from pyinstance.classify._checks import check_real
from pyinstance.classify.base import NeighbourClassifier
from pyinstance.classify.grouping import InstanceGroups


class MeanKnn(NeighbourClassifier):
    """Each instance scores the mean similarity of its references among the ``k`` nearest.

    Confidence: the winner's mean similarity, clipped to [0, 1].
    """

    def __init__(self, *, k: int = 5):
        super().__init__(k=k)

    def instance_scores(self, groups: InstanceGroups, scores: np.ndarray) -> np.ndarray:
        total = groups.total(np.nan_to_num(scores, neginf=0.0))
        return total / np.maximum(groups.count, 1)

    def confidence(self, groups: InstanceGroups, key: np.ndarray, winner: np.ndarray) -> np.ndarray:
        return np.take_along_axis(key, winner, 1)[:, 0]


class AlphaMeanKnn(MeanKnn):
    """Mean k-NN over the α-expanded neighbourhood of the nearest reference.

    With unit descriptors the distance of a reference at similarity ``s`` is
    ``d = sqrt(2 - 2s)``. The neighbourhood holds the references among the ``k`` nearest
    within ``α·d₁`` of the query (``d₁``: the nearest reference's distance), i.e. with
    ``s >= 1 - α²(1 - s₁)``. An instance with references inside scores their mean
    similarity; one without scores its best similarity (always lower). ``alpha = 1`` keeps
    only references as near as the nearest (1-NN); a large ``alpha`` takes all ``k``
    (``mean_knn``). Pick ``k`` large enough to hold the neighbourhood.

    Confidence: the winner's mean similarity over the neighbourhood, clipped to [0, 1].
    """

    def __init__(self, *, k: int = 10, alpha: float = 1.25):
        NeighbourClassifier.__init__(self, k=k)
        self.alpha = check_real(alpha, "alpha", low=1.0)

    def instance_scores(self, groups: InstanceGroups, scores: np.ndarray) -> np.ndarray:
        nearest = np.minimum(scores.max(axis=1, keepdims=True), 1.0)
        radius = 1.0 - self.alpha**2 * (1.0 - nearest)
        inside = scores >= np.minimum(radius, groups.of_member(groups.best))
        values = np.nan_to_num(scores, neginf=0.0)
        return groups.total(values, inside) / np.maximum(
            groups.total(np.ones_like(values), inside), 1
        )

    def options(self) -> dict[str, Any]:
        return {"k": self.k, "alpha": self.alpha}
