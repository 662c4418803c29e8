"""check_classifier accepts classifiers honouring the contract and names each broken part."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from pyinstance import testing
from pyinstance.classify import Prediction
from pyinstance.testing import ContractError


class Centroids:
    """A third-party style classifier: nearest class centroid, reads no neighbours."""

    k = 0

    def fit(self, descriptors, labels):
        descriptors = torch.as_tensor(descriptors)
        labels = torch.as_tensor(labels)
        if labels.shape != (descriptors.shape[0],):
            raise ValueError("labels: one per descriptor")
        if not torch.isfinite(descriptors).all():
            raise ValueError("descriptors: NaN")
        self.centres = torch.stack(
            [descriptors[labels == c].mean(0) for c in range(int(labels.max()) + 1)]
        )
        return self

    def predict(self, neighbours, queries):
        queries = torch.as_tensor(queries)
        if queries.shape[-1] != self.centres.shape[1]:
            raise ValueError("queries: wrong dimension")
        similarity = queries @ torch.nn.functional.normalize(self.centres, dim=1).T
        if similarity.dim() == 3:
            similarity = similarity.amax(dim=1)
        scores, ranked = similarity.sort(dim=1, descending=True)
        return Prediction(ranked[:, 0], scores[:, 0].clamp(0, 1), ranked, scores)


class FirstNeighbour:
    """Reads one neighbour: its instance, its similarity as confidence."""

    k = 1

    def fit(self, descriptors, labels):
        Centroids.fit(self, descriptors, labels)
        self.dim = self.centres.shape[1]
        return self

    def predict(self, neighbours, queries):
        if torch.as_tensor(queries).shape[-1] != self.dim:
            raise ValueError("queries: wrong dimension")
        labels = neighbours.labels[:, :1]
        scores = np.where(labels >= 0, neighbours.scores[:, :1], -np.inf)
        confidence = np.clip(np.nan_to_num(scores[:, 0], neginf=0), 0, 1)
        return Prediction(labels[:, 0], confidence, labels, scores)


def _altered(base, change):
    class Altered(base):
        def predict(self, neighbours, queries):
            return change(super().predict(neighbours, queries), neighbours, queries)

    return Altered()


def _replace(prediction, **fields):
    values = {f.name: np.array(getattr(prediction, f.name)) for f in dataclasses.fields(prediction)}
    values.update(fields)
    return object.__new__(Prediction), values


def _unchecked(prediction, **fields):
    """A Prediction bypassing its own validation (what a careless plugin could hand back)."""
    made, values = _replace(prediction, **fields)
    for name, value in values.items():
        object.__setattr__(made, name, value)
    return made


@pytest.mark.parametrize("good", [Centroids, FirstNeighbour])
def test_contract_abiding_classifiers_pass(good):
    testing.check_classifier(good())


@pytest.mark.parametrize("k", [None, True, -1, 1.0])
def test_k_must_be_an_int_at_least_zero(k):
    broken = Centroids()
    broken.k = k
    with pytest.raises(ContractError, match="int attribute k >= 0"):
        testing.check_classifier(broken)


def test_missing_predict_fails():
    class NoPredict:
        k = 0

        def fit(self, descriptors, labels):
            return self

    with pytest.raises(ContractError, match="must have a predict"):
        testing.check_classifier(NoPredict())


def test_fit_without_validation_fails():
    class Trusting(Centroids):
        def fit(self, descriptors, labels):
            return super().fit(torch.nan_to_num(torch.as_tensor(descriptors)), labels)

    with pytest.raises(ContractError, match="fit\\(\\) accepted NaN descriptors"):
        testing.check_classifier(Trusting())


def test_fit_accepting_short_labels_fails():
    class Lax(Centroids):
        def fit(self, descriptors, labels):
            return super().fit(descriptors[: len(labels)], labels)

    with pytest.raises(ContractError, match="fewer labels than descriptors"):
        testing.check_classifier(Lax())


def test_fit_not_returning_self_fails():
    class Forgetful(Centroids):
        def fit(self, descriptors, labels):
            super().fit(descriptors, labels)

    with pytest.raises(ContractError, match="must return the classifier itself"):
        testing.check_classifier(Forgetful())


def test_predict_returning_a_tuple_fails():
    broken = _altered(Centroids, lambda p, n, q: (p.labels, p.confidence))
    with pytest.raises(ContractError, match="must return a pyinstance.classify.Prediction"):
        testing.check_classifier(broken)


def test_confidence_out_of_range_fails():
    broken = _altered(
        Centroids,
        lambda p, n, q: Prediction(p.labels, p.confidence * 2 + 0.5, p.ranked, p.ranked_scores),
    )
    with pytest.raises(
        ContractError, match=r"raised on valid input.*confidence: expected values in \[0, 1\]"
    ):
        testing.check_classifier(broken)


def test_missing_answers_fail():
    def drop_last(p, n, q):
        return Prediction(p.labels[:-1], p.confidence[:-1], p.ranked[:-1], p.ranked_scores[:-1])

    with pytest.raises(ContractError, match="must answer each of the 12 queries, got 11"):
        testing.check_classifier(_altered(Centroids, drop_last))


def test_unknown_instance_codes_fail():
    broken = _altered(
        Centroids, lambda p, n, q: _unchecked(p, ranked=p.ranked + 1, labels=p.labels + 1)
    )
    with pytest.raises(ContractError, match="codes >= 6"):
        testing.check_classifier(broken)


def test_padding_before_instances_fails():
    def pad_first(p, n, q):
        ranked = np.array(p.ranked)
        ranked[:, 0] = -1
        return _unchecked(p, ranked=ranked)

    with pytest.raises(ContractError, match="padding must come after"):
        testing.check_classifier(_altered(Centroids, pad_first))


def test_finite_score_on_padding_fails():
    def pad_last(p, n, q):
        ranked = np.array(p.ranked)
        ranked[:, -1] = -1
        return _unchecked(p, ranked=ranked)

    with pytest.raises(ContractError, match="-inf where padded"):
        testing.check_classifier(_altered(Centroids, pad_last))


def test_increasing_scores_fail():
    broken = _altered(
        Centroids, lambda p, n, q: _unchecked(p, ranked_scores=p.ranked_scores[:, ::-1])
    )
    with pytest.raises(ContractError, match="non-increasing"):
        testing.check_classifier(broken)


def test_repeated_instances_fail():
    def repeat(p, n, q):
        ranked = np.array(p.ranked)
        ranked[:, 1] = ranked[:, 0]
        return _unchecked(p, ranked=ranked)

    with pytest.raises(ContractError, match="more than once"):
        testing.check_classifier(_altered(Centroids, repeat))


def test_label_other_than_the_first_ranked_fails():
    broken = _altered(Centroids, lambda p, n, q: _unchecked(p, labels=p.ranked[:, 1]))
    with pytest.raises(ContractError, match="labels must be -1 .unknown. or the first ranked"):
        testing.check_classifier(broken)


def test_poor_accuracy_fails():
    def shuffle(p, n, q):
        ranked = np.roll(p.ranked, 1, axis=1)
        return Prediction(ranked[:, 0], p.confidence, ranked, p.ranked_scores)

    with pytest.raises(ContractError, match="right on well-separated clusters"):
        testing.check_classifier(_altered(Centroids, shuffle))


def test_reading_beyond_k_fails():
    class Greedy(FirstNeighbour):
        def predict(self, neighbours, queries):
            prediction = super().predict(neighbours, queries)
            boost = np.float32(0.001 * neighbours.k)
            return Prediction(
                prediction.labels,
                np.clip(prediction.confidence - boost, 0, 1),
                prediction.ranked,
                prediction.ranked_scores,
            )

    with pytest.raises(ContractError, match="only the first k neighbour columns"):
        testing.check_classifier(Greedy())


def test_confidence_blind_to_unknowns_fails():
    broken = _altered(
        Centroids,
        lambda p, n, q: Prediction(
            p.labels, np.ones(len(p), np.float32), p.ranked, p.ranked_scores
        ),
    )
    with pytest.raises(ContractError, match="known queries above unknown ones"):
        testing.check_classifier(broken)


def test_multi_region_queries_must_work():
    class Flat(Centroids):
        def predict(self, neighbours, queries):
            if torch.as_tensor(queries).dim() != 2:
                raise ValueError("queries: expected Q×D")
            return super().predict(neighbours, queries)

    with pytest.raises(ContractError, match="raised on valid input.*expected Q×D"):
        testing.check_classifier(Flat())


def test_mishandled_padding_fails():
    class Stale(FirstNeighbour):
        """Answers a remembered instance when the collection holds fewer references than k."""

        def predict(self, neighbours, queries):
            prediction = super().predict(neighbours, queries)
            if (neighbours.labels >= 0).all():
                return prediction
            labels = np.full(len(prediction), 3)
            return Prediction(
                labels, prediction.confidence, labels[:, None], prediction.ranked_scores
            )

    class PaddedStale(Stale):
        k = 3

    with pytest.raises(ContractError, match="ranked holds codes >= 1"):
        testing.check_classifier(PaddedStale())


def test_accepting_the_wrong_dimension_fails():
    class Lenient(Centroids):
        def predict(self, neighbours, queries):
            return super().predict(
                neighbours, torch.as_tensor(queries)[..., : self.centres.shape[1]]
            )

    with pytest.raises(ContractError, match="wrong dimension"):
        testing.check_classifier(Lenient())


@pytest.mark.parametrize("column", [0, -1])
def test_infinite_score_of_a_ranked_instance_fails(column):
    def infinite(p, n, q):
        scores = np.array(p.ranked_scores)
        scores[:, column] = np.inf if column == 0 else -np.inf
        return Prediction(p.labels, p.confidence, p.ranked, scores)

    with pytest.raises(ContractError, match="ranked_scores must be finite and non-increasing"):
        testing.check_classifier(_altered(Centroids, infinite))


def test_nan_score_of_a_ranked_instance_fails():
    def nan(p, n, q):
        scores = np.array(p.ranked_scores)
        scores[:, 2] = np.nan
        return _unchecked(p, ranked_scores=scores)

    with pytest.raises(ContractError, match="ranked_scores must be finite and non-increasing"):
        testing.check_classifier(_altered(Centroids, nan))


def test_predict_raising_on_padded_neighbours_fails():
    class Unpadded(FirstNeighbour):
        def predict(self, neighbours, queries):
            if (neighbours.labels < 0).any():
                raise IndexError("instance code -1")
            return super().predict(neighbours, queries)

    class ReadsThree(Unpadded):
        k = 3

    with pytest.raises(ContractError, match="raised on valid input: IndexError: instance code -1"):
        testing.check_classifier(ReadsThree())
