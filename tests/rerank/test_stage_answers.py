"""The Reranking stage on hand-made neighbours: every field of its answer worked out by hand.

The scorer here answers a fixed probability per candidate row, so each expected ranked
list, score and confidence below follows from the class doc alone.
"""

from __future__ import annotations

import numpy as np
import pytest

from pyinstance.classify import Prediction, Reranking
from pyinstance.index import Neighbours

DIM = 4


class TableScorer:
    """Probability of a candidate = a fixed number per reference (found by its vector)."""

    recipe = None

    def __init__(self, references, probability, k=3, as_tensor=False):
        self.k = k
        self.references = np.asarray(references)
        self.probability = probability
        self.as_tensor = as_tensor
        self.calls = []

    def score(self, queries, candidates):
        self.calls.append((queries.copy(), candidates.copy()))
        found = [
            [int(np.flatnonzero((self.references == c).all(axis=1))[0]) for c in row]
            for row in candidates
        ]
        table = np.array([[self.probability[i] for i in row] for row in found], np.float64)
        if self.as_tensor:
            import torch

            return torch.tensor(table, requires_grad=True)
        return table

    def __repr__(self):
        return "TableScorer()"


def _references():
    """Six distinct reference vectors (row ids 10, 20, ..., 60)."""
    return np.eye(6, DIM, dtype=np.float32) + np.arange(6, dtype=np.float32)[:, None] / 10


ROWS = np.array([10, 20, 30, 40, 50, 60])
CODES = np.array([0, 1, 1, 2, 3, 0])  # instance of each reference
PROBABILITY = [0.2, 0.9, 0.4, 0.0, 0.7, 0.6]  # per reference


def _neighbours(positions):
    """Neighbours listing the references at ``positions`` (-1: padded) per query."""
    positions = np.asarray(positions)
    real = positions >= 0
    scores = np.where(real, 1.0 - 0.1 * np.arange(positions.shape[1]), -np.inf)
    rows = np.where(real, ROWS[positions], -1)
    codes = np.where(real, CODES[positions], -1)
    return Neighbours(scores.astype(np.float32), rows, codes, ("a", "b", "c", "d"))


def _prediction(ranked):
    ranked = np.asarray(ranked)
    scores = np.where(ranked >= 0, 0.5, -np.inf)
    return Prediction(ranked[:, 0], np.full(len(ranked), 0.5), ranked, scores)


def test_instances_are_ranked_by_their_best_candidate_then_the_classifier_rest():
    refs = _references()
    stage = Reranking(TableScorer(refs, PROBABILITY, k=3), refs, ROWS)
    neighbours = _neighbours([[0, 2, 1, 4], [3, 5, -1, -1], [4, -1, -1, -1]])
    # The classifier ranked instances the first 3 neighbours miss (3 and 2; 0 and 1): they
    # follow with score 0.
    prediction = _prediction([[0, 1, 3, 2], [2, 0, 3, -1], [3, 0, 1, -1]])
    answer = stage.rerank(np.zeros((3, DIM), np.float32) + 0.1, neighbours, prediction)
    # Query 0 scores refs 0 (inst 0, 0.2), 2 (inst 1, 0.4), 1 (inst 1, 0.9): 1 then 0;
    # query 1: refs 3 (inst 2, 0.0) and 5 (inst 0, 0.6); query 2: ref 4 (inst 3, 0.7).
    assert answer.labels.tolist() == [1, 0, 3]
    np.testing.assert_allclose(answer.confidence, [0.9, 0.6, 0.7], atol=1e-6)
    assert answer.ranked.tolist() == [[1, 0, 3, 2], [0, 2, 3, -1], [3, 0, 1, -1]]
    expected_scores = [[0.9, 0.2, 0.0, 0.0], [0.6, 0.0, 0.0, -np.inf], [0.7, 0.0, 0.0, -np.inf]]
    np.testing.assert_allclose(answer.ranked_scores, expected_scores, atol=1e-6)
    assert answer.ranked_scores.dtype == np.float32 and answer.ranked.dtype == np.int64


def test_a_candidate_of_probability_zero_still_answers():
    refs = _references()
    stage = Reranking(TableScorer(refs, PROBABILITY, k=2), refs, ROWS)
    answer = stage.rerank(
        np.ones((1, DIM), np.float32), _neighbours([[3, -1]]), _prediction([[2, -1]])
    )
    assert answer.labels.tolist() == [2] and answer.confidence.tolist() == [0.0]
    assert answer.ranked.tolist() == [[2]] and answer.ranked_scores.tolist() == [[0.0]]


