"""fit_threshold: every search it runs, watched through a classifier that records them.

A small collection (5 instances of 1-4 references, one ignored row, views, distractors) is
fitted with a recording classifier; each search's references, queries and neighbours are
checked against what the module doc describes, computed here by hand, and the reported
threshold, FAR, FRR and counts against the recorded confidences.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from pyinstance.classify import (
    KnnVote,
    NearestNeighbour,
    Prediction,
    fit_threshold,
    reject,
    threshold_for_far,
)

#: Instance codes of the collection's rows (-1: ignored); counts 3, 2, 1, 4, 2.
LABELS = np.array([3, 0, 1, 3, 0, 2, -1, 4, 3, 0, 1, 3, 4])


def _unit(rng, n, dim=8):
    x = rng.standard_normal((n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


class Recording:
    """A classifier that records each fit and each search's inputs and answer."""

    def __init__(self, inner):
        self.inner = inner
        self.k = inner.k
        self.fits: list[tuple[np.ndarray, np.ndarray]] = []
        self.searches: list[dict] = []

    def fit(self, references, codes):
        self.fits.append((np.array(references), np.array(codes)))
        self.inner.fit(references, codes)
        return self

    def predict(self, neighbours, queries):
        prediction = self.inner.predict(neighbours, queries)
        references, codes = self.fits[-1]
        self.searches.append(
            {
                "references": references,
                "codes": codes,
                "queries": np.array(queries),
                "neighbours": neighbours,
                "prediction": prediction,
            }
        )
        return prediction


def _rows_of(x, references):
    """The collection rows of ``references`` (each is one of x's distinct rows)."""
    return [int(np.flatnonzero((x == r).all(axis=1))[0]) for r in references]


def _collection(seed=0):
    rng = np.random.default_rng(seed)
    x = _unit(rng, LABELS.size)
    view_labels = np.array([2, 0, 2, 4])
    views = _unit(rng, 4)
    distractors = _unit(rng, 3)
    return x, views, view_labels, distractors


def _check_neighbours(search, x, labels=LABELS):
    """Each query's neighbours: the fitted references by descending similarity, with their
    collection row ids and codes, padded with -inf / -1 / -1 past the last reference."""
    neighbours = search["neighbours"]
    rows = _rows_of(x, search["references"])
    similarity = search["queries"] @ search["references"].T
    k = neighbours.scores.shape[1]
    found = min(k, len(rows))
    for q in range(similarity.shape[0]):
        order = np.argsort(-similarity[q], kind="stable")[:found]
        np.testing.assert_allclose(neighbours.scores[q, :found], similarity[q, order], atol=1e-5)
        assert neighbours.rows[q, :found].tolist() == [rows[i] for i in order]
        assert neighbours.labels[q, :found].tolist() == labels[[rows[i] for i in order]].tolist()
        assert np.all(neighbours.scores[q, found:] == -np.inf)
        assert np.all(neighbours.rows[q, found:] == -1) and np.all(
            neighbours.labels[q, found:] == -1
        )
    assert neighbours.instances == tuple(str(code) for code in range(labels.max() + 1))


