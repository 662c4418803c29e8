"""The k-NN classifiers on hand-computed cases and against plain-Python oracles."""

from __future__ import annotations

import math

import numpy as np
import pytest

import pyinstance
from pyinstance.classify import AlphaMeanKnn, KnnVote, KnnWeighted, MeanKnn, NearestNeighbour
from pyinstance.index.neighbours import Neighbours

E = math.e


def make_neighbours(scores, labels, instances: int | None = None) -> Neighbours:
    """Neighbours from score and label rows; -1 labels are padding (score -inf)."""
    labels = np.asarray(labels, dtype=np.int64)
    scores = np.where(labels >= 0, np.asarray(scores, dtype=np.float32), -np.inf).astype(np.float32)
    rows = np.where(labels >= 0, np.arange(labels.size).reshape(labels.shape), -1)
    count = instances if instances is not None else int(labels.max()) + 1
    return Neighbours(scores, rows, labels, tuple(f"i{c}" for c in range(count)))


def queries_for(neighbours: Neighbours, dim: int = 4) -> np.ndarray:
    """Placeholder queries of the right count for classifiers that only read neighbours."""
    return np.zeros((len(neighbours), dim), dtype=np.float32)


def _predict(classifier, scores, labels, instances=None):
    neighbours = make_neighbours([scores], [labels], instances)
    return classifier.predict(neighbours, queries_for(neighbours))


def test_nn_takes_the_nearest_and_ranks_the_rest_by_best_similarity():
    p = _predict(NearestNeighbour(k=4), [0.9, 0.8, 0.7, 0.6], [2, 0, 2, 1])
    assert p.labels.tolist() == [2]
    assert p.confidence.tolist() == pytest.approx([0.9])
    assert p.ranked.tolist() == [[2, 0, 1, -1]]
    assert p.ranked_scores[0, :3].tolist() == pytest.approx([0.9, 0.8, 0.6])
    assert p.ranked_scores[0, 3] == -np.inf


def test_nn_tie_goes_to_the_earlier_column():
    assert _predict(NearestNeighbour(k=2), [0.5, 0.5], [1, 0]).labels.tolist() == [1]
    assert _predict(NearestNeighbour(k=2), [0.5, 0.5], [0, 1]).labels.tolist() == [0]


def test_nn_confidence_is_clipped_similarity():
    p = _predict(NearestNeighbour(), [-0.3], [0])
    assert p.labels.tolist() == [0] and p.confidence.tolist() == [0.0]


def test_vote_majority_and_tie_break():
    p = _predict(KnnVote(k=5), [0.9, 0.8, 0.7, 0.6, 0.5], [0, 1, 1, 2, 1])
    assert p.labels.tolist() == [1]
    assert p.ranked.tolist()[0][:3] == [1, 0, 2]
    assert p.ranked_scores[0, :3].tolist() == [3, 1, 1]
    assert p.confidence.tolist() == pytest.approx([0.8])  # the winner's best similarity
    tie = _predict(KnnVote(k=4), [0.9, 0.8, 0.7, 0.6], [1, 0, 0, 1])
    assert tie.labels.tolist() == [1] and tie.ranked.tolist() == [[1, 0, -1, -1]]


def test_vote_reads_only_k_columns():
    p = _predict(KnnVote(k=3), [0.9, 0.8, 0.7, 0.6, 0.5], [0, 0, 1, 1, 1])
    assert p.labels.tolist() == [0] and p.ranked.shape == (1, 3)


@pytest.mark.parametrize(
    ("transform", "winner", "confidence"),
    [
        ("x", 1, (0.64 + 0.25) / 2),
        ("x^2", 0, 0.81),
        ("sqrt", 1, ((0.8 + 0.5) / 2) ** 2),
        ("log", 1, math.exp((math.log(0.64 + E) + math.log(0.25 + E)) / 2) - E),
    ],
)
def test_weighted_transforms(transform, winner, confidence):
    p = _predict(KnnWeighted(k=3, transform=transform), [0.81, 0.64, 0.25], [0, 1, 1])
    assert p.labels.tolist() == [winner]
    assert p.confidence[0] == pytest.approx(confidence, rel=1e-5)


def test_weighted_counts_negative_similarity_as_zero():
    p = _predict(KnnWeighted(k=3, transform="sqrt"), [0.25, -0.5, -0.6], [0, 1, 1])
    assert p.labels.tolist() == [0]
    assert p.ranked_scores[0, :2].tolist() == pytest.approx([0.5, 0.0])