def test_equal_probabilities_keep_the_neighbour_order():
    refs = _references()
    stage = Reranking(TableScorer(refs, [0.5] * 6, k=4), refs, ROWS)
    answer = stage.rerank(
        np.ones((2, DIM), np.float32),
        _neighbours([[4, 0, 3, 1], [1, 3, 0, 4]]),
        _prediction([[0, -1, -1, -1], [0, -1, -1, -1]]),
    )
    assert answer.ranked.tolist() == [[3, 0, 2, 1], [1, 2, 0, 3]]


def test_queries_without_candidates_are_unknown_and_the_ranked_width_is_at_least_one():
    refs = _references()
    scorer = TableScorer(refs, PROBABILITY, k=3)
    stage = Reranking(scorer, refs, ROWS)
    answer = stage.rerank(
        np.ones((2, DIM), np.float32), _neighbours([[-1, -1], [-1, -1]]), _prediction([[-1], [-1]])
    )
    assert answer.labels.tolist() == [-1, -1] and answer.confidence.tolist() == [0.0, 0.0]
    assert answer.ranked.tolist() == [[-1], [-1]]
    assert answer.ranked_scores.tolist() == [[-np.inf], [-np.inf]]
    assert scorer.calls == []  # nothing to score


def test_probabilities_score_padded_slots_with_the_first_candidate_and_report_zero():
    refs = _references()
    scorer = TableScorer(refs, PROBABILITY, k=4)
    stage = Reranking(scorer, refs, ROWS)
    neighbours = _neighbours([[1, 4, 2, 0, 5], [2, -1, -1, -1, -1], [-1, -1, -1, -1, -1]])
    queries = np.arange(3 * DIM, dtype=np.float32).reshape(3, DIM)
    probabilities, real = stage.probabilities(queries, neighbours)
    assert real.tolist() == [[True] * 4, [True, False, False, False], [False] * 4]
    np.testing.assert_allclose(
        probabilities, [[0.9, 0.7, 0.4, 0.2], [0.4, 0, 0, 0], [0, 0, 0, 0]], atol=1e-6
    )
    assert probabilities.dtype == np.float32
    ((windows, candidates),) = scorer.calls
    np.testing.assert_array_equal(windows, queries[:, None, :])  # Q×D taken as Q×1×D
    np.testing.assert_array_equal(candidates[0], refs[[1, 4, 2, 0]])
    np.testing.assert_array_equal(candidates[1], refs[[2, 2, 2, 2]])
    np.testing.assert_array_equal(candidates[2], refs[[0, 0, 0, 0]])


def test_only_as_many_slots_as_the_widest_row_has_real_neighbours_are_scored():
    refs = _references()
    scorer = TableScorer(refs, PROBABILITY, k=5)
    stage = Reranking(scorer, refs, ROWS)
    probabilities, real = stage.probabilities(
        np.ones((2, 2, DIM), np.float32), _neighbours([[0, 1, -1, -1], [2, -1, -1, -1]])
    )
    ((windows, candidates),) = scorer.calls
    assert windows.shape == (2, 2, DIM) and candidates.shape == (2, 2, DIM)
    assert probabilities.shape == (2, 4) and real.shape == (2, 4)
    np.testing.assert_allclose(probabilities, [[0.2, 0.9, 0, 0], [0.4, 0, 0, 0]], atol=1e-6)


def test_scores_from_a_tensor_that_requires_grad_are_taken():
    refs = _references()
    stage = Reranking(TableScorer(refs, PROBABILITY, k=2, as_tensor=True), refs, ROWS)
    probabilities, _ = stage.probabilities(np.ones((1, DIM), np.float32), _neighbours([[1, 4]]))
    np.testing.assert_allclose(probabilities, [[0.9, 0.7]], atol=1e-6)


def test_probability_bounds_are_inclusive():
    refs = _references()
    stage = Reranking(TableScorer(refs, [0.0, 1.0, 0, 0, 0, 0], k=2), refs, ROWS)
    probabilities, _ = stage.probabilities(np.ones((1, DIM), np.float32), _neighbours([[0, 1]]))
    assert probabilities.tolist() == [[0.0, 1.0]]


def test_rows_default_to_positions_and_may_be_unsigned():
    refs = _references()
    stage = Reranking(TableScorer(refs, PROBABILITY, k=2), refs)
    neighbours = Neighbours(
        np.ones((1, 2), np.float32), np.array([[4, 1]]), np.array([[3, 1]]), ("a", "b", "c", "d")
    )
    probabilities, _ = stage.probabilities(np.ones((1, DIM), np.float32), neighbours)
    np.testing.assert_allclose(probabilities, [[0.7, 0.9]], atol=1e-6)
    unsigned = Reranking(TableScorer(refs, PROBABILITY, k=2), refs, ROWS.astype(np.uint16))
    probabilities, _ = unsigned.probabilities(np.ones((1, DIM), np.float32), _neighbours([[4, 1]]))
    np.testing.assert_allclose(probabilities, [[0.7, 0.9]], atol=1e-6)


