"""The Reranking stage against a brute-force computation of what it must answer."""

from __future__ import annotations

import numpy as np
import pytest

from pyinstance.classify import (
    KnnVote,
    NearestNeighbour,
    PairScorer,
    Prediction,
    Reranking,
    classify,
)
from pyinstance.index import Neighbours

DIM = 8


class BestWindowScorer:
    """Probability = the best window's similarity, clipped to [0, 1] (recipe-free)."""

    recipe = None

    def __init__(self, k: int = 3):
        self.k = k
        self.calls: list[tuple[int, ...]] = []

    def score(self, queries, candidates):
        self.calls.append(candidates.shape)
        return np.clip(np.einsum("qrd,qkd->qkr", queries, candidates).max(axis=2), 0.0, 1.0)


def unit(rng: np.random.Generator, *shape: int) -> np.ndarray:
    rows = rng.normal(size=(*shape, DIM)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=-1, keepdims=True)


def neighbours_of(
    queries: np.ndarray, refs: np.ndarray, codes: np.ndarray, k: int, rows: np.ndarray
) -> Neighbours:
    """Exact k-NN by the best window, in plain numpy, padded past the references."""
    similarity = np.einsum("qrd,nd->qnr", queries, refs).max(axis=2)
    order = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
    found = order.shape[1]
    scores = np.full((len(queries), k), -np.inf, np.float32)
    out_rows = np.full((len(queries), k), -1, np.int64)
    out_codes = np.full((len(queries), k), -1, np.int64)
    scores[:, :found] = np.take_along_axis(similarity, order, axis=1)
    out_rows[:, :found] = rows[order]
    out_codes[:, :found] = codes[order]
    names = tuple(f"i{c}" for c in range(int(codes.max()) + 1))
    return Neighbours(scores, out_rows, out_codes, names)


@pytest.fixture
def collection() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    refs = unit(rng, 12)
    codes = np.arange(12) % 5
    rows = np.arange(12) * 10 + 7  # stable ids, not positions
    queries = unit(rng, 4, 3)
    return refs, codes, rows, queries


def expected_answer(queries, refs, codes, rows, neighbours, k):
    """Per query: (instance, confidence, ranked instances) computed pair by pair."""
    answers = []
    position = {int(r): i for i, r in enumerate(rows)}
    for q in range(len(queries)):
        best: dict[int, float] = {}
        for slot in range(min(k, neighbours.k)):
            row = int(neighbours.rows[q, slot])
            if row < 0:
                continue
            ref = refs[position[row]]
            p = max(0.0, min(1.0, max(float(w @ ref) for w in queries[q])))
            code = int(neighbours.labels[q, slot])
            best[code] = max(best.get(code, 0.0), p)
        ranked = sorted(best, key=lambda c: -best[c])
        answers.append((ranked[0], best[ranked[0]], ranked) if ranked else (-1, 0.0, []))
    return answers


def test_the_most_probable_candidate_wins(collection):
    refs, codes, rows, queries = collection
    neighbours = neighbours_of(queries, refs, codes, 6, rows)
    scorer = BestWindowScorer(k=4)
    assert isinstance(scorer, PairScorer)
    stage = Reranking(scorer, refs, rows)
    prediction = classify(neighbours, queries, KnnVote(k=6).fit(refs, codes), reranker=stage)
    for q, (label, confidence, ranked) in enumerate(
        expected_answer(queries, refs, codes, rows, neighbours, 4)
    ):
        assert prediction.labels[q] == label
        assert prediction.confidence[q] == pytest.approx(confidence, abs=1e-6)
        assert prediction.ranked[q, : len(ranked)].tolist() == ranked
    assert scorer.calls == [(4, 4, DIM)]  # only the first k neighbours are scored


def test_reranked_confidence_is_what_the_threshold_rejects(collection):
    refs, codes, rows, queries = collection
    neighbours = neighbours_of(queries, refs, codes, 5, rows)
    stage = Reranking(BestWindowScorer(k=3), refs, rows)
    classifier = NearestNeighbour(k=5).fit(refs, codes)
    free = classify(neighbours, queries, classifier, reranker=stage)
    threshold = float(np.median(free.confidence))
    rejected = classify(neighbours, queries, classifier, threshold=threshold, reranker=stage)
    assert (
        rejected.labels.tolist() == np.where(free.confidence >= threshold, free.labels, -1).tolist()
    )