def test_mean_knn_prefers_one_close_reference_over_several_farther():
    p = _predict(MeanKnn(k=3), [0.8, 0.7, 0.7], [0, 1, 1])
    assert p.labels.tolist() == [0] and p.confidence.tolist() == pytest.approx([0.8])
    p = _predict(MeanKnn(k=3), [0.8, 0.7, 0.4], [1, 1, 0])
    assert p.labels.tolist() == [1] and p.confidence.tolist() == pytest.approx([0.75])


def test_alpha_mean_knn_neighbourhood():
    # s1 = 0.9, alpha = 1.25: radius s >= 1 - 1.5625 * 0.1 = 0.84375.
    p = _predict(AlphaMeanKnn(k=4, alpha=1.25), [0.9, 0.88, 0.86, 0.8], [1, 0, 0, 0])
    assert p.labels.tolist() == [1]
    assert p.ranked.tolist()[0][:2] == [1, 0]
    assert p.ranked_scores[0, :2].tolist() == pytest.approx([0.9, 0.87])  # 0.8 is outside
    # A wider alpha takes instance 0's three references: mean 0.8467 < 0.9 still.
    wide = _predict(AlphaMeanKnn(k=4, alpha=2.0), [0.9, 0.88, 0.86, 0.8], [1, 0, 0, 0])
    assert wide.ranked_scores[0, 1] == pytest.approx((0.88 + 0.86 + 0.8) / 3)
    # Outside the neighbourhood an instance scores its best similarity.
    out = _predict(AlphaMeanKnn(k=3, alpha=1.0), [0.9, 0.5, 0.4], [0, 1, 1])
    assert out.ranked_scores[0, :2].tolist() == pytest.approx([0.9, 0.5])


def test_alpha_one_is_nn_and_large_alpha_is_mean_knn():
    rng = np.random.default_rng(0)
    scores = -np.sort(-rng.uniform(0, 1, (50, 6)), axis=1)
    labels = rng.integers(0, 4, (50, 6))
    n = make_neighbours(scores, labels, 4)
    q = queries_for(n)
    assert np.array_equal(
        AlphaMeanKnn(k=6, alpha=1.0).predict(n, q).labels,
        NearestNeighbour(k=6).predict(n, q).labels,
    )
    assert np.array_equal(
        AlphaMeanKnn(k=6, alpha=100.0).predict(n, q).labels, MeanKnn(k=6).predict(n, q).labels
    )


def test_fewer_references_than_k_and_one_instance():
    for classifier in (
        NearestNeighbour(k=5),
        KnnVote(k=5),
        KnnWeighted(k=5),
        MeanKnn(k=5),
        AlphaMeanKnn(k=5),
    ):
        p = _predict(classifier, [0.7, 0.6, 0, 0, 0], [0, 0, -1, -1, -1])
        assert p.labels.tolist() == [0]
        assert p.ranked.tolist() == [[0, -1, -1, -1, -1]]
        assert np.isneginf(p.ranked_scores[0, 1:]).all()
        assert 0.6 <= p.confidence[0] <= 0.7 + 1e-6


def test_an_empty_collection_answers_unknown():
    p = _predict(KnnVote(k=2), [0, 0], [-1, -1], instances=1)
    assert p.labels.tolist() == [-1] and p.confidence.tolist() == [0.0]


# -- independent oracle: plain Python per query ------------------------------------------
TRANSFORMS = {
    "x": (lambda x: x, lambda y: y),
    "x^2": (lambda x: x * x, math.sqrt),
    "sqrt": (math.sqrt, lambda y: y * y),
    "log": (lambda x: math.log(x + E), lambda y: math.exp(y) - E),
}


