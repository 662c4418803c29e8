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

    with pytest.raises(ContractError, match=r"^fit\(\) accepted NaN descriptors without an error$"):
        testing.check_classifier(Trusting())


def test_fit_accepting_short_labels_fails():
    class Lax(Centroids):
        def fit(self, descriptors, labels):
            return super().fit(descriptors[: len(labels)], labels)

    with pytest.raises(
        ContractError, match=r"^fit\(\) accepted fewer labels than descriptors without an error$"
    ):
        testing.check_classifier(Lax())


def test_fit_not_returning_self_fails():
    class Forgetful(Centroids):
        def fit(self, descriptors, labels):
            super().fit(descriptors, labels)

    with pytest.raises(
        ContractError, match=r"^classifier.fit\(\) must return the classifier itself$"
    ):
        testing.check_classifier(Forgetful())


def test_predict_returning_a_tuple_fails():
    broken = _altered(Centroids, lambda p, n, q: (p.labels, p.confidence))
    with pytest.raises(
        ContractError,
        match=r"^predict\(\) must return a pyinstance.classify.Prediction, got tuple$",
    ):
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

    with pytest.raises(
        ContractError, match=r"^ranked: -1 padding must come after every ranked instance$"
    ):
        testing.check_classifier(_altered(Centroids, pad_first))


def test_finite_score_on_padding_fails():
    def pad_last(p, n, q):
        ranked = np.array(p.ranked)
        ranked[:, -1] = -1
        return _unchecked(p, ranked=ranked)

    with pytest.raises(ContractError, match=r"^ranked_scores must be -inf where padded$"):
        testing.check_classifier(_altered(Centroids, pad_last))


def test_increasing_scores_fail():
    broken = _altered(
        Centroids, lambda p, n, q: _unchecked(p, ranked_scores=p.ranked_scores[:, ::-1])
    )
    with pytest.raises(
        ContractError, match=r"^ranked_scores must be finite and non-increasing along each row$"
    ):
        testing.check_classifier(broken)


def test_repeated_instances_fail():
    def repeat(p, n, q):
        ranked = np.array(p.ranked)
        ranked[:, 1] = ranked[:, 0]
        return _unchecked(p, ranked=ranked)

    with pytest.raises(ContractError, match=r"^ranked lists an instance more than once$"):
        testing.check_classifier(_altered(Centroids, repeat))


def test_label_other_than_the_first_ranked_fails():
    broken = _altered(Centroids, lambda p, n, q: _unchecked(p, labels=p.ranked[:, 1]))
    with pytest.raises(
        ContractError, match=r"^labels must be -1 \(unknown\) or the first ranked instance$"
    ):
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

    with pytest.raises(
        ContractError,
        match=r"^predict\(\) must read only the first k neighbour columns \(more columns changed the answer\)$",
    ):
        testing.check_classifier(Greedy())


def test_confidence_blind_to_unknowns_fails():
    broken = _altered(
        Centroids,
        lambda p, n, q: Prediction(
            p.labels, np.ones(len(p), np.float32), p.ranked, p.ranked_scores
        ),
    )
    with pytest.raises(
        ContractError,
        match=r"^confidence ranks known queries above unknown ones in only \d+% of pairs: open-set rejection cannot threshold it$",
    ):
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

    with pytest.raises(
        ContractError,
        match=r"^predict\(\) accepted queries of the wrong dimension without an error$",
    ):
        testing.check_classifier(Lenient())


@pytest.mark.parametrize("column", [0, -1])
def test_infinite_score_of_a_ranked_instance_fails(column):
    def infinite(p, n, q):
        scores = np.array(p.ranked_scores)
        scores[:, column] = np.inf if column == 0 else -np.inf
        return Prediction(p.labels, p.confidence, p.ranked, scores)

    with pytest.raises(
        ContractError, match=r"^ranked_scores must be finite and non-increasing along each row$"
    ):
        testing.check_classifier(_altered(Centroids, infinite))


def test_nan_score_of_a_ranked_instance_fails():
    def nan(p, n, q):
        scores = np.array(p.ranked_scores)
        scores[:, 2] = np.nan
        return _unchecked(p, ranked_scores=scores)

    with pytest.raises(
        ContractError, match=r"^ranked_scores must be finite and non-increasing along each row$"
    ):
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


