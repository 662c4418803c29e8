"""Identifier on a tiny palette index (tests/pipeline_fakes.py): every answer, score,
reference and default checked against similarities computed here by hand."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pyinstance import identification
from pyinstance.classify import KnnVote, NearestNeighbour, Prediction
from pyinstance.data.images import scaled_size
from pyinstance.identification import (
    Identification,
    Identifier,
    Match,
    ThresholdMismatchError,
    identify,
)
from pyinstance.index import InstanceIndex
from pyinstance.objects import DetectedObject
from tests.pipeline_fakes import (
    BLUE,
    CYAN,
    GREEN,
    PALETTE,
    RED,
    WHITE,
    YELLOW,
    PaletteDescriber,
    palette_index,
    photo,
    solid,
    tiny_recipe,
)

#: The query: 5 cells of red, 2 of green, 1 of blue (32 × 64 pixels, 8-pixel cells).
QUERY_PATCHES = (((0, 0, 40, 32), RED), ((40, 0, 56, 32), GREEN), ((56, 0, 64, 32), BLUE))


def query_photo():
    return photo(32, 64, *QUERY_PATCHES)


def expected_scores() -> dict[str, float]:
    """The query's cosine similarity to each reference file, by hand."""
    q = 5 * PALETTE[RED] + 2 * PALETTE[GREEN] + 1 * PALETTE[BLUE]
    q /= np.linalg.norm(q)
    refs = {"red_0": RED, "red_1": YELLOW, "green_0": GREEN, "blue_0": BLUE, "white_0": WHITE}
    return {name: float(q @ PALETTE[colour]) for name, colour in refs.items()}


@pytest.fixture
def index(tmp_path: Path) -> InstanceIndex:
    """Instances red (a red and a yellow reference), green, blue, white."""
    built = palette_index(
        tmp_path / "index",
        tmp_path / "refs",
        {
            "red": [solid(RED), solid(YELLOW)],
            "green": [solid(GREEN)],
            "blue": [solid(BLUE)],
            "white": [solid(WHITE)],
        },
    )
    yield built
    built.close()


def reference(index: InstanceIndex, name: str) -> tuple[str, str]:
    """(image id, source path) of the reference file ``<name>.png``."""
    (image,) = [i for i in index.images() if Path(i["source"]).name == f"{name}.png"]
    return image["id"], image["source"]


def code(index: InstanceIndex, instance: str) -> int:
    return index.instances.index(instance)


class FixedClassifier:
    """A classifier answering ``prediction`` whatever the neighbours; records their k."""

    def __init__(self, prediction: Prediction, k: int = 1):
        self.prediction, self.k, self.seen_k = prediction, k, []

    def fit(self, descriptors: Any, labels: Any) -> FixedClassifier:
        return self

    def predict(self, neighbours: Any, queries: Any) -> Prediction:
        self.seen_k.append(int(neighbours.scores.shape[1]))
        return self.prediction


def fixed(label: int, confidence: float, ranked: list[int], scores: list[float], k: int = 1):
    return FixedClassifier(
        Prediction(
            labels=np.array([label]),
            confidence=np.array([confidence], np.float32),
            ranked=np.array([ranked]),
            ranked_scores=np.array([scores], np.float32),
        ),
        k=k,
    )


