"""The re-ranking step after the classifier (e.g. a pairwise verification model)."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from pyinstance.classify.prediction import Prediction
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
