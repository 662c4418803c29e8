"""classify hands the re-ranker the queries, the k-NN results and the prediction."""

from __future__ import annotations

import numpy as np

from pyinstance.classify import KnnVote, classify
from pyinstance.index.neighbours import Neighbours


class _Recorder:
    """A re-ranker that keeps the prediction and records what it was given."""

    def __init__(self) -> None:
        self.seen: tuple = ()

    def rerank(self, queries, neighbours, prediction):  # noqa: ANN001, ANN201
        self.seen = (queries, neighbours, prediction)
        return prediction


def test_the_reranker_gets_the_neighbours_it_reranks() -> None:
    scores = np.array([[0.9, 0.8]], np.float32)
    neighbours = Neighbours(scores, np.array([[0, 1]]), np.array([[0, 1]]), ("a", "b"))
    queries = np.zeros((1, 3), np.float32)
    recorder = _Recorder()
    prediction = classify(neighbours, queries, KnnVote(k=2), reranker=recorder)
    assert recorder.seen[0] is queries and recorder.seen[1] is neighbours
    assert recorder.seen[2] is prediction