def test_rows_given_out_of_order_find_their_references():
    refs = _references()
    shuffled = np.array([3, 0, 5, 1, 4, 2])
    stage = Reranking(TableScorer(refs, PROBABILITY, k=3), refs[shuffled], ROWS[shuffled])
    probabilities, _ = stage.probabilities(np.ones((1, DIM), np.float32), _neighbours([[5, 0, 3]]))
    np.testing.assert_allclose(probabilities, [[0.6, 0.2, 0.0]], atol=1e-6)


def test_reorder_puts_padded_slots_after_the_real_ones_and_keeps_the_tail():
    refs = _references()
    stage = Reranking(TableScorer(refs, PROBABILITY, k=3), refs, ROWS)
    neighbours = _neighbours([[0, 1, 2, 5, 4], [3, 5, -1, -1, -1]])
    reordered = stage.reorder(np.ones((2, DIM), np.float32), neighbours)
    assert reordered.rows.tolist() == [[20, 30, 10, 60, 50], [60, 40, -1, -1, -1]]
    assert reordered.labels.tolist() == [[1, 1, 0, 0, 3], [0, 2, -1, -1, -1]]
    np.testing.assert_allclose(reordered.scores[0], [0.9, 0.8, 1.0, 0.7, 0.6], atol=1e-6)
    assert reordered.instances == neighbours.instances


def test_messages_name_what_was_wrong():
    refs = _references()
    scorer = TableScorer(refs, PROBABILITY, k=2)
    stage = Reranking(scorer, refs, ROWS)
    ones = np.ones((1, DIM), np.float32)
    cases = [
        (
            lambda: Reranking(object(), refs, ROWS),
            TypeError,
            "reranker: expected an object with k, recipe and score() (a re-ranker plugin's), "
            "got object",
        ),
        (
            lambda: Reranking(scorer, refs[:0], ROWS[:0]),
            ValueError,
            "references: empty collection; nothing to re-rank against",
        ),
        (
            lambda: Reranking(scorer, refs, ROWS[:4]),
            ValueError,
            "rows: expected 6 integer row ids, one per reference, got int64 (4,)",
        ),
        (
            lambda: Reranking(scorer, refs, ROWS.astype(np.float64)),
            ValueError,
            "rows: expected 6 integer row ids, one per reference, got float64 (6,)",
        ),
        (
            lambda: Reranking(scorer, refs, np.array([1, 2, 3, 4, 5, 1])),
            ValueError,
            "rows: row ids must be unique",
        ),
        (
            lambda: stage.probabilities(ones, "nope"),
            TypeError,
            "neighbours: expected a pyinstance.index.Neighbours, got str",
        ),
        (
            lambda: stage.probabilities(np.ones((2, DIM), np.float32), _neighbours([[0, 1]])),
            ValueError,
            "queries: expected 1 rows, one per neighbours row, got 2",
        ),
        (
            lambda: stage.rerank(ones, _neighbours([[0, 1]]), "nope"),
            ValueError,
            "prediction: expected a Prediction for the 1 queries, got str",
        ),
        (
            lambda: stage.rerank(ones, _neighbours([[0, 1]]), _prediction([[0], [1]])),
            ValueError,
            "prediction: expected a Prediction for the 1 queries, got Prediction",
        ),
    ]
    for call, kind, message in cases:
        with pytest.raises(kind) as error:
            call()
        assert str(error.value) == message


def test_unknown_row_ids_are_named_up_to_five():
    refs = _references()
    stage = Reranking(TableScorer(refs, PROBABILITY, k=8), refs, ROWS)
    instances = ("a", "b", "c", "d")
    for rows, named in (
        ([[5, 10, 70, 15, 25, 35, 45, 55]], "[5, 70, 15, 25, 35]"),
        ([[10, 61, -1, -1, -1, -1, -1, -1]], "[61]"),
        ([[10, 9, -1, -1, -1, -1, -1, -1]], "[9]"),
    ):
        neighbours = Neighbours(
            np.ones((1, 8), np.float32), np.array(rows), np.zeros((1, 8), np.int64), instances
        )
        with pytest.raises(ValueError) as error:
            stage.probabilities(np.ones((1, DIM), np.float32), neighbours)
        assert str(error.value) == f"neighbours.rows: row ids {named} are not among the references"


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (
            np.zeros((1, 3)),
            "reranker.score(): expected (1, 2) float probabilities, got float64 (1, 3)",
        ),
        (
            np.zeros((1, 2), np.int32),
            "reranker.score(): expected (1, 2) float probabilities, got int32 (1, 2)",
        ),
        (
            np.array([[0.5, -0.01]]),
            "reranker.score(): expected probabilities in [0, 1] (got NaN or beyond)",
        ),
        (
            np.array([[1.01, 0.5]]),
            "reranker.score(): expected probabilities in [0, 1] (got NaN or beyond)",
        ),
    ],
)
def test_a_wrong_score_is_refused_with_its_shape_and_dtype(answer, message):
    refs = _references()

    class Fixed(TableScorer):
        def score(self, queries, candidates):
            return answer

    stage = Reranking(Fixed(refs, PROBABILITY, k=2), refs, ROWS)
    with pytest.raises(ValueError) as error:
        stage.probabilities(np.ones((1, DIM), np.float32), _neighbours([[0, 1]]))
    assert str(error.value) == message