def test_every_search_and_the_reported_rates_for_one_group_per_instance():
    x, views, view_labels, distractors = _collection()
    recording = Recording(NearestNeighbour())
    fit = fit_threshold(
        recording,
        x,
        LABELS,
        target_far=0.25,
        views=views,
        view_labels=view_labels,
        distractors=distractors,
        instance_folds=None,
        max_held_out=2,
    )
    searches = recording.searches
    valid = [row for row in range(LABELS.size) if LABELS[row] >= 0]
    # Known, leave one out: fold f holds out the f-th reference (in row order) of every
    # instance with two or more, for f < max_held_out.
    held = [[0, 1, 2, 7], [3, 4, 10, 12]]  # 3: rows 0, 3, 8, 11; 0: 1, 4, 9; 1: 2, 10; 4: 7, 12
    for fold, rows in enumerate(held):
        search = searches[fold]
        assert sorted(_rows_of(x, search["queries"])) == rows
        assert _rows_of(x, search["references"]) == [r for r in valid if r not in rows]
        assert search["codes"].tolist() == [LABELS[r] for r in valid if r not in rows]
    # Unknown: each instance removed in turn (some order), its references then its views
    # as the queries.
    removed = []
    for search in searches[2:7]:
        fitted = set(_rows_of(x, search["references"]))
        gone = sorted(set(LABELS[[r for r in valid if r not in fitted]].tolist()))
        assert len(gone) == 1
        (instance,) = gone
        removed.append(instance)
        own = [r for r in valid if LABELS[r] == instance]
        expected = np.concatenate([x[own], views[view_labels == instance]])
        np.testing.assert_array_equal(search["queries"], expected)
    assert sorted(removed) == [0, 1, 2, 3, 4]
    # Then the views (known) and the distractors (unknown) against everything.
    np.testing.assert_array_equal(searches[7]["queries"], views)
    np.testing.assert_array_equal(searches[8]["queries"], distractors)
    for search in searches[7:]:
        assert _rows_of(x, search["references"]) == valid
    assert len(searches) == 9
    for search in searches:
        _check_neighbours(search, x)
    # The classifier ends fitted on the whole collection.
    assert _rows_of(x, recording.fits[-1][0]) == valid
    assert recording.fits[-1][1].tolist() == LABELS[valid].tolist()

    # The report, from the recorded answers.
    unknown = np.concatenate([s["prediction"].confidence for s in searches[2:7] + searches[8:]])
    known = np.concatenate([s["prediction"].confidence for s in searches[:2] + searches[7:8]])
    truth = np.concatenate([LABELS[held[0]], LABELS[held[1]], view_labels])
    known_order = [sorted(_rows_of(x, s["queries"])) for s in searches[:2]]
    assert known_order == held
    answers = np.concatenate([s["prediction"].labels for s in searches[:2] + searches[7:8]])
    ranked = np.sort(unknown)[::-1]
    allowed = math.floor(0.25 * unknown.size)
    assert fit.threshold == pytest.approx(float(ranked[allowed]), abs=1e-6)
    assert fit.threshold > ranked[allowed]
    assert fit.far == pytest.approx((unknown >= fit.threshold).mean())
    assert fit.frr == pytest.approx((known < fit.threshold).mean())
    accepted_wrong = (known >= fit.threshold) & (answers != truth)
    assert fit.misidentified == int(accepted_wrong.sum())
    assert fit.known == {"leave_one_out": 8, "views": 4}
    assert fit.unknown == {"leave_instance_out": 12 + 4, "distractors": 3}
    assert fit.target_far == 0.25


def test_instance_groups_partition_the_instances_evenly():
    x, views, view_labels, _ = _collection(1)
    recording = Recording(NearestNeighbour())
    fit = fit_threshold(
        recording, x, LABELS, views=views, view_labels=view_labels, instance_folds=2
    )
    valid = [row for row in range(LABELS.size) if LABELS[row] >= 0]
    # max_held_out 5 but the largest instance has 4 references: folds 0-3.
    assert [len(s["queries"]) for s in recording.searches[:4]] == [4, 4, 2, 1]
    groups = []
    for search in recording.searches[4:6]:
        fitted = set(_rows_of(x, search["references"]))
        gone = sorted(set(LABELS[[r for r in valid if r not in fitted]].tolist()))
        own = [r for r in valid if LABELS[r] in gone]
        queries = search["queries"]
        np.testing.assert_array_equal(queries[: len(own)], x[own])
        np.testing.assert_array_equal(queries[len(own) :], views[np.isin(view_labels, gone)])
        groups.append(gone)
    assert sorted(len(g) for g in groups) == [2, 3]
    assert sorted(groups[0] + groups[1]) == [0, 1, 2, 3, 4]
    assert len(recording.searches) == 7
    assert fit.unknown == {"leave_instance_out": 12 + 4, "distractors": 0}
    assert fit.known == {"leave_one_out": 11, "views": 4}


def test_more_neighbours_than_references_are_padded():
    x, *_ = _collection(2)
    labels = LABELS[:6]  # codes 3, 0, 1, 3, 0, 2
    recording = Recording(KnnVote(k=6))
    fit_threshold(recording, x[:6], labels, instance_folds=None, max_held_out=1)
    widths = {s["neighbours"].scores.shape[1] for s in recording.searches}
    assert widths == {6}
    for search in recording.searches:
        _check_neighbours(search, x, labels)
    # Leave one out (rows 0 and 1 held), then without each instance in turn: padded.
    sizes = [len(s["references"]) for s in recording.searches]
    assert sizes[0] == 4 and sorted(sizes[1:]) == [4, 4, 5, 5]


def test_classifier_without_neighbours_still_gets_one_column():
    x, *_ = _collection(3)

    class NoNeighbours(Recording):
        k = 0

    recording = NoNeighbours(NearestNeighbour())
    recording.k = 0
    fit_threshold(recording, x, LABELS, instance_folds=None)
    assert {s["neighbours"].scores.shape[1] for s in recording.searches} == {1}