def test_k_larger_than_the_candidates(collection):
    refs, codes, rows, queries = collection
    few = neighbours_of(queries, refs[:2], codes[:2], 5, rows[:2])  # 2 references, 3 padded
    stage = Reranking(BestWindowScorer(k=10), refs, rows)
    prediction = stage.rerank(
        queries, few, NearestNeighbour(k=5).fit(refs, codes).predict(few, queries)
    )
    for q, (label, confidence, _) in enumerate(
        expected_answer(queries, refs, codes, rows, few, 10)
    ):
        assert prediction.labels[q] == label
        assert prediction.confidence[q] == pytest.approx(confidence, abs=1e-6)


def test_a_query_without_candidates_is_unknown_with_confidence_zero(collection):
    refs, codes, rows, queries = collection
    neighbours = neighbours_of(queries, refs, codes, 3, rows)
    empty_rows = neighbours.rows.copy()
    empty_rows[1] = -1
    empty_codes = neighbours.labels.copy()
    empty_codes[1] = -1
    scores = neighbours.scores.copy()
    scores[1] = -np.inf
    holed = Neighbours(scores, empty_rows, empty_codes, neighbours.instances)
    classifier = NearestNeighbour(k=3).fit(refs, codes)
    prediction = Reranking(BestWindowScorer(), refs, rows).rerank(
        queries, holed, classifier.predict(holed, queries)
    )
    assert prediction.labels[1] == -1 and prediction.confidence[1] == 0.0
    assert (prediction.labels[[0, 2, 3]] >= 0).all()

    nothing = Neighbours(
        np.full((2, 3), -np.inf, np.float32),
        np.full((2, 3), -1),
        np.full((2, 3), -1),
        neighbours.instances,
    )
    prediction = Reranking(BestWindowScorer(), refs, rows).rerank(
        queries[:2], nothing, classifier.predict(nothing, queries[:2])
    )
    assert prediction.labels.tolist() == [-1, -1]
    assert prediction.confidence.tolist() == [0.0, 0.0]


def test_reorder_sorts_the_first_k_by_probability_and_keeps_the_rest(collection):
    refs, codes, rows, queries = collection
    neighbours = neighbours_of(queries, refs, codes, 8, rows)
    stage = Reranking(BestWindowScorer(k=3), refs, rows)
    reordered = stage.reorder(queries, neighbours)
    position = {int(r): i for i, r in enumerate(rows)}
    for q in range(len(queries)):
        head = neighbours.rows[q, :3].tolist()
        p = {r: max(float(w @ refs[position[r]]) for w in queries[q]) for r in head}
        assert reordered.rows[q, :3].tolist() == sorted(head, key=lambda r: -p[r])
        assert reordered.rows[q, 3:].tolist() == neighbours.rows[q, 3:].tolist()
        for slot in range(8):  # rows keep their scores and labels
            source = neighbours.rows[q].tolist().index(reordered.rows[q, slot])
            assert reordered.scores[q, slot] == neighbours.scores[q, source]
            assert reordered.labels[q, slot] == neighbours.labels[q, source]


class Broken(BestWindowScorer):
    def __init__(self, answer):
        super().__init__()
        self.answer = answer

    def score(self, queries, candidates):
        return self.answer(queries, candidates)


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (lambda q, c: np.full(c.shape[:2], np.nan, np.float32), "probabilities in \\[0, 1\\]"),
        (lambda q, c: np.full(c.shape[:2], 1.5, np.float32), "probabilities in \\[0, 1\\]"),
        (lambda q, c: np.zeros((c.shape[0], 1), np.float32), "expected \\(4, 3\\) float"),
        (lambda q, c: np.zeros(c.shape[:2], np.int64), "expected \\(4, 3\\) float"),
    ],
)
def test_a_misbehaving_scorer_is_refused(collection, answer, message):
    refs, codes, rows, queries = collection
    neighbours = neighbours_of(queries, refs, codes, 3, rows)
    prediction = NearestNeighbour(k=3).fit(refs, codes).predict(neighbours, queries)
    with pytest.raises(ValueError, match=message):
        Reranking(Broken(answer), refs, rows).rerank(queries, neighbours, prediction)


