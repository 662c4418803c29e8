"""The classification step of identification: classifier, re-ranking, open-set rejection."""

from __future__ import annotations

from typing import Any

from pyinstance.classify.openset import reject
from pyinstance.classify.prediction import Prediction
from pyinstance.classify.rerank import Reranker
from pyinstance.index.neighbours import Neighbours


def classify(
    neighbours: Neighbours,
    queries: Any,
    classifier: Any,
    threshold: float | None = None,
    reranker: Reranker | None = None,
) -> Prediction:
    """Classify k-NN results: ``classifier.predict``, then ``reranker.rerank`` (if any), then
    :func:`reject` below ``threshold`` (if given)."""
    prediction = classifier.predict(neighbours, queries)
    if reranker is not None:
        if not isinstance(reranker, Reranker):
            raise TypeError(
                f"reranker: expected an object with a rerank() method, got {type(reranker).__name__}"
            )
        reranked = reranker.rerank(queries, neighbours, prediction)
        if not isinstance(reranked, Prediction) or len(reranked) != len(prediction):
            raise TypeError(
                f"reranker {type(reranker).__name__}: rerank() must return a Prediction for the "
                f"{len(prediction)} queries, got {type(reranked).__name__}"
            )
        prediction = reranked
    if threshold is not None:
        prediction = reject(prediction, threshold)
    return prediction