def test_a_single_held_out_fold_holds_the_first_reference_of_each_instance():
    rng = np.random.default_rng(4)
    labels = np.tile(np.arange(10), 4)[rng.permutation(40)]
    x = _unit(rng, 40)
    recording = Recording(NearestNeighbour())
    fit_threshold(recording, x, labels, max_held_out=1, instance_folds=None)
    first = sorted(int(np.flatnonzero(labels == c)[0]) for c in range(10))
    assert sorted(_rows_of(x, recording.searches[0]["queries"])) == first
    assert _rows_of(x, recording.searches[0]["queries"]) == first


def test_refit_gets_the_mask_of_the_searched_rows_over_all_given_rows():
    x, views, view_labels, distractors = _collection(5)
    masks = []

    def refit(keep):
        masks.append(keep.copy())
        return np.concatenate([x[keep], x[keep]], axis=1), lambda q: np.concatenate([q, q], axis=1)

    recording = Recording(NearestNeighbour())
    fit_threshold(
        recording,
        x,
        LABELS,
        views=views,
        view_labels=view_labels,
        distractors=distractors,
        instance_folds=None,
        max_held_out=1,
        refit=refit,
    )
    assert all(mask.shape == (LABELS.size,) and mask.dtype == bool for mask in masks)
    assert not any(mask[6] for mask in masks)  # the ignored row is never searched
    for search in recording.searches:
        assert search["references"].shape[1] == 16 and search["queries"].shape[1] == 16
        fitted = _rows_of(np.concatenate([x, x], axis=1), search["references"])
        assert any(np.flatnonzero(mask).tolist() == fitted for mask in masks)
    valid = LABELS >= 0
    assert np.array_equal(masks[-1], valid)


def test_refit_results_are_checked():
    x, *_ = _collection(6)
    with pytest.raises(ValueError, match=r"^refit references: expected a \(M, D\) array"):
        fit_threshold(NearestNeighbour(), x, LABELS, refit=lambda keep: (x[keep][0], lambda q: q))
    with pytest.raises(ValueError, match=r"^refit queries: expected a \(M, D\) array with D=8"):
        fit_threshold(
            NearestNeighbour(), x, LABELS, refit=lambda keep: (x[keep], lambda q: q[:, :4])
        )
    with pytest.raises(TypeError) as error:
        fit_threshold(NearestNeighbour(), x, LABELS, refit=3)
    assert str(error.value) == "refit: expected a callable or None, got int"


def test_views_of_raw_descriptors_are_not_checked_against_the_refitted_dimension():
    x, views, view_labels, _ = _collection(7)
    fit = fit_threshold(
        NearestNeighbour(),
        x,
        LABELS,
        views=views,
        view_labels=view_labels,
        distractors=views,
        refit=lambda keep: (x[keep][:, :6], lambda q: q[:, :6]),
    )
    assert fit.known["views"] == 4 and fit.unknown["distractors"] == 4


def test_messages_name_the_argument_and_what_was_expected():
    x, views, view_labels, _ = _collection(8)
    nn = NearestNeighbour()
    cases = [
        ({"target_far": 1.0}, "target_far: expected a number in [0, 1), got 1.0"),
        ({"views": views}, "views and view_labels: give both or neither"),
        ({"view_labels": view_labels}, "views and view_labels: give both or neither"),
        (
            {"views": views, "view_labels": view_labels[:3]},
            "view_labels: expected 4 int64 instance codes, one per view",
        ),
        (
            {"views": views, "view_labels": view_labels.astype(np.float64)},
            "view_labels: expected 4 int64 instance codes, one per view",
        ),
        (
            {"views": views, "view_labels": np.array([0, 1, 2, 5])},
            "view_labels: every view must belong to an instance of the collection",
        ),
        (
            {"views": views, "view_labels": np.array([0, 1, 2, -1])},
            "view_labels: every view must belong to an instance of the collection",
        ),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError) as error:
            fit_threshold(nn, x, LABELS, **kwargs)
        assert str(error.value) == message, kwargs
    with pytest.raises(ValueError) as error:
        fit_threshold(nn, x[:1], [0])
    assert str(error.value) == (
        "cannot fit a threshold: the collection has one instance and no distractors were "
        "given, so there is no unknown query"
    )


