"""Identifier's construction on one shared palette index: how many neighbours it searches,
the re-ranking stage it builds, the object finder and the reference records it answers
with. The index is built once for the module (the tests only read it), so that each check
costs milliseconds (these are the tests mutation testing runs first for ``__init__``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pyinstance.classify import Prediction
from pyinstance.identification import Identifier
from pyinstance.index import InstanceIndex
from pyinstance.index.recipe import Recipe
from pyinstance.rerank import RecipeMismatchError
from tests.pipeline_fakes import (
    BLUE,
    GREEN,
    RED,
    WHITE,
    YELLOW,
    palette_index,
    photo,
    solid,
    tiny_recipe,
)


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> InstanceIndex:
    """Nine live references (red 3, green 2, blue 2, white 2) whose row ids are not
    0..8: a tenth reference (instance "gone") was removed after row 1."""
    root = tmp_path_factory.mktemp("identifier")
    built = palette_index(
        root / "index",
        root / "refs",
        {
            "red": [solid(RED), solid(YELLOW), solid(RED, 24)],
            "gone": [solid(WHITE, 40)],
            "green": [solid(GREEN), solid(GREEN, 24)],
            "blue": [solid(BLUE), solid(BLUE, 24)],
            "white": [solid(WHITE), solid(WHITE, 24)],
        },
    )
    assert built.remove(instance="gone") == 1
    assert len(built) == 9 and built.rows().tolist() != list(range(9))
    yield built
    built.close()


def query() -> Any:
    """Red on the left (5 cells), green (2), blue (1): 32 × 64 pixels."""
    return photo(32, 64, ((0, 0, 40, 32), RED), ((40, 0, 56, 32), GREEN), ((56, 0, 64, 32), BLUE))


class Fixed:
    """A classifier answering ``code`` whatever it is given; records the k searched."""

    def __init__(self, code: int, k: int):
        self.code, self.k, self.seen_k = code, k, []

    def fit(self, descriptors: Any, labels: Any) -> Fixed:
        return self

    def predict(self, neighbours: Any, queries: Any) -> Prediction:
        self.seen_k.append(int(neighbours.scores.shape[1]))
        return Prediction(
            labels=np.array([self.code]),
            confidence=np.array([0.5], np.float32),
            ranked=np.array([[self.code]]),
            ranked_scores=np.array([[0.5]], np.float32),
        )


class Recording:
    """A pair scorer scoring each candidate by its dot product with the query; records the
    candidates it was given."""

    def __init__(self, k: int = 2, recipe: dict | None = None):
        self.k, self.recipe, self.seen = k, recipe, []

    def score(self, queries: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        self.seen.append(candidates.copy())
        return np.clip(np.einsum("qd,qkd->qk", queries[:, 0], candidates), 0, 1)


@pytest.mark.parametrize(
    ("classifier_k", "top_k", "reranker_k", "searched"),
    [
        (1, 1, None, 4),  # top_k × 4 neighbours per instance shown
        (6, 1, None, 6),  # the classifier's k
        (1, 1, 7, 7),  # the re-ranker's k
        (1, 1, 3, 4),
        (1, 2, None, 8),
        (1, 3, None, 9),  # 12 capped at the index's 9 references
        (20, 1, None, 9),
        (1, 1, 30, 9),
    ],
)
def test_neighbours_searched(index, classifier_k, top_k, reranker_k, searched) -> None:
    classifier = Fixed(index.instances.index("red"), classifier_k)
    reranker = False if reranker_k is None else Recording(reranker_k)
    identifier = Identifier(
        index, classifier=classifier, top_k=top_k, threshold=0, reranker=reranker
    )
    identifier.identify([query()])
    assert classifier.seen_k == [searched]


def test_the_reranking_stage_scores_the_candidates_by_row_id(index) -> None:
    scorer = Recording(k=3)
    identifier = Identifier(index, classifier="nn", threshold=0, reranker=scorer)
    assert identifier.reranker_name == "Recording"
    assert identifier.reranking.scorer is scorer and identifier.reranking.k == 3
    np.testing.assert_array_equal(identifier.reranking.references, index.descriptors())
    (answer,) = identifier.identify([query()])
    # The candidates handed to the scorer are the descriptors of the neighbours' rows.
    neighbours = index.search(index.describe_queries([query()]), identifier._k)
    by_row = dict(zip(index.rows().tolist(), index.descriptors(), strict=True))
    expected = np.stack([by_row[int(row)] for row in neighbours.rows[0, :3]])
    np.testing.assert_allclose(scorer.seen[0][0], expected, atol=1e-6)
    red = np.zeros(16, np.float32)
    red[0] = 1.0
    described = index.describe_queries([query()])[0, 0]
    assert answer.instance == "red"
    assert answer.confidence == pytest.approx(float(described @ red), abs=1e-5)


def test_a_reranker_for_the_index_recipe_is_accepted_another_refused(index) -> None:
    fitting = Recording(recipe=index.recipe.to_dict())
    assert Identifier(index, threshold=0, reranker=fitting).reranking.scorer is fitting
    other = Recording(recipe=Recipe(backbone="resnet50", head="gem", dim=32).to_dict())
    with pytest.raises(RecipeMismatchError, match="reranker: trained on"):
        Identifier(index, threshold=0, reranker=other)


def test_reranker_options_are_refused_without_a_reranker_or_for_an_object(index) -> None:
    with pytest.raises(ValueError, match="^reranker_options: given without a reranker"):
        Identifier(index, threshold=0, reranker_options={"k": 2})
    with pytest.raises(ValueError, match="^reranker_options: given without a reranker"):
        Identifier(index, threshold=0, reranker=False, reranker_options={"k": 2})
    with pytest.raises(ValueError, match="^reranker_options: only for a re-ranker given by"):
        Identifier(index, threshold=0, reranker=Recording(), reranker_options={"k": 2})
    assert Identifier(index, threshold=0, reranker=Recording()).reranking is not None
    assert Identifier(index, threshold=0).reranking is None


def test_the_object_finder_is_built_only_with_multi(index) -> None:
    plain = Identifier(index, threshold=0)
    assert plain.finder is None
    multi = Identifier(index, threshold=0, multi=True, objects_threshold=0.25)
    assert multi.finder.index is index and multi.finder.threshold == 0.25
    with pytest.raises(TypeError, match="^multi: expected a bool, got 1"):
        Identifier(index, threshold=0, multi=1)
    with pytest.raises(ValueError, match="^objects_threshold: only with multi=True"):
        Identifier(index, threshold=0, objects_threshold=0.25)
    with pytest.raises(ValueError, match="^objects_threshold: only with multi=True"):
        Identifier(index, threshold=0, multi=False, objects_threshold=0.25)
    # The index has no fitted objects threshold: multi needs one given.
    with pytest.raises(ValueError, match="^threshold: the index .* has no fitted objects"):
        Identifier(index, threshold=0, multi=True)


def test_matches_name_the_best_reference_of_each_instance(index) -> None:
    identifier = Identifier(index, classifier="nn", threshold=0, top_k=4)
    (answer,) = identifier.identify([query()])
    records = {image["id"]: image for image in index.images()}
    assert [m.instance for m in answer.top_k] == ["red", "green", "blue", "white"]
    for match in answer.top_k:
        record = records[match.image_id]
        assert record["instance"] == match.instance
        assert match.image_path == record["source"]
    assert Path(answer.top_k[0].image_path).name in ("red_0.png", "red_2.png")
    assert Path(answer.top_k[1].image_path).name in ("green_0.png", "green_1.png")


def test_the_query_side_follows_the_recipe(tmp_path) -> None:
    """The photo's decode target: the query side for one scale, windows, or a query
    maximum side with one descriptor per image; else the largest scale's side."""
    cases = [
        ({"max_side": 100, "scales": (0.5, 1.5)}, 150),
        ({"max_side": 100, "scales": (1.5, 0.5)}, 150),
        ({"max_side": 100, "scales": (0.5, 1.5), "query_max_side": 200}, 200),
        ({"max_side": 100, "scales": (0.5, 1.5), "query_windows": ((1.0, 1),)}, 100),
    ]
    for number, (changes, longest) in enumerate(cases):
        recipe = tiny_recipe(**changes)
        with InstanceIndex.create(tmp_path / str(number), recipe) as index:
            per_image = index.recipe.descriptors_per_image
            shape = (1, 16) if per_image == 1 else (1, per_image, 16)
            index.add_descriptors(np.ones(shape, np.float32), ["a"], ["a"], index.recipe)
            assert Identifier(index, threshold=0)._longest == longest, changes