def test_repr_names_the_scorer_and_the_collection_size():
    refs = _references()
    assert repr(Reranking(TableScorer(refs, PROBABILITY), refs, ROWS)) == (
        "Reranking(TableScorer(), 6 references)"
    )


def test_a_single_candidate_is_scored():
    refs = _references()
    scorer = TableScorer(refs, PROBABILITY, k=3)
    answer = Reranking(scorer, refs, ROWS).rerank(
        np.ones((2, DIM), np.float32),
        _neighbours([[4, -1, -1], [-1, -1, -1]]),
        _prediction([[3, -1], [-1, -1]]),
    )
    assert answer.labels.tolist() == [3, -1]
    np.testing.assert_allclose(answer.confidence, [0.7, 0.0], atol=1e-6)
    assert len(scorer.calls) == 1 and scorer.calls[0][1].shape == (2, 1, DIM)


def test_no_queries_score_nothing():
    refs = _references()
    scorer = TableScorer(refs, PROBABILITY, k=3)
    empty = Neighbours(
        np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int64), np.zeros((0, 3), np.int64), ()
    )
    probabilities, real = Reranking(scorer, refs, ROWS).probabilities(
        np.zeros((0, DIM), np.float32), empty
    )
    assert probabilities.shape == (0, 3) and real.shape == (0, 3)
    assert scorer.calls == []


def test_reorder_keeps_the_neighbour_order_among_equal_probabilities():
    # 20 candidates (more than numpy sorts by insertion, where any sort would be stable):
    # every third has probability 0.5, the others 0.25.
    refs = np.eye(20, dtype=np.float32)
    rows = np.arange(20)
    probability = np.where(rows % 3 == 0, 0.5, 0.25)
    stage = Reranking(TableScorer(refs, probability, k=20), refs, rows)
    neighbours = Neighbours(
        np.linspace(1, 0, 20, dtype=np.float32)[None],
        rows[None],
        np.zeros((1, 20), np.int64),
        ("a",),
    )
    reordered = stage.reorder(np.ones((1, 20), np.float32), neighbours)
    expected = [r for r in rows if r % 3 == 0] + [r for r in rows if r % 3 != 0]
    assert reordered.rows[0].tolist() == expected


def test_row_id_zero_is_a_real_neighbour():
    refs = _references()
    stage = Reranking(TableScorer(refs, PROBABILITY, k=2), refs)  # rows 0..5
    neighbours = Neighbours(
        np.ones((1, 2), np.float32), np.array([[0, 1]]), np.array([[0, 1]]), ("a", "b")
    )
    probabilities, real = stage.probabilities(np.ones((1, DIM), np.float32), neighbours)
    assert real.tolist() == [[True, True]]
    np.testing.assert_allclose(probabilities, [[0.2, 0.9]], atol=1e-6)


def test_row_ids_beyond_float64_precision_stay_distinct():
    refs = _references()
    big = 2**53 + np.arange(6, dtype=np.int64)  # 2**53 and 2**53 + 1 are one float64
    stage = Reranking(TableScorer(refs, PROBABILITY, k=2), refs, big)
    neighbours = Neighbours(
        np.ones((1, 2), np.float32), big[None, [1, 4]], np.array([[1, 3]]), ("a", "b", "c", "d")
    )
    probabilities, _ = stage.probabilities(np.ones((1, DIM), np.float32), neighbours)
    np.testing.assert_allclose(probabilities, [[0.9, 0.7]], atol=1e-6)


def test_no_queries_give_an_empty_prediction():
    refs = _references()
    scorer = TableScorer(refs, PROBABILITY, k=3)
    stage = Reranking(scorer, refs, ROWS)
    neighbours = _neighbours(np.zeros((0, 4), np.int64))
    prediction = _prediction(np.zeros((0, 4), np.int64))
    answer = stage.rerank(np.zeros((0, DIM), np.float32), neighbours, prediction)
    assert len(answer) == 0
    assert answer.labels.shape == (0,) and answer.confidence.shape == (0,)
    assert answer.ranked.shape == (0, 1) and answer.ranked_scores.shape == (0, 1)
