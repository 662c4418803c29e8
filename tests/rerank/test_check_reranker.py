"""check_reranker accepts re-rankers honouring the contract and names each broken part."""

from __future__ import annotations

import numpy as np
import pytest

from pyinstance import testing
from pyinstance.index import DEFAULT_RECIPE
from pyinstance.testing import ContractError


class Cosine:
    """A recipe-free re-ranker: the best window's similarity mapped to [0, 1]."""

    k = 3
    recipe = None

    def score(self, queries, candidates):
        queries = np.asarray(queries, dtype=np.float32)
        candidates = np.asarray(candidates, dtype=np.float32)
        if queries.ndim == 2:
            queries = queries[:, None]
        if not (np.isfinite(queries).all() and np.isfinite(candidates).all()):
            raise ValueError("NaN")
        if queries.shape[-1] != candidates.shape[-1]:
            raise ValueError("sizes differ")
        return (np.einsum("qrd,qkd->qkr", queries, candidates).max(axis=2) + 1) / 2


def test_a_good_reranker_passes():
    testing.check_reranker(Cosine())


def broken(**overrides):
    reranker = Cosine()
    for name, value in overrides.items():
        setattr(reranker, name, value)
    return reranker


@pytest.mark.parametrize(
    ("reranker", "message"),
    [
        (broken(k=0), "^reranker must have a positive int attribute 'k', got 0"),
        (broken(k=True), "^reranker must have a positive int attribute 'k', got True"),
        (broken(recipe={"backbone": "x"}), "reranker.recipe: not a valid recipe dict"),
        (broken(score=None), "^reranker must have a score\\(\\) method$"),
        (broken(score=lambda q, c: np.zeros((1, 1))), "must return \\(3, 3\\) float"),
        (
            broken(score=lambda q, c: np.ones(np.shape(c)[:2]) * 2),
            "^score\\(\\) must return probabilities in \\[0, 1\\] \\(got NaN or values beyond\\)$",
        ),
        (
            broken(score=lambda q, c: np.random.default_rng().random(np.shape(c)[:2])),
            "^score\\(\\) must be deterministic \\(the same pairs gave other probabilities\\)$",
        ),
        (
            broken(score=lambda q, c: np.full(np.shape(c)[:2], 1 / len(c))),
            "^score\\(\\) must score each query on its own",
        ),
        (
            broken(score=lambda q, c: np.tile(np.linspace(0, 1, np.shape(c)[1]), (len(c), 1))),
            "^score\\(\\) must not depend on the candidates' order",
        ),
        (
            broken(
                score=lambda q, c: (
                    np.zeros(np.shape(c)[:2]) if np.ndim(q) == 3 else np.ones(np.shape(c)[:2])
                )
            ),
            "^score\\(\\) must take Q×D queries as Q×1×D$",
        ),
        (
            broken(score=lambda q, c: np.zeros(np.shape(c)[:2])),
            "^score\\(\\) accepted NaN queries without an error$",
        ),
    ],
)
def test_each_broken_part_is_named(reranker, message):
    with pytest.raises(ContractError, match=message):
        testing.check_reranker(reranker)


def test_nan_candidates_and_the_recipe_size_are_checked():
    def lenient_on_candidates(queries, candidates):
        if not np.isfinite(queries).all():
            raise ValueError("NaN")
        return np.full(np.shape(candidates)[:2], 0.5)

    with pytest.raises(
        ContractError, match=r"^score\(\) accepted NaN candidates without an error$"
    ):
        testing.check_reranker(broken(score=lenient_on_candidates))

    recipe = DEFAULT_RECIPE.with_(dim=12).to_dict()
    with pytest.raises(
        ContractError, match="accepted descriptors of size 11 \\(its recipe's is 12\\)"
    ):
        testing.check_reranker(broken(recipe=recipe))  # Cosine takes any size
    testing.check_reranker(broken(recipe=None), dim=12)  # recipe-free: any size is fine


def test_a_reranker_without_a_recipe_attribute_is_refused():
    class NoRecipe:
        k = 2

        def score(self, queries, candidates):
            return np.zeros(np.shape(candidates)[:2])

    with pytest.raises(
        ContractError, match=r"^reranker must have a recipe attribute \(None: any\)$"
    ):
        testing.check_reranker(NoRecipe())


def test_a_reranker_without_a_score_attribute_is_refused():
    class NoScore:
        k = 2
        recipe = None

    with pytest.raises(ContractError, match=r"^reranker must have a score\(\) method$"):
        testing.check_reranker(NoScore())


class Recording(Cosine):
    """Cosine, noting the shape and row norms of every query and candidate array it scores."""

    def __init__(self):
        self.shapes = ({}, {})  # of queries, of candidates (dicts keep the order)
        self.norms = []

    def score(self, queries, candidates):
        for seen, array in zip(self.shapes, (queries, candidates), strict=True):
            array = np.asarray(array)
            seen[array.shape] = None
            if np.isfinite(array).all():
                self.norms.append(np.linalg.norm(array, axis=-1))
        return super().score(queries, candidates)


def test_check_reranker_probes_what_its_docstring_promises():
    reranker = Recording()
    testing.check_reranker(reranker)
    # 3 queries of R = 1 or 4 windows or Q×D, k = 3 or 1 candidates, D = 32 by default
    queries = {(3, 1, 32), (3, 4, 32), (3, 32), (1, 1, 32), (1, 4, 32)}
    candidates = {(3, 3, 32), (3, 1, 32), (1, 3, 32)}
    assert set(reranker.shapes[0]) == queries
    assert set(reranker.shapes[1]) == candidates
    assert {shape[-1] for seen in reranker.shapes for shape in seen} == {32}
    # unit descriptors, as an index returns them
    assert np.allclose(np.concatenate([n.ravel() for n in reranker.norms]), 1.0, atol=1e-5)


class NearlyExact(Cosine):
    """Scores near 1e-3 that move by less than the check's tolerances: 5e-7 from call to
    call (1e-6 allowed), 5e-6 more for a query alone and along the candidates (1e-5)."""

    calls = 0

    def score(self, queries, candidates):
        # arrays only (None has no shape): read before anything else
        alone = 5e-6 * (queries.shape[0] == 1)
        along = 5e-6 * np.arange(candidates.shape[1]) / candidates.shape[1]
        self.calls += 1
        base = 1e-3 * super().score(queries, candidates)
        return base + 5e-7 * (self.calls % 2) + alone + along[None, :]


def test_a_reranker_within_the_tolerances_passes():
    testing.check_reranker(NearlyExact())
