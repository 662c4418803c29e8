"""The shared frame of classifiers that decide from each query's k nearest references."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from pyinstance.classify._checks import (
    check_collection,
    check_count,
    check_neighbours,
    check_queries,
)
from pyinstance.classify.grouping import InstanceGroups, group_by_instance, rank_instances
from pyinstance.classify.prediction import Prediction
from pyinstance.index.neighbours import Neighbours


class NeighbourClassifier(ABC):
    """Ranks the instances among the first ``k`` neighbours by a per-instance score.

    ``fit`` keeps nothing but the descriptor dimension (to check queries against);
    ``predict`` works without it. Subclasses define :meth:`instance_scores` (the ranking
    key per instance slot) and :meth:`confidence` (of the winning slot, in [0, 1]).
    """

    def __init__(self, *, k: int):
        self.k = check_count(k, "k", minimum=1)
        self.dim: int | None = None

    def fit(self, descriptors: Any, labels: Any) -> NeighbourClassifier:
        """Validate the collection (N×D floats, N int64 codes) and remember D."""
        array, _ = check_collection(descriptors, labels)
        self.dim = int(array.shape[1])
        return self

    def predict(self, neighbours: Neighbours, queries: Any) -> Prediction:
        """Classify each query from the first ``k`` columns of ``neighbours``."""
        scores, labels = check_neighbours(neighbours, self.k)
        check_queries(queries, len(neighbours), self.dim)
        scores = np.where(labels >= 0, scores, -np.inf)
        groups = group_by_instance(scores, labels)
        key = self.instance_scores(groups, scores)
        order, ranked = rank_instances(groups, key)
        ranked_scores = np.take_along_axis(np.where(groups.label >= 0, key, -np.inf), order, 1)
        winner = order[:, :1]
        confidence = np.where(ranked[:, 0] >= 0, self.confidence(groups, key, winner), 0.0)
        return Prediction(ranked[:, 0], np.clip(confidence, 0.0, 1.0), ranked, ranked_scores)

    @abstractmethod
    def instance_scores(self, groups: InstanceGroups, scores: np.ndarray) -> np.ndarray:
        """Q×k ranking key per instance slot (higher is better)."""

    def confidence(self, groups: InstanceGroups, key: np.ndarray, winner: np.ndarray) -> np.ndarray:
        """Q confidences of the winning slots ``winner`` (Q×1), before clipping to [0, 1].

        By default the similarity of the winner's best neighbour.
        """
        return np.take_along_axis(groups.best, winner, axis=1)[:, 0]

    def __repr__(self) -> str:
        options = ", ".join(f"{k}={v!r}" for k, v in self.options().items())
        return f"{type(self).__name__}({options})"

    def options(self) -> dict[str, Any]:
        """The constructor arguments (for repr and for storing a recipe)."""
        return {"k": self.k}