class ConstantScorer:
    """A pair scorer (re-ranker) calling every candidate the same object with ``p``."""

    recipe = None

    def __init__(self, p: float = 0.375, k: int = 2):
        self.p, self.k = p, k

    def score(self, queries: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        return np.full(candidates.shape[:2], self.p, np.float32)


def test_the_nearest_instance_answers_with_its_similarity(index, tmp_path) -> None:
    path = tmp_path / "query.png"
    query_photo().save(path)
    (answer,) = Identifier(index, top_k=3, threshold=0).identify([path])
    scores = expected_scores()
    assert answer.image == str(path)
    assert answer.instance == "red"
    assert answer.confidence == pytest.approx(scores["red_0"], abs=1e-5)
    assert answer.top_k == (
        Match("red", pytest.approx(scores["red_0"], abs=1e-5), *reference(index, "red_0")),
        Match("green", pytest.approx(scores["green_0"], abs=1e-5), *reference(index, "green_0")),
        Match("blue", pytest.approx(scores["blue_0"], abs=1e-5), *reference(index, "blue_0")),
    )
    assert answer.objects is None


def test_every_instance_is_listed_once_when_top_k_exceeds_them(index) -> None:
    (answer,) = Identifier(index, top_k=10, threshold=0).identify([query_photo()])
    assert [m.instance for m in answer.top_k] == ["red", "green", "blue", "white"]
    assert answer.top_k[-1].score == pytest.approx(0.0, abs=1e-6)


def test_stage_times_add_up_to_the_total(index) -> None:
    (answer,) = Identifier(index, threshold=0).identify([query_photo()])
    assert set(answer.ms) == {"decode", "extract", "search", "classify", "total"}
    assert all(v >= 0 for v in answer.ms.values())
    parts = answer.ms["decode"] + answer.ms["extract"] + answer.ms["search"]
    assert answer.ms["total"] == pytest.approx(parts + answer.ms["classify"], rel=1e-6)
    assert answer.ms["extract"] > 0 and answer.ms["total"] > answer.ms["extract"]


def test_in_memory_photos_are_named_by_position(index) -> None:
    pixels = np.asarray(solid(GREEN))
    answers = Identifier(index, threshold=0).identify([query_photo(), pixels])
    assert [a.image for a in answers] == ["images[0]", "images[1]"]
    assert [a.instance for a in answers] == ["red", "green"]
    assert answers[1].confidence == pytest.approx(1.0, abs=1e-5)


def test_identify_described_returns_the_query_descriptors(index) -> None:
    ((answer, queries),) = Identifier(index, threshold=0).identify_described([query_photo()])
    expected = index.describe_queries([query_photo()])[0]
    np.testing.assert_allclose(queries, expected, atol=1e-6)
    assert queries.shape == (1, 16)
    assert answer.instance == "red"


def test_the_threshold_rejects_below_it_and_accepts_at_it(index) -> None:
    confidence = np.float32(expected_scores()["red_0"])
    (at,) = Identifier(index, threshold=float(confidence)).identify([query_photo()])
    assert at.instance == "red"
    above = float(np.nextafter(confidence, np.float32(2), dtype=np.float32))
    (rejected,) = Identifier(index, threshold=above).identify([query_photo()])
    assert rejected.instance is None
    assert rejected.confidence == pytest.approx(float(confidence), abs=1e-6)
    assert rejected.top_k[0].instance == "red"
    record = rejected.to_dict()
    assert record["instance"] is None and "objects" not in record
    assert record["top_k"][0] == {
        "instance": "red",
        "score": rejected.top_k[0].score,
        "image_id": reference(index, "red_0")[0],
        "image_path": reference(index, "red_0")[1],
    }
    assert isinstance(record["top_k"], list)


@pytest.mark.parametrize("threshold", [0, 1, 0.0, 1.0, 0.5])
def test_thresholds_in_the_unit_interval_are_taken_as_floats(index, threshold) -> None:
    identifier = Identifier(index, threshold=threshold)
    assert identifier.threshold == threshold and type(identifier.threshold) is float


@pytest.mark.parametrize("threshold", [-0.01, 1.01, 2])
def test_thresholds_outside_the_unit_interval_are_refused(index, threshold) -> None:
    with pytest.raises(ValueError, match="threshold: expected a number in"):
        Identifier(index, threshold=threshold)


def test_the_stored_threshold_and_classifier_are_the_defaults(index) -> None:
    plain = Identifier(index)
    assert plain.threshold is None and type(plain.classifier) is NearestNeighbour
    index.set_setting("threshold", 0.25)
    index.set_setting("classifier", "knn_vote")
    stored = Identifier(index)
    assert stored.threshold == 0.25 and type(stored.classifier) is KnnVote
    assert Identifier(index, threshold=0).threshold == 0.0
    assert type(Identifier(index, classifier="nn").classifier) is NearestNeighbour


def test_classifier_options_go_to_a_named_classifier_only(index) -> None:
    identifier = Identifier(index, classifier="knn_vote", classifier_options={"k": 3})
    assert identifier.classifier.k == 3
    with pytest.raises(ValueError, match="classifier_options"):
        Identifier(index, classifier=NearestNeighbour(), classifier_options={"k": 3})
    with pytest.raises(LookupError, match="no_such_classifier"):
        Identifier(index, classifier="no_such_classifier")


@pytest.mark.parametrize("top_k", [0, -1, True, 2.0, "2"])
def test_bad_top_k_is_refused(index, top_k) -> None:
    with pytest.raises(ValueError, match="top_k: expected an int >= 1"):
        Identifier(index, top_k=top_k)


def test_top_k_may_be_a_numpy_integer(index) -> None:
    identifier = Identifier(index, top_k=np.int64(1), threshold=0)
    assert identifier.top_k == 1 and type(identifier.top_k) is int
    (answer,) = identifier.identify([query_photo()])
    assert [m.instance for m in answer.top_k] == ["red"]


def test_bad_indexes_are_refused(index, tmp_path) -> None:
    with pytest.raises(TypeError, match="index: expected an InstanceIndex"):
        Identifier(str(index.path))
    with (
        InstanceIndex.create(tmp_path / "empty", tiny_recipe()) as empty,
        pytest.raises(ValueError, match="holds no reference images"),
    ):
        Identifier(empty)


@pytest.mark.parametrize(
    ("images", "error"),
    [("query.png", TypeError), (Path("query.png"), TypeError), (iter([]), TypeError)],
)
def test_bad_image_sequences_are_refused(index, images, error) -> None:
    with pytest.raises(error, match="images: expected a sequence"):
        Identifier(index).identify(images)
    with pytest.raises(ValueError, match="images: empty"):
        Identifier(index).identify([])
    with pytest.raises(error, match="images: expected a sequence"):
        Identifier(index).identify_described(images)


def test_the_classifier_ranking_comes_first_then_the_neighbours_by_similarity(index) -> None:
    blue, green = code(index, "blue"), code(index, "green")
    classifier = fixed(blue, 0.625, [blue, green, -1], [0.9, 0.5, -np.inf])
    (answer,) = Identifier(index, classifier=classifier, top_k=4, threshold=0).identify(
        [query_photo()]
    )
    scores = expected_scores()
    assert answer.instance == "blue" and answer.confidence == 0.625
    assert [(m.instance, m.image_id) for m in answer.top_k] == [
        ("blue", reference(index, "blue_0")[0]),
        ("green", reference(index, "green_0")[0]),
        ("red", reference(index, "red_0")[0]),
        ("white", reference(index, "white_0")[0]),
    ]
    got = [m.score for m in answer.top_k]
    want = [scores["blue_0"], scores["green_0"], scores["red_0"], scores["white_0"]]
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_an_instance_ranked_but_not_among_the_neighbours_has_the_classifier_score(index) -> None:
    white, red = code(index, "white"), code(index, "red")
    classifier = fixed(white, 0.5, [white, red], [0.75, 0.25])
    identifier = Identifier(index, classifier=classifier, top_k=1, threshold=0)
    (answer,) = identifier.identify([query_photo()])
    assert classifier.seen_k == [4]  # top_k × 4 neighbours: white (similarity 0) is 5th
    assert answer.top_k == (Match("white", 0.75, None, None),)
    assert answer.instance == "white"


def test_an_unknown_label_answers_no_instance(index) -> None:
    red = code(index, "red")
    classifier = fixed(-1, 0.0, [red], [0.5])
    (answer,) = Identifier(index, classifier=classifier, top_k=1).identify([query_photo()])
    assert answer.instance is None and answer.confidence == 0.0
    assert answer.top_k[0].instance == "red"


@pytest.mark.parametrize(
    ("classifier_k", "top_k", "searched"),
    [(1, 1, 4), (2, 1, 4), (5, 1, 5), (9, 1, 5), (1, 2, 5), (3, 1, 4)],
)
def test_neighbours_searched_cover_classifier_and_top_k_within_the_index(
    index, classifier_k, top_k, searched
) -> None:
    red = code(index, "red")
    classifier = fixed(red, 0.5, [red], [0.5], k=classifier_k)
    Identifier(index, classifier=classifier, top_k=top_k, threshold=0).identify([query_photo()])
    assert classifier.seen_k == [searched]


def test_a_reranker_gives_the_confidence_and_widens_the_search(index) -> None:
    red = code(index, "red")
    classifier = fixed(red, 0.5, [red], [0.5], k=1)
    identifier = Identifier(
        index, classifier=classifier, top_k=1, threshold=0, reranker=ConstantScorer(0.375, k=5)
    )
    assert identifier.reranker_name == "ConstantScorer"
    (answer,) = identifier.identify([query_photo()])
    assert classifier.seen_k == [5]
    assert answer.confidence == 0.375 and answer.instance == "red"
    assert Identifier(index).reranker_name is None and Identifier(index).reranking is None


def test_a_stored_threshold_is_refused_with_another_reranker(index) -> None:
    index.set_setting("threshold", 0.25)
    message = "fitted without a re-ranker, not with re-ranker 'ConstantScorer'"
    with pytest.raises(ThresholdMismatchError, match=re.escape(message)):
        Identifier(index, reranker=ConstantScorer())
    assert Identifier(index, reranker=ConstantScorer(), threshold=0.5).threshold == 0.5
    index.set_setting("reranker", "ConstantScorer")
    assert Identifier(index, reranker=ConstantScorer()).threshold == 0.25
    message = "fitted with re-ranker 'ConstantScorer', not without a re-ranker"
    with pytest.raises(ThresholdMismatchError, match=re.escape(message)):
        Identifier(index, reranker=False)
    plain = Identifier(index, reranker=False, threshold=0.5)
    assert plain.reranking is None and plain.reranker_name is None


def test_the_stored_reranker_is_the_default(index) -> None:
    index.set_setting("reranker", "no_such_reranker")
    with pytest.raises(LookupError, match="no_such_reranker"):
        Identifier(index)


def test_reranker_options_need_a_reranker(index) -> None:
    with pytest.raises(ValueError, match="reranker_options: given without a reranker"):
        Identifier(index, reranker_options={"k": 2})


def test_multi_options_are_checked(index) -> None:
    with pytest.raises(TypeError, match="multi: expected a bool"):
        Identifier(index, multi=1, objects_threshold=0.5)
    with pytest.raises(ValueError, match="objects_threshold: only with multi=True"):
        Identifier(index, objects_threshold=0.5)
    assert Identifier(index).finder is None
    assert Identifier(index, multi=True, objects_threshold=0.5).finder.threshold == 0.5


@pytest.mark.parametrize(
    ("changes", "longest"),
    [
        ({}, 448),
        ({"max_side": 100, "scales": (0.5, 1.5)}, 150),
        ({"max_side": 100, "scales": (0.5, 1.25)}, 125),
        ({"max_side": 100, "scales": (0.5, 1.5), "query_max_side": 200}, 200),
        ({"max_side": 100, "scales": (0.5, 1.5), "query_windows": ((1.0, 1),)}, 100),
        (
            {
                "max_side": 100,
                "scales": (0.5, 1.5),
                "query_max_side": 200,
                "postprocess": {"multiscale": {"reduction": "max"}},
            },
            300,
        ),
    ],
)
def test_photos_are_decoded_for_the_side_the_recipe_describes_queries_at(
    tmp_path, changes, longest
) -> None:
    with InstanceIndex.create(tmp_path / "index", tiny_recipe(**changes)) as index:
        per_image = index.recipe.descriptors_per_image
        shape = (1, 16) if per_image == 1 else (1, per_image, 16)
        index.add_descriptors(np.ones(shape, np.float32), ["a"], ["a"], index.recipe)
        identifier = Identifier(index)
        assert identifier._target(1000, 500) == scaled_size(1000, 500, longest)


def test_multi_answers_objects_and_times_them(index) -> None:
    scene = photo(32, 64, ((0, 0, 32, 32), GREEN), ((32, 0, 64, 32), BLUE))
    identifier = Identifier(index, multi=True, objects_threshold=0.0, threshold=0)
    ((answer, queries),) = identifier.identify_described([scene])
    np.testing.assert_allclose(queries, index.describe_queries([scene])[0], atol=1e-6)
    assert {o.instance for o in answer.objects} == {"green", "blue"}
    assert all(isinstance(o, DetectedObject) for o in answer.objects)
    assert isinstance(answer.objects, tuple)
    assert set(answer.ms) == {"decode", "extract", "objects", "search", "classify", "total"}
    parts = sum(answer.ms[k] for k in ("decode", "extract", "objects", "search", "classify"))
    assert answer.ms["total"] == pytest.approx(parts, rel=1e-6)
    assert answer.ms["objects"] > 0
    record = answer.to_dict()
    assert record["objects"] == [o.to_dict() for o in answer.objects]


def test_multi_with_windows_searches_the_pooled_windows(tmp_path) -> None:
    windows = ((1.0, 1), (0.5, 2))
    index = palette_index(
        tmp_path / "index",
        tmp_path / "refs",
        {"green": [solid(GREEN)], "blue": [solid(BLUE)], "red": [solid(RED)]},
        tiny_recipe(query_windows=windows),
    )
    with index:
        scene = photo(32, 64, ((0, 0, 32, 32), GREEN), ((32, 0, 64, 32), BLUE))
        identifier = Identifier(index, multi=True, objects_threshold=0.0, threshold=0)
        ((answer, queries),) = identifier.identify_described([scene])
        np.testing.assert_allclose(queries, index.describe_queries([scene])[0], atol=1e-6)
        assert queries.shape == (5, 16)
        assert answer.confidence == pytest.approx(1.0, abs=1e-5)  # a half-window is all green
        assert {o.instance for o in answer.objects} == {"green", "blue"}


def test_identification_records_are_plain_data() -> None:
    found = DetectedObject("a", 0.5, (1, 2, 3, 4), "im")
    answer = Identification("p.jpg", "a", 0.5, (Match("a", 0.5, "im", "p"),), {"total": 1.0})
    assert answer.to_dict() == {
        "image": "p.jpg",
        "instance": "a",
        "confidence": 0.5,
        "top_k": [{"instance": "a", "score": 0.5, "image_id": "im", "image_path": "p"}],
        "ms": {"total": 1.0},
    }
    with_objects = Identification("p.jpg", None, 0.0, (), objects=(found,)).to_dict()
    assert with_objects["objects"] == [found.to_dict()] and with_objects["ms"] == {}


def test_identify_opens_an_index_path(index, monkeypatch) -> None:
    path = index.path
    index.close()
    monkeypatch.setattr(
        InstanceIndex, "describer", property(lambda self: PaletteDescriber(self.recipe))
    )
    (answer,) = identify(path, [query_photo()], threshold=0, top_k=1)
    assert answer.instance == "red" and len(answer.top_k) == 1
    (answer,) = identify(str(path), [query_photo()], threshold=1.0)
    assert answer.instance is None and len(answer.top_k) == 4
    with InstanceIndex.open(path) as opened:
        (again,) = identify(opened, [query_photo()], threshold=1.0, top_k=2)
        assert again.instance is None and len(again.top_k) == 2


class Clock:
    """A perf_counter that advances one second per reading."""

    def __init__(self) -> None:
        self.now = -1.0

    def perf_counter(self) -> float:
        self.now += 1.0
        return self.now


def test_stage_times_are_milliseconds_between_the_stages(index, monkeypatch) -> None:
    monkeypatch.setattr(identification, "time", Clock())
    (answer,) = Identifier(index, threshold=0).identify([query_photo()])
    assert answer.ms == {
        "decode": 1000.0,
        "extract": 1000.0,
        "search": 1000.0,
        "classify": 1000.0,
        "total": 4000.0,
    }


def test_object_finding_is_timed_apart_from_extraction(index, monkeypatch) -> None:
    monkeypatch.setattr(identification, "time", Clock())
    identifier = Identifier(index, multi=True, objects_threshold=0.0, threshold=0)
    (answer,) = identifier.identify([query_photo()])
    # Readings: start 0, decoded 1, objects 2..3, described 4, searched 5, classified 6.
    assert answer.ms == {
        "decode": 1000.0,
        "extract": 2000.0,
        "objects": 1000.0,
        "search": 1000.0,
        "classify": 1000.0,
        "total": 6000.0,
    }


def test_a_photo_path_given_as_str_is_decoded_and_named(index, tmp_path) -> None:
    path = tmp_path / "query.png"
    query_photo().save(path)
    (answer,) = Identifier(index, threshold=0).identify([str(path)])
    assert answer.image == str(path) and answer.instance == "red"


def test_instances_only_among_the_neighbours_follow_in_similarity_order(index) -> None:
    white = code(index, "white")
    classifier = fixed(white, 0.5, [white], [0.75])
    (answer,) = Identifier(index, classifier=classifier, top_k=4, threshold=0).identify(
        [query_photo()]
    )
    assert [m.instance for m in answer.top_k] == ["white", "red", "green", "blue"]
    assert index.instances.index("blue") == 0  # the first code is listed too


def test_windows_reuse_the_feature_map_of_the_objects(tmp_path) -> None:
    index = palette_index(
        tmp_path / "index",
        tmp_path / "refs",
        {"green": [solid(GREEN)], "blue": [solid(BLUE)]},
        tiny_recipe(query_windows=((1.0, 1), (0.5, 2))),
    )
    with index:
        identifier = Identifier(index, multi=True, objects_threshold=0.0, threshold=0)
        index.describer.seen.clear()
        identifier.identify([photo(32, 64, ((0, 0, 32, 32), GREEN), ((32, 0, 64, 32), BLUE))])
        assert index.describer.seen == [(32, 64), (32, 32), (32, 32)]  # photo, 2 crops


class DotScorer:
    """A pair scorer whose probability is the candidate's similarity to the first window."""

    recipe = None
    k = 3

    def score(self, queries: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        return np.clip(np.einsum("qd,qkd->qk", queries[:, 0], candidates), 0, 1)


def test_the_reranker_reads_candidates_by_row_id(index) -> None:
    index.remove(instance="blue")  # row ids no longer 0..N-1
    identifier = Identifier(index, reranker=DotScorer(), threshold=0)
    (answer,) = identifier.identify([query_photo()])
    assert answer.instance == "red"
    assert answer.confidence == pytest.approx(expected_scores()["red_0"], abs=1e-5)


def test_a_bad_in_memory_photo_is_an_error_naming_its_position_with_multi(index) -> None:
    identifier = Identifier(index, threshold=0, multi=True, objects_threshold=0.0)
    flat = np.zeros((32, 32), np.uint8)
    with pytest.raises(ValueError, match=r"^images\[1\]: expected a numpy"):
        identifier.identify([query_photo(), flat])


def test_a_jpeg_is_decoded_reduced_for_the_query_side(tmp_path) -> None:
    with palette_index(
        tmp_path / "index",
        tmp_path / "refs",
        {"green": [solid(GREEN)], "blue": [solid(BLUE)]},
        tiny_recipe(max_side=16),
    ) as index:
        path = tmp_path / "query.jpg"
        photo(64, 128, ((0, 0, 96, 64), GREEN), ((96, 0, 128, 64), BLUE)).save(path, quality=95)
        index.describer.seen.clear()
        (answer,) = Identifier(index, threshold=0).identify([path])
        # Draft mode: the smallest 1/2^n decode at least twice 8 × 16: 16 × 32.
        assert index.describer.seen == [(16, 32)]
        assert answer.instance == "green"


def test_instances_ranked_after_one_not_among_the_neighbours_are_listed_too(tmp_path) -> None:
    # Nine references; cyan (the opposite of red) is the query's farthest, outside the
    # 2 × 4 neighbours searched.
    half = 16
    refs = {
        "red": [solid(RED)],
        "yellow": [solid(YELLOW)],
        "green": [solid(GREEN)],
        "blue": [solid(BLUE)],
        "white": [solid(WHITE)],
        "cyan": [solid(CYAN)],
        "rg": [photo(32, 32, ((0, 0, half, 32), RED), ((half, 0, 32, 32), GREEN))],
        "gb": [photo(32, 32, ((0, 0, half, 32), GREEN), ((half, 0, 32, 32), BLUE))],
        "rb": [photo(32, 32, ((0, 0, half, 32), RED), ((half, 0, 32, 32), BLUE))],
    }
    with palette_index(tmp_path / "index", tmp_path / "refs", refs) as index:
        cyan, red = index.instances.index("cyan"), index.instances.index("red")
        classifier = fixed(cyan, 0.5, [cyan, red], [0.75, 0.25])
        identifier = Identifier(index, classifier=classifier, top_k=2, threshold=0)
        (answer,) = identifier.identify([query_photo()])
        assert classifier.seen_k == [8]
        assert answer.top_k == (
            Match("cyan", 0.75, None, None),
            Match(
                "red",
                pytest.approx(expected_scores()["red_0"], abs=1e-5),
                *reference(index, "red_0"),
            ),
        )
        (plain,) = Identifier(index, threshold=0).identify([query_photo()])
        assert len(plain.top_k) == 5  # the default top_k


def test_a_bad_in_memory_photo_is_an_error_naming_its_position(index) -> None:
    identifier = Identifier(index, threshold=0)
    flat = np.zeros((32, 32), np.uint8)
    with pytest.raises(ValueError, match=r"^images\[1\]: expected a numpy"):
        identifier.identify([query_photo(), flat])
    with pytest.raises(TypeError, match=r"^images\[2\]: expected a path"):
        identifier.identify([query_photo(), query_photo(), 3.5])