def _oracle(name, scores, labels, **options):
    k = options["k"]
    members: dict[int, list[tuple[float, int]]] = {}
    for column in range(k):
        if labels[column] >= 0:
            members.setdefault(int(labels[column]), []).append((float(scores[column]), column))
    key = {}
    for instance, found in members.items():
        values = [s for s, _ in found]
        if name == "nn":
            key[instance] = max(values)
        elif name == "knn_vote":
            key[instance] = len(values)
        elif name == "knn_weighted":
            f = TRANSFORMS[options["transform"]][0]
            key[instance] = sum(f(min(max(s, 0.0), 1.0)) for s in values)
        elif name == "mean_knn":
            key[instance] = sum(values) / len(values)
        else:
            nearest = min(max(scores[c] for c in range(k) if labels[c] >= 0), 1.0)
            radius = 1 - options["alpha"] ** 2 * (1 - nearest)
            inside = [s for s in values if s >= min(radius, max(values))]
            key[instance] = sum(inside) / len(inside)
    first = {
        i: min(c for s, c in found if s == max(v for v, _ in found)) for i, found in members.items()
    }
    ranked = sorted(key, key=lambda i: (-key[i], first[i]))
    if not ranked:
        return -1, 0.0, ranked
    winner = ranked[0]
    values = [s for s, _ in members[winner]]
    if name in ("nn", "knn_vote"):
        confidence = max(values)
    elif name == "knn_weighted":
        confidence = TRANSFORMS[options["transform"]][1](key[winner] / len(values))
    else:
        confidence = key[winner]
    return winner, min(max(confidence, 0.0), 1.0), ranked


CASES = [
    ("nn", {"k": 3}),
    ("knn_vote", {"k": 5}),
    ("knn_weighted", {"k": 5, "transform": "x"}),
    ("knn_weighted", {"k": 5, "transform": "x^2"}),
    ("knn_weighted", {"k": 4, "transform": "sqrt"}),
    ("knn_weighted", {"k": 5, "transform": "log"}),
    ("mean_knn", {"k": 5}),
    ("alpha_mean_knn", {"k": 6, "alpha": 1.5}),
]


@pytest.mark.parametrize(("name", "options"), CASES, ids=lambda c: str(c))
def test_matches_plain_python_oracle(name, options):
    rng = np.random.default_rng(len(name) * 7 + options["k"])
    q, width = 200, 8
    # Dyadic scores (exact sums) with many ties, sorted; random padding at the end of rows.
    scores = -np.sort(-rng.choice([-0.25, 0.125, 0.25, 0.5, 0.75, 0.875, 1.0], (q, width)), axis=1)
    labels = rng.integers(0, 4, (q, width))
    padded = np.arange(width)[None, :] >= rng.integers(0, width + 1, (q, 1))
    labels[padded] = -1
    n = make_neighbours(scores, labels, 4)
    prediction = pyinstance.get_classifier(name, **options).predict(n, queries_for(n))
    k = options["k"]
    for row in range(q):
        winner, confidence, ranked = _oracle(name, n.scores[row], n.labels[row], **options)
        assert prediction.labels[row] == winner, row
        assert prediction.confidence[row] == pytest.approx(confidence, abs=1e-6), row
        assert prediction.ranked[row].tolist() == ranked + [-1] * (k - len(ranked)), row


# -- parameters and inputs -------------------------------------------------------------
@pytest.mark.parametrize("k", [0, -1, True, 2.5, float("nan"), "3", None])
@pytest.mark.parametrize("cls", [NearestNeighbour, KnnVote, KnnWeighted, MeanKnn, AlphaMeanKnn])
def test_bad_k_is_refused(cls, k):
    with pytest.raises(ValueError, match="k: expected an integer >= 1"):
        cls(k=k)


def test_unknown_transform_lists_the_choices():
    with pytest.raises(
        ValueError, match="transform: expected one of 'x', 'x\\^2', 'sqrt', 'log', got 'cube'"
    ):
        KnnWeighted(transform="cube")


@pytest.mark.parametrize("alpha", [0.5, float("nan"), float("inf"), True, "2"])
def test_bad_alpha_is_refused(alpha):
    with pytest.raises(ValueError, match="alpha"):
        AlphaMeanKnn(alpha=alpha)


def test_bad_neighbours_and_queries_are_refused():
    classifier = KnnVote(k=3)
    n = make_neighbours([[0.9, 0.8, 0.7]], [[0, 1, 0]])
    with pytest.raises(TypeError, match="neighbours: expected a pyinstance.index.Neighbours"):
        classifier.predict((n.scores, n.labels), queries_for(n))
    with pytest.raises(ValueError, match="needs k=4 neighbours per query, got 3"):
        KnnVote(k=4).predict(n, queries_for(n))
    with pytest.raises(ValueError, match="queries: expected 1 rows"):
        classifier.predict(n, np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match="queries: NaN"):
        classifier.predict(n, np.full((1, 4), np.nan, np.float32))
    with pytest.raises(ValueError, match="queries: expected a \\(Q, D\\)"):
        classifier.predict(n, np.zeros(4, np.float32))
    with pytest.raises(ValueError, match="floating-point"):
        classifier.predict(n, np.zeros((1, 4), np.int64))
    outside = make_neighbours([[0.9, 0.8, 0.7]], [[0, 5, 0]], instances=2)
    with pytest.raises(ValueError, match="neighbours.labels: expected codes in \\[0, 2\\)"):
        classifier.predict(outside, queries_for(outside))
    nan = make_neighbours([[0.9, np.nan, 0.7]], [[0, 1, 0]])
    with pytest.raises(ValueError, match="neighbours.scores: NaN"):
        classifier.predict(nan, queries_for(nan))