def test_bad_inputs_are_refused(collection):
    refs, codes, rows, queries = collection
    neighbours = neighbours_of(queries, refs, codes, 3, rows)
    prediction = NearestNeighbour(k=3).fit(refs, codes).predict(neighbours, queries)
    stage = Reranking(BestWindowScorer(), refs, rows)
    poisoned = queries.copy()
    poisoned[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="queries: NaN"):
        stage.rerank(poisoned, neighbours, prediction)
    with pytest.raises(ValueError, match="queries: expected 4 rows"):
        stage.rerank(queries[:2], neighbours, prediction)
    with pytest.raises(
        ValueError,
        match=r"queries: expected a \(Q, D\) or \(Q, R, D\) array with D=8, got shape \(4, 3, 7\)",
    ):
        stage.rerank(queries[..., :7], neighbours, prediction)
    with pytest.raises(ValueError, match="prediction: expected a Prediction for the 4"):
        stage.rerank(queries, neighbours, "nope")
    with pytest.raises(TypeError, match="neighbours: expected"):
        stage.reorder(queries, "nope")
    strangers = Neighbours(
        neighbours.scores, neighbours.rows + 1, neighbours.labels, neighbours.instances
    )
    with pytest.raises(ValueError, match="are not among the references"):
        stage.rerank(queries, strangers, prediction)
    bad_refs = refs.copy()
    bad_refs[2, 1] = np.inf
    with pytest.raises(ValueError, match="references: NaN or infinite"):
        Reranking(BestWindowScorer(), bad_refs, rows)
    with pytest.raises(ValueError, match="references: empty"):
        Reranking(BestWindowScorer(), refs[:0], rows[:0])
    with pytest.raises(ValueError, match="rows: expected 12 integer row ids"):
        Reranking(BestWindowScorer(), refs, rows[:3])
    with pytest.raises(ValueError, match="rows: row ids must be unique"):
        Reranking(BestWindowScorer(), refs, np.zeros(12, np.int64))
    with pytest.raises(TypeError, match="expected an object with k, recipe and score"):
        Reranking(object(), refs, rows)
    with pytest.raises(ValueError, match="reranker.k: expected an integer >= 1"):
        Reranking(BestWindowScorer(k=0), refs, rows)


def test_prediction_stays_valid_for_the_pipeline(collection):
    refs, codes, rows, queries = collection
    neighbours = neighbours_of(queries, refs, codes, 6, rows)
    prediction = Reranking(BestWindowScorer(k=6), refs, rows).rerank(
        queries, neighbours, KnnVote(k=6).fit(refs, codes).predict(neighbours, queries)
    )
    assert isinstance(prediction, Prediction)
    real = prediction.ranked >= 0
    assert (
        np.diff(np.where(real, prediction.ranked_scores, -np.inf), axis=1)[real[:, 1:]] <= 0
    ).all()


def test_tensors_that_require_grad_are_taken(collection):
    torch = pytest.importorskip("torch")
    refs, codes, rows, queries = collection
    neighbours = neighbours_of(queries, refs, codes, 3, rows)
    prediction = NearestNeighbour(k=3).fit(refs, codes).predict(neighbours, queries)
    expected = Reranking(BestWindowScorer(), refs, rows).rerank(queries, neighbours, prediction)
    stage = Reranking(BestWindowScorer(), torch.tensor(refs, requires_grad=True), rows)
    got = stage.rerank(torch.tensor(queries, requires_grad=True), neighbours, prediction)
    assert got.labels.tolist() == expected.labels.tolist()
    assert np.array_equal(got.confidence, expected.confidence)


def test_the_accepted_dimensions_are_listed(collection):
    refs, codes, rows, queries = collection
    neighbours = neighbours_of(queries, refs, codes, 3, rows)
    prediction = NearestNeighbour(k=3).fit(refs, codes).predict(neighbours, queries)
    stage = Reranking(BestWindowScorer(), refs, rows)
    with pytest.raises(
        ValueError,
        match=r"^queries: expected a \(Q, D\) or \(Q, R, D\) array with D=8, got shape \(4, 3, 1, 8\)$",
    ):
        stage.rerank(queries[:, :, None, :], neighbours, prediction)
    with pytest.raises(
        ValueError, match=r"^references: expected a \(N, D\) array, got shape \(12,\)$"
    ):
        Reranking(BestWindowScorer(), refs[:, 0], rows)
