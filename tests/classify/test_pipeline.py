"""classify(): classifier, then an optional re-ranker, then open-set rejection."""

from __future__ import annotations

import numpy as np
import pytest

from pyinstance.classify import KnnVote, Prediction, Reranker, classify
from pyinstance.index.neighbours import Neighbours


class ExactRescorer:
    """A real re-ranker: rescores the ranked instances by the best cosine similarity between
    the query and that instance's references (a verification against stored descriptors)."""

    def __init__(self, references: np.ndarray, labels: np.ndarray):
        self.references = references
        self.labels = labels

    def rerank(self, queries, neighbours, prediction):
        similarity = np.asarray(queries) @ self.references.T  # Q×N
        instance_best = np.full((len(prediction), self.labels.max() + 1), -np.inf)
        for code in range(self.labels.max() + 1):
            instance_best[:, code] = similarity[:, self.labels == code].max(axis=1)
        scores = np.where(
            prediction.ranked >= 0,
            np.take_along_axis(instance_best, np.maximum(prediction.ranked, 0), 1),
            -np.inf,
        )
        order = np.argsort(-scores, axis=1, kind="stable")
        ranked = np.take_along_axis(prediction.ranked, order, 1)
        scores = np.take_along_axis(scores, order, 1)
        confidence = np.clip(np.nan_to_num(scores[:, 0], neginf=0), 0, 1)
        return Prediction(ranked[:, 0], confidence, ranked, scores)


def _case():
    references = np.array([[1, 0, 0], [0.8, 0.6, 0], [0, 1, 0], [0, 0.6, 0.8]], np.float32)
    labels = np.array([0, 1, 1, 2])
    queries = np.array([[0.96, 0.28, 0], [0, 0.28, 0.96]], np.float32)
    similarity = queries @ references.T
    index = np.argsort(-similarity, axis=1)[:, :3]
    neighbours = Neighbours(
        np.take_along_axis(similarity, index, 1), index, labels[index], ("a", "b", "c")
    )
    return references, labels, queries, neighbours


def test_without_options_it_is_the_classifier():
    _, _, queries, neighbours = _case()
    classifier = KnnVote(k=3)
    expected = classifier.predict(neighbours, queries)
    got = classify(neighbours, queries, classifier)
    assert np.array_equal(got.labels, expected.labels)


def test_reranker_runs_before_the_threshold():
    references, labels, queries, neighbours = _case()
    reranker = ExactRescorer(references, labels)
    assert isinstance(reranker, Reranker)
    voted = classify(neighbours, queries, KnnVote(k=3))
    assert voted.labels.tolist() == [1, 1]  # two votes for instance 1 each time
    reranked = classify(neighbours, queries, KnnVote(k=3), reranker=reranker)
    assert reranked.labels.tolist() == [0, 2]  # the closest references win
    assert reranked.confidence.tolist() == pytest.approx([0.96, 0.936])
    rejected = classify(neighbours, queries, KnnVote(k=3), threshold=0.97, reranker=reranker)
    assert rejected.labels.tolist() == [-1, -1]


def test_bad_rerankers_are_refused():
    _, _, queries, neighbours = _case()

    class Sloppy:
        def rerank(self, queries, neighbours, prediction):
            return prediction.labels

    with pytest.raises(TypeError, match="reranker: expected an object with a rerank"):
        classify(neighbours, queries, KnnVote(k=3), reranker=object())
    with pytest.raises(TypeError, match="reranker Sloppy: rerank\\(\\) must return a Prediction"):
        classify(neighbours, queries, KnnVote(k=3), reranker=Sloppy())
