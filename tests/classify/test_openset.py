"""Open-set rejection: reject(), threshold_for_far() and fit_threshold() on known answers."""

from __future__ import annotations

import numpy as np
import pytest

import pyinstance
from pyinstance.classify import (
    InstanceMean,
    NearestNeighbour,
    Prediction,
    fit_threshold,
    reject,
    threshold_for_far,
)


def _unit(rng, n, dim):
    x = rng.standard_normal((n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _clusters(rng, instances, per_instance, dim=32, spread=0.1):
    centres = _unit(rng, instances, dim)
    labels = np.repeat(np.arange(instances), per_instance)
    x = centres[labels] + spread * rng.standard_normal((labels.size, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), labels


def test_reject_marks_low_confidence_unknown_and_keeps_rankings():
    p = Prediction(
        [3, 1, 0], [0.9, 0.4, 0.5], [[3, 1], [1, 0], [0, -1]], [[2, 1], [1, 0], [1, -np.inf]]
    )
    r = reject(p, 0.5)
    assert r.labels.tolist() == [3, -1, 0]
    assert np.array_equal(r.confidence, p.confidence) and np.array_equal(r.ranked, p.ranked)
    assert reject(p, 0.0).labels.tolist() == [3, 1, 0]
    assert reject(p, 1.0).labels.tolist() == [-1, -1, -1]


@pytest.mark.parametrize("threshold", [-0.1, 1.5, float("nan"), None, "0.5", True])
def test_reject_refuses_bad_thresholds(threshold):
    p = Prediction([0], [0.5], [[0]], [[0.5]])
    with pytest.raises(ValueError, match="threshold"):
        reject(p, threshold)


def test_reject_refuses_non_predictions():
    with pytest.raises(TypeError, match="prediction: expected a pyinstance.classify.Prediction"):
        reject(([0], [0.5]), 0.5)


def test_threshold_for_far_counts_accepted_unknowns():
    scores = np.array([0.1, 0.9, 0.3, 0.7, 0.5, 0.2, 0.8, 0.4, 0.6, 0.0], np.float32)
    t = threshold_for_far(scores, 0.2)  # 2 of 10 may pass: just above the third highest, 0.7
    assert np.float32(0.7) < t < 0.70001 and (scores >= t).sum() == 2
    assert (scores >= threshold_for_far(scores, 0.0)).sum() == 0
    assert (
        threshold_for_far(scores, 0.99) > 0.0
        and (scores >= threshold_for_far(scores, 0.99)).sum() == 9
    )
    ties = np.array([0.5, 0.5, 0.5, 0.1], np.float32)
    assert (ties >= threshold_for_far(ties, 0.25)).sum() == 0  # a tie cannot be split
    assert threshold_for_far(np.ones(4, np.float32), 0.0) == 1.0  # clipped to [0, 1]


def _nn_oracle_scores(x, labels, max_held_out=5):
    """Plain-Python nn known/unknown scores for fit_threshold(instance_folds=None)."""
    n = len(labels)
    counts = {c: int((labels == c).sum()) for c in set(labels.tolist())}
    rank, seen = [], {}
    for c in labels.tolist():
        rank.append(seen.get(c, 0))
        seen[c] = seen.get(c, 0) + 1
    known, right = [], []
    for fold in range(max_held_out):
        held = [i for i in range(n) if counts[labels[i]] >= 2 and rank[i] == fold]
        rest = [j for j in range(n) if j not in held]
        for i in held:
            best = max(rest, key=lambda j: (float(np.dot(x[i], x[j])), -j))
            known.append(max(0.0, min(1.0, float(np.dot(x[i], x[best])))))
            right.append(labels[best] == labels[i])
    unknown = []
    for i in range(n):
        others = [float(np.dot(x[i], x[j])) for j in range(n) if labels[j] != labels[i]]
        unknown.append(max(0.0, min(1.0, max(others))))
    return np.array(known), np.array(right), np.array(unknown)


def test_fit_threshold_matches_a_plain_python_oracle_for_nn():
    rng = np.random.default_rng(1)
    x, labels = _clusters(rng, 8, 3, dim=16, spread=0.35)
    labels = labels.copy()
    labels[[0, 5]] = [7, 7]  # uneven instance sizes
    fit = fit_threshold(NearestNeighbour(), x, labels, target_far=0.1, instance_folds=None)
    known, right, unknown = _nn_oracle_scores(x, labels)
    expected = np.sort(unknown)[::-1][int(np.floor(0.1 * unknown.size))]
    assert fit.threshold == pytest.approx(expected, abs=1e-5)
    assert fit.unknown == {"leave_instance_out": 24, "distractors": 0}
    assert fit.known == {"leave_one_out": 24, "views": 0}
    assert fit.far == pytest.approx(float((unknown >= fit.threshold).mean()))
    assert fit.frr == pytest.approx(float((known < fit.threshold).mean()))
    assert fit.misidentified == int(((known >= fit.threshold) & ~right).sum())


@pytest.mark.parametrize(
    "name", ["nn", "knn_vote", "knn_weighted", "mean_knn", "alpha_mean_knn", "instance_mean"]
)
def test_separated_clusters_get_a_threshold_between_known_and_unknown(name):
    rng = np.random.default_rng(2)
    x, labels = _clusters(rng, 40, 3, dim=64, spread=0.06)
    distractors = _unit(rng, 60, 64)
    classifier = pyinstance.get_classifier(name)
    fit = fit_threshold(classifier, x, labels, target_far=0.05, distractors=distractors)
    assert fit.far <= 0.05 and fit.frr == 0.0 and fit.misidentified == 0
    assert fit.unknown == {"leave_instance_out": 120, "distractors": 60}
    # Fresh queries: known ones pass, strangers are rejected.
    fresh, truth = _clusters(np.random.default_rng(2), 40, 1, dim=64, spread=0.06)
    strangers = _unit(rng, 40, 64)
    queries = np.concatenate([fresh, strangers])
    k = max(classifier.k, 1)
    scores, index = pyinstance.ops.knn_dot(queries, x, k)
    neighbours = pyinstance.index.neighbours.Neighbours(
        scores, index, labels[index], tuple(map(str, range(40)))
    )
    answer = reject(classifier.predict(neighbours, queries), fit.threshold).labels
    assert (answer[:40] == truth).mean() == 1.0
    assert (answer[40:] == -1).mean() >= 0.8  # about 1 - target_far, from 40 samples


def test_one_reference_per_instance_uses_views_for_known_queries():
    rng = np.random.default_rng(3)
    x, labels = _clusters(rng, 12, 1, dim=32)
    views = x[labels.repeat(2)] + 0.05 * rng.standard_normal((24, 32)).astype(np.float32)
    views /= np.linalg.norm(views, axis=1, keepdims=True)
    fit = fit_threshold(
        NearestNeighbour(), x, labels, views=views, view_labels=labels.repeat(2), target_far=0.0
    )
    assert fit.known == {"leave_one_out": 0, "views": 24}
    assert fit.unknown == {"leave_instance_out": 12 + 24, "distractors": 0}
    assert fit.far == 0.0 and fit.frr == 0.0
    assert set(fit.to_dict()) == {
        "threshold",
        "target_far",
        "far",
        "frr",
        "misidentified",
        "known",
        "unknown",
    }


def test_instance_folds_trade_exactness_for_fewer_searches():
    rng = np.random.default_rng(4)
    x, labels = _clusters(rng, 10, 2, dim=16, spread=0.4)
    exact = fit_threshold(NearestNeighbour(), x, labels, target_far=0.2, instance_folds=None)
    grouped = fit_threshold(NearestNeighbour(), x, labels, target_far=0.2, instance_folds=2)
    # Removing half the instances with each query's own leaves fewer look-alikes to accept.
    assert grouped.threshold <= exact.threshold
    assert grouped.unknown == exact.unknown


def test_the_classifier_ends_fitted_on_the_whole_collection():
    rng = np.random.default_rng(5)
    x, labels = _clusters(rng, 5, 3, dim=8)
    classifier = InstanceMean()
    fit_threshold(classifier, x, labels)
    assert np.allclose(classifier.means.numpy(), InstanceMean().fit(x, labels).means.numpy())


def test_ignored_rows_are_left_out():
    rng = np.random.default_rng(6)
    x, labels = _clusters(rng, 4, 2, dim=8)
    marked = np.concatenate([labels, [-1]])
    noisy = np.concatenate([x, x[:1]])  # a removed duplicate of a reference
    assert fit_threshold(NearestNeighbour(), noisy, marked, instance_folds=None) == fit_threshold(
        NearestNeighbour(), x, labels, instance_folds=None
    )


def test_bad_input_is_refused():
    rng = np.random.default_rng(7)
    x, labels = _clusters(rng, 3, 2, dim=8)
    nn = NearestNeighbour()
    for target in (1.0, -0.1, float("nan"), "0.1"):
        with pytest.raises(ValueError, match="target_far"):
            fit_threshold(nn, x, labels, target_far=target)
    with pytest.raises(ValueError, match="instance_folds"):
        fit_threshold(nn, x, labels, instance_folds=1)
    with pytest.raises(ValueError, match="max_held_out"):
        fit_threshold(nn, x, labels, max_held_out=0)
    with pytest.raises(ValueError, match="views and view_labels: give both"):
        fit_threshold(nn, x, labels, views=x)
    with pytest.raises(
        ValueError, match="views: expected a \\(M, D\\) array with D=8, got shape \\(6, 4\\)"
    ):
        fit_threshold(nn, x, labels, views=x[:, :4], view_labels=labels)
    with pytest.raises(ValueError, match="view_labels: expected 6 int64"):
        fit_threshold(nn, x, labels, views=x, view_labels=labels[:3])
    with pytest.raises(ValueError, match="view_labels: every view must belong"):
        fit_threshold(nn, x, labels, views=x, view_labels=labels + 5)
    with pytest.raises(ValueError, match="distractors: NaN"):
        fit_threshold(nn, x, labels, distractors=np.full((2, 8), np.nan, np.float32))
    with pytest.raises(ValueError, match="one instance and no distractors"):
        fit_threshold(nn, x[:2], labels[:2])
    with pytest.raises(ValueError, match="descriptors: NaN"):
        fit_threshold(nn, np.full_like(x, np.nan), labels)
    single = fit_threshold(nn, x[:2], labels[:2], distractors=_unit(rng, 4, 8))
    assert single.unknown == {"leave_instance_out": 0, "distractors": 4}