def test_a_view_of_an_instance_without_references_is_refused():
    x, views, _, _ = _collection(9)
    labels = np.where(LABELS == 2, 4, LABELS)  # code 2 has no reference now
    with pytest.raises(ValueError, match="every view must belong"):
        fit_threshold(NearestNeighbour(), x, labels, views=views, view_labels=[0, 1, 2, 3])
    fit = fit_threshold(NearestNeighbour(), x, labels, views=views, view_labels=[0, 1, 3, 4])
    assert fit.known["views"] == 4


def test_unsigned_view_labels_and_smallest_fold_counts_are_accepted():
    x, views, view_labels, _ = _collection(10)
    fit = fit_threshold(
        NearestNeighbour(),
        x,
        LABELS,
        views=views,
        view_labels=view_labels.astype(np.uint8),
        instance_folds=2,
        max_held_out=1,
    )
    assert fit.known == {"leave_one_out": 4, "views": 4}


def test_two_instances_are_enough_for_unknown_queries():
    x, *_ = _collection(11)
    fit = fit_threshold(NearestNeighbour(), x[:2], [0, 1])
    assert fit.unknown == {"leave_instance_out": 2, "distractors": 0}
    assert fit.known == {"leave_one_out": 0, "views": 0} and fit.frr is None
    assert fit.misidentified == 0


def test_threshold_for_far_rounds_the_allowance_down_only_past_float_error():
    scores = np.linspace(0.0, 0.99, 100, dtype=np.float32)
    # 0.29 * 100 is 28.999999999999996 in floating point: 29 may pass.
    assert (scores >= threshold_for_far(scores, 0.29)).sum() == 29
    assert (scores >= threshold_for_far(scores, 0.295)).sum() == 29
    assert threshold_for_far(scores, 1.0) == 0.0
    assert threshold_for_far([0.25, 0.75], 0.5) == np.nextafter(np.float32(0.25), np.float32(1))
    # float64 scores are compared as float32: just above 0.3 in float32.
    assert threshold_for_far(np.array([0.3, 0.1]), 0.5) == np.nextafter(
        np.float32(0.1), np.float32(1)
    )
    assert threshold_for_far(np.array([0.3, 0.1]), 0.0) == float(
        np.nextafter(np.float32(0.3), np.float32(1))
    )


def test_reject_keeps_an_answer_at_the_threshold_and_pins_its_messages():
    p = Prediction([2, 5], [0.5, 0.4999], [[2, 1], [5, -1]], [[0.5, 0.1], [0.4999, -np.inf]])
    r = reject(p, 0.5)
    assert r.labels.tolist() == [2, -1]
    np.testing.assert_array_equal(r.ranked_scores, p.ranked_scores)
    with pytest.raises(TypeError) as error:
        reject([2, 5], 0.5)
    assert str(error.value) == "prediction: expected a pyinstance.classify.Prediction, got list"
    with pytest.raises(ValueError, match=r"^threshold: expected a number in \[0, 1\]"):
        reject(p, 1.01)


class TableScorer:
    """A pair scorer whose probability is a fixed number per reference row."""

    recipe = None

    def __init__(self, x, probability, k):
        self.x, self.probability, self.k = x, probability, k

    def score(self, queries, candidates):
        rows = [_rows_of(self.x, row) for row in candidates]
        return np.array([[self.probability[r] for r in row] for row in rows], np.float32)


def test_a_reranker_sets_the_confidence_the_threshold_is_fitted_on():
    x, views, view_labels, distractors = _collection(12)
    probability = np.linspace(0.05, 0.95, LABELS.size)[np.random.default_rng(0).permutation(13)]
    recording = Recording(NearestNeighbour())
    fit = fit_threshold(
        recording,
        x,
        LABELS,
        views=views,
        view_labels=view_labels,
        distractors=distractors,
        instance_folds=None,
        target_far=0.2,
        reranker=TableScorer(x, probability, k=3),
    )
    searches = recording.searches
    # The re-ranker's k (3) sets how many neighbours are searched; its answer is the best
    # of the first 3 candidates' probabilities (rows are the collection's, row 6 ignored).
    assert {s["neighbours"].scores.shape[1] for s in searches} == {3}
    confidence = [
        probability[s["neighbours"].rows[:, :3]].max(axis=1).astype(np.float32) for s in searches
    ]
    n_known = 2  # the two leave-one-out folds come first, views and distractors last
    unknown = np.concatenate(confidence[n_known:-2] + confidence[-1:])
    known = np.concatenate(confidence[:n_known] + confidence[-2:-1])
    assert fit.threshold == threshold_for_far(unknown, 0.2)
    assert fit.far == pytest.approx((unknown >= fit.threshold).mean())
    assert fit.frr == pytest.approx((known < fit.threshold).mean())