class Recording(FirstNeighbour):
    """Records what check_classifier hands to fit() and predict()."""

    def __init__(self):
        self.calls = []

    def fit(self, descriptors, labels):
        self.calls.append(
            (
                "fit",
                torch.as_tensor(descriptors).numpy().copy(),
                torch.as_tensor(labels).numpy().copy(),
            )
        )
        return super().fit(descriptors, labels)

    def predict(self, neighbours, queries):
        self.calls.append(("predict", neighbours.k, torch.as_tensor(queries).numpy().copy()))
        return super().predict(neighbours, queries)


def test_check_classifier_probes_the_documented_inputs_reproducibly():
    first, again = Recording(), Recording()
    testing.check_classifier(first)
    testing.check_classifier(again)
    shapes = [(kind, a if kind == "predict" else a.shape, b.shape) for kind, a, b in first.calls]
    assert shapes == [
        ("fit", (18, 32), (18,)),  # NaN descriptors: 6 instances x 3 references, D = 32
        ("fit", (18, 32), (17,)),  # one label short
        ("fit", (18, 32), (18,)),
        ("predict", 1, (12, 32)),  # 6 instances x 2 queries, k columns
        ("predict", 4, (12, 32)),  # k + 3 columns
        ("predict", 1, (12, 32)),  # strangers
        ("predict", 1, (12, 2, 32)),  # two regions per query
        ("fit", (2, 32), (2,)),
        ("predict", 3, (12, 32)),  # padded: 2 references, 3 columns
        ("fit", (18, 32), (18,)),
        ("predict", 1, (12, 33)),  # the wrong dimension
    ]
    references = first.calls[2][1]
    assert np.isnan(first.calls[0][1]).sum() == 1
    assert np.allclose(np.linalg.norm(references, axis=1), 1, atol=1e-6)
    assert len(np.unique(references.round(4), axis=0)) == 18  # no two references alike
    # Every probe but the last (random queries of the wrong size) is drawn from seeded generators.
    for (_, a, b), (_, a2, b2) in zip(first.calls[:-1], again.calls[:-1], strict=True):
        assert np.array_equal(a, a2, equal_nan=True) and np.array_equal(b, b2)


def test_classifier_without_k_fails():
    class NoK:
        fit = Centroids.fit
        predict = Centroids.predict

    with pytest.raises(ContractError, match="^classifier must have an int attribute k >= 0"):
        testing.check_classifier(NoK())


def test_accepting_the_wrong_dimension_is_caught_with_valid_neighbours():
    class CountsOnly(FirstNeighbour):
        """Checks the query count against the neighbours, reads them, ignores the dimension."""

        def predict(self, neighbours, queries):
            if len(queries) != len(neighbours):
                raise ValueError("queries: one per neighbours row")
            labels = neighbours.labels[:, :1]
            scores = np.where(labels >= 0, neighbours.scores[:, :1], -np.inf)
            confidence = np.clip(np.nan_to_num(scores[:, 0], neginf=0), 0, 1)
            return Prediction(labels[:, 0], confidence, labels, scores)

    with pytest.raises(
        ContractError,
        match=r"^predict\(\) accepted queries of the wrong dimension without an error$",
    ):
        testing.check_classifier(CountsOnly())


def test_confidence_moving_by_less_than_1e_6_with_more_columns_passes():
    class Scaled(FirstNeighbour):
        """Small confidences (1e-3 x similarity) that shift by 5e-8 per neighbour column."""

        def predict(self, neighbours, queries):
            p = super().predict(neighbours, queries)
            confidence = 1e-3 * p.confidence + 5e-8 * neighbours.k
            return Prediction(p.labels, confidence, p.ranked, p.ranked_scores)

    testing.check_classifier(Scaled())


def test_padding_in_the_middle_of_a_row_fails():
    def hole(p, n, q):
        ranked = np.array(p.ranked)
        scores = np.array(p.ranked_scores)
        ranked[:, 1], scores[:, 1] = -1, -np.inf
        return _unchecked(p, ranked=ranked, ranked_scores=scores)

    with pytest.raises(ContractError, match=r"^ranked: -1 padding must come after every ranked"):
        testing.check_classifier(_altered(Centroids, hole))


def test_label_zero_other_than_the_first_ranked_fails():
    broken = _altered(Centroids, lambda p, n, q: _unchecked(p, labels=np.zeros_like(p.labels)))
    with pytest.raises(
        ContractError, match=r"^labels must be -1 \(unknown\) or the first ranked instance$"
    ):
        testing.check_classifier(broken)
