"""``nn``: the instance of the nearest reference."""

from __future__ import annotations

import numpy as np

from pyinstance.classify.base import NeighbourClassifier
from pyinstance.classify.grouping import InstanceGroups


class NearestNeighbour(NeighbourClassifier):
    """1-NN: the nearest reference's instance wins.

    ``k`` only sets how many neighbours are read to rank further instances (each by its
    best similarity); the decision is the same for every ``k``.

    Confidence: the nearest reference's similarity, clipped to [0, 1].
    """

    def __init__(self, *, k: int = 1):
        super().__init__(k=k)

    def instance_scores(self, groups: InstanceGroups, scores: np.ndarray) -> np.ndarray:
        return groups.best