def test_fit_validates_and_fixes_the_query_dimension():
    classifier = MeanKnn(k=2)
    descriptors = np.eye(3, 4, dtype=np.float32)
    assert classifier.fit(descriptors, np.array([0, 1, 1])) is classifier
    n = make_neighbours([[0.9, 0.8]], [[0, 1]])
    with pytest.raises(ValueError, match="expected dimension D=4"):
        classifier.predict(n, np.zeros((1, 5), np.float32))
    with pytest.raises(ValueError, match="labels: expected shape \\(3,\\)"):
        classifier.fit(descriptors, np.array([0, 1]))
    with pytest.raises(ValueError, match="labels: expected int64"):
        classifier.fit(descriptors, np.array([0.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="labels: expected instance codes >= 0"):
        classifier.fit(descriptors, np.array([0, -2, 1]))
    with pytest.raises(ValueError, match="every row is ignored"):
        classifier.fit(descriptors, np.array([-1, -1, -1]))
    with pytest.raises(ValueError, match="descriptors: expected a non-empty"):
        classifier.fit(np.zeros((0, 4), np.float32), np.zeros(0, np.int64))
    bad = descriptors.copy()
    bad[2, 1] = np.inf
    with pytest.raises(ValueError, match="descriptors: NaN or infinite"):
        classifier.fit(bad, np.array([0, 1, 1]))


def test_every_builtin_is_registered():
    names = {c.name for c in pyinstance.list_plugins("classifier")}
    assert {
        "nn",
        "knn_vote",
        "knn_weighted",
        "mean_knn",
        "alpha_mean_knn",
        "instance_mean",
    } <= names


def test_mean_classifiers_defaults_and_the_alpha_squared_radius():
    """Defaults k=5 (mean_knn), k=10 and alpha=1.25 (alpha_mean_knn); the neighbourhood is
    s >= 1 - alpha² (1 - s1): 0.84375 for s1 = 0.9, so 0.82 stays out (alpha³ would take
    it: 0.8047)."""
    assert MeanKnn().options() == {"k": 5}
    assert AlphaMeanKnn().options() == {"k": 10, "alpha": 1.25}
    p = _predict(AlphaMeanKnn(k=3), [0.9, 0.88, 0.82], [1, 0, 0])
    assert p.ranked_scores[0, :2].tolist() == pytest.approx([0.9, 0.88])
    with pytest.raises(ValueError, match=r"^alpha: expected"):
        AlphaMeanKnn(alpha=0.5)


def test_confidence_is_clipped_above_at_one():
    # Similarities of descriptors that are not unit length can exceed 1.
    p = _predict(NearestNeighbour(k=2), [1.5, 0.2], [1, 0])
    assert p.labels.tolist() == [1] and p.confidence.tolist() == [1.0]
    assert p.ranked_scores[0].tolist() == pytest.approx([1.5, 0.2])


def test_confidence_hook_gets_the_winning_slot_alone():
    seen = []

    class Recording(NearestNeighbour):
        def confidence(self, groups, key, winner):
            seen.append(winner.copy())
            return super().confidence(groups, key, winner)

    p = _predict(Recording(k=3), [0.7, 0.9, 0.8], [0, 1, 2])
    assert p.labels.tolist() == [1]
    assert len(seen) == 1 and seen[0].shape == (1, 1)  # Q×1, the slot of instance 1
    assert p.confidence.tolist() == pytest.approx([0.9])


def test_repr_lists_the_options():
    assert repr(KnnVote(k=3)) == "KnnVote(k=3)"
    assert repr(AlphaMeanKnn(k=4, alpha=1.5)) == "AlphaMeanKnn(k=4, alpha=1.5)"