def test_the_target_far_above_one_is_refused_by_the_range_check():
    x, *_ = _collection(13)
    with pytest.raises(ValueError) as error:
        fit_threshold(NearestNeighbour(), x, LABELS, target_far=1.5)
    assert str(error.value) == "target_far: expected a number in [0, 1], got 1.5"


def test_confidences_of_exactly_one_count_at_a_threshold_of_one():
    # Instance 0: two identical references (known, confidence 1); instance 1 and 2 share a
    # descriptor (unknown, confidence 1); instance 3 is apart.
    eye = np.eye(4, dtype=np.float32)
    x = eye[[0, 0, 1, 1, 2, 3]]
    labels = [0, 0, 1, 2, 2, 3]
    fit = fit_threshold(NearestNeighbour(), x, labels, target_far=0.0, instance_folds=None)
    # Unknown: each reference without its instance: rows 2 and 3 (1.0 each), the rest 0.
    assert fit.threshold == 1.0
    assert fit.far == pytest.approx(2 / 6)
    # Known: rows 0 and 1 (1.0, right) and rows 3, 4 (instance 2: row 3 finds row 2 of
    # instance 1 at 1.0, wrong; row 4 finds nothing alike).
    assert fit.known == {"leave_one_out": 4, "views": 0}
    assert fit.frr == pytest.approx(1 / 4) and fit.misidentified == 1


def test_the_fit_is_reproducible():
    rng = np.random.default_rng(14)
    labels = np.repeat(np.arange(24), 2)
    x = _unit(rng, 48)
    first = Recording(NearestNeighbour())
    second = Recording(NearestNeighbour())
    fits = [fit_threshold(r, x, labels, instance_folds=3, target_far=0.1) for r in (first, second)]
    assert fits[0] == fits[1]
    for a, b in zip(first.searches, second.searches, strict=True):
        np.testing.assert_array_equal(a["queries"], b["queries"])


def test_defaults_hold_out_five_per_instance_in_twenty_instance_groups():
    rng = np.random.default_rng(15)
    # 24 instances: instance 0 with 7 references, 1-3 with 2, the rest with one.
    labels = np.concatenate([np.zeros(7, int), np.repeat([1, 2, 3], 2), np.arange(4, 24)])
    x = _unit(rng, labels.size, dim=16)
    recording = Recording(NearestNeighbour())
    fit = fit_threshold(recording, x, labels)
    # Leave one out: folds 0 and 1 hold one reference of instances 0-3, folds 2-4 one of
    # instance 0 (its sixth and seventh references are never held out).
    assert fit.known == {"leave_one_out": 4 + 4 + 1 + 1 + 1, "views": 0}
    assert [len(s["queries"]) for s in recording.searches[:5]] == [4, 4, 1, 1, 1]
    # Unknown: 24 instances in 20 groups, each group searched once.
    assert len(recording.searches) == 5 + 20
    assert fit.unknown == {"leave_instance_out": labels.size, "distractors": 0}
    assert fit.target_far == 0.01


def test_float64_collections_are_searched_as_float32():
    x, views, view_labels, _ = _collection(16)
    recording = Recording(NearestNeighbour())
    fit = fit_threshold(
        recording, x.astype(np.float64), LABELS, views=views, view_labels=view_labels
    )
    assert {r.dtype for r, _ in recording.fits} == {np.dtype(np.float32)}
    assert {s["queries"].dtype for s in recording.searches} == {np.dtype(np.float32)}
    assert fit == fit_threshold(NearestNeighbour(), x, LABELS, views=views, view_labels=view_labels)


def test_count_arguments_are_named_in_their_messages():
    x, *_ = _collection(17)
    for kwargs, message in (
        ({"instance_folds": 1}, "instance_folds: expected an integer >= 2, got 1"),
        ({"max_held_out": 0}, "max_held_out: expected an integer >= 1, got 0"),
    ):
        with pytest.raises(ValueError) as error:
            fit_threshold(NearestNeighbour(), x, LABELS, **kwargs)
        assert str(error.value) == message


def test_distractors_of_another_dimension_are_refused():
    x, *_ = _collection(18)
    with pytest.raises(ValueError) as error:
        fit_threshold(NearestNeighbour(), x, LABELS, distractors=np.ones((2, 4), np.float32))
    assert str(error.value) == "distractors: expected a (M, D) array with D=8, got shape (2, 4)"
