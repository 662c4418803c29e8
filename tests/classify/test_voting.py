"""knn_vote / knn_weighted details that mutation testing found unchecked (nox -s mutation)."""

from __future__ import annotations

import numpy as np
import pytest

from pyinstance.classify import KnnVote, KnnWeighted
from pyinstance.classify.voting import TRANSFORMS
from pyinstance.index.neighbours import Neighbours


def _predict(classifier, scores, labels):
    labels = np.asarray([labels], dtype=np.int64)
    scores = np.asarray([scores], dtype=np.float32)
    rows = np.arange(labels.size).reshape(labels.shape)
    neighbours = Neighbours(scores, rows, labels, tuple(f"i{c}" for c in range(labels.max() + 1)))
    return classifier.predict(neighbours, np.zeros((1, 4), dtype=np.float32))


def test_documented_defaults():
    assert KnnVote().k == 5
    weighted = KnnWeighted()
    assert (weighted.k, weighted.transform) == (5, "x")


@pytest.mark.parametrize("transform", sorted(TRANSFORMS))
def test_options_rebuild_the_same_classifier(transform):
    options = KnnWeighted(k=3, transform=transform).options()
    assert options == {"k": 3, "transform": transform}
    assert KnnWeighted(**options).options() == options


@pytest.mark.parametrize("transform", sorted(TRANSFORMS))
def test_similarities_above_one_count_as_one(transform):
    # Float error or unnormalised descriptors can give s > 1: weighted as 1, so the
    # confidence (the f-mean of the winner's similarities) stays exactly 1.
    over = _predict(KnnWeighted(k=2, transform=transform), [1.25, 0.5], [0, 1])
    exact = _predict(KnnWeighted(k=2, transform=transform), [1.0, 0.5], [0, 1])
    assert over.confidence.tolist() == [1.0]
    np.testing.assert_array_equal(over.ranked_scores, exact.ranked_scores)
