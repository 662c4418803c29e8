"""ObjectFinder, its helpers and calibrate_objects on tiny palette indexes
(tests/pipeline_fakes.py): scores, boxes and thresholds worked out by hand."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
from tqdm.auto import tqdm

from pyinstance import objects
from pyinstance.data.composite import Scene
from pyinstance.index import InstanceIndex
from pyinstance.index.thresholds import StaleThresholdError
from pyinstance.objects import (
    HUB_NEIGHBOURS,
    THRESHOLD_SETTING,
    Candidate,
    DetectedObject,
    ObjectFinder,
    ObjectsFit,
    calibrate_objects,
    hubness,
    select_objects,
    to_pixels,
    without_blend,
    zoom_crops,
)
from tests.pipeline_fakes import (
    BLUE,
    CYAN,
    GREEN,
    PALETTE,
    RED,
    WHITE,
    YELLOW,
    palette_index,
    photo,
    solid,
    tiny_recipe,
)

#: Four windows of half of each side (2 × 2).
HALVES = ((0.5, 2),)
CLOSE = float(PALETTE[RED] @ PALETTE[YELLOW])  # 0.8


def cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


# -- pure helpers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("height", "width", "crops"),
    [
        (10, 21, [(0, 0, 10, 10), (10, 0, 21, 10)]),  # round(10.5) == 10
        (10, 10, [(0, 0, 5, 10), (5, 0, 10, 10)]),
        (23, 10, [(0, 0, 10, 12), (0, 12, 10, 23)]),
        (21, 10, [(0, 0, 10, 10), (0, 10, 10, 21)]),
        (1, 1, [(0, 0, 1, 1), (0, 0, 1, 1)]),
        (3, 1, [(0, 0, 1, 2), (0, 2, 1, 3)]),
        (2, 1, [(0, 0, 1, 1), (0, 1, 1, 2)]),
    ],
)
def test_zoom_crops_halve_the_longer_side(height, width, crops) -> None:
    assert zoom_crops(height, width) == crops


@pytest.mark.parametrize(("height", "width"), [(0, 5), (5, 0), (-1, 3)])
def test_zoom_crops_refuse_an_empty_photo(height, width) -> None:
    with pytest.raises(ValueError, match="photo: expected at least 1×1 pixels"):
        zoom_crops(height, width)


def test_cell_boxes_become_pixel_boxes_of_the_photo() -> None:
    # 4 × 8 cells over 40 × 100 pixels: 10 pixels a cell down, 12.5 across.
    assert to_pixels((1, 2, 3, 8), (4, 8), (40, 100)) == (25, 10, 100, 30)
    assert to_pixels((0, 1, 1, 3), (4, 8), (40, 100)) == (12, 0, 38, 10)  # 12.5 -> 12
    assert to_pixels((0, 0, 5, 9), (4, 8), (40, 80)) == (0, 0, 80, 40)  # clipped to the photo


def cand(code: int, score: float, row: int = 0) -> Candidate:
    return Candidate(code, score, row, (0, 0, 1, 1))


def test_selection_keeps_each_instance_once_best_first_down_to_the_threshold() -> None:
    candidates = [cand(1, 0.3), cand(2, 0.9), cand(1, 0.5, 7), cand(-1, 0.95), cand(3, 0.2)]
    assert select_objects(candidates, 0.3) == [cand(2, 0.9), cand(1, 0.5, 7)]
    assert select_objects(candidates, 0.2) == [cand(2, 0.9), cand(1, 0.5, 7), cand(3, 0.2)]
    assert select_objects([cand(0, 0.4), cand(0, 0.6, 1)], 0.0) == [cand(0, 0.6, 1)]
    assert select_objects(candidates, 0.95) == []
    assert select_objects([], 0.0) == []


def test_a_whole_photo_candidate_is_dropped_only_when_it_is_a_blend() -> None:
    whole = cand(0, 0.5)
    assert without_blend([whole]) == [whole]
    assert without_blend([]) == []
    # No crop names it, one scores higher: a blend.
    assert without_blend([whole, cand(1, 0.6), cand(2, 0.1)]) == [cand(1, 0.6), cand(2, 0.1)]
    # A crop names it too: kept.
    assert without_blend([whole, cand(1, 0.6), cand(0, 0.1)]) == [whole, cand(1, 0.6), cand(0, 0.1)]
    # No crop scores higher (equal is not higher): kept.
    assert without_blend([whole, cand(1, 0.5), cand(2, 0.1)]) == [whole, cand(1, 0.5), cand(2, 0.1)]
    assert without_blend([whole, cand(1, 0.6)]) == [cand(1, 0.6)]


def test_detected_objects_are_plain_data() -> None:
    found = DetectedObject("a", 0.25, (1, 2, 3, 4), None)
    assert found.to_dict() == {
        "instance": "a",
        "confidence": 0.25,
        "box": [1, 2, 3, 4],
        "image_id": None,
    }
    fit = ObjectsFit(threshold=0.5, target_far=0.1, far=0.0, recall=1.0, photos=3)
    assert fit.to_dict() == {
        "threshold": 0.5,
        "target_far": 0.1,
        "far": 0.0,
        "recall": 1.0,
        "photos": 3,
    }


# -- hubness --------------------------------------------------------------------------------


def clustered(n_instances: int, per_instance: int, seed: int) -> np.ndarray:
    """Tight clusters of unit rows around random centres, instance by instance."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_instances, 16))
    x = np.repeat(centres, per_instance, axis=0) + 0.05 * rng.standard_normal(
        (n_instances * per_instance, 16)
    )
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def hand_hubness(x: np.ndarray, instances: list[str]) -> np.ndarray:
    out = []
    for i in range(len(x)):
        others = sorted(
            (float(x[i] @ x[j]) for j in range(len(x)) if instances[j] != instances[i]),
            reverse=True,
        )[:HUB_NEIGHBOURS]
        out.append(sum(others) / len(others) if others else 0.0)
    return np.array(out)


@pytest.mark.parametrize(("n_instances", "per_instance"), [(6, 5), (3, 2), (1, 3), (4, 1), (2, 1)])
def test_hubness_is_the_mean_similarity_to_the_nearest_other_references(
    tmp_path, n_instances, per_instance
) -> None:
    x = clustered(n_instances, per_instance, seed=n_instances)
    instances = [f"i{k // per_instance}" for k in range(len(x))]
    with InstanceIndex.create(tmp_path / "index", tiny_recipe()) as index:
        rows = index.add_descriptors(x, instances, [f"im{k}" for k in range(len(x))], index.recipe)
        got_rows, values = hubness(index)
        assert values.dtype == np.float32
        np.testing.assert_array_equal(got_rows, np.sort(rows))
        expected = hand_hubness(x, instances)[np.argsort(rows)]
        np.testing.assert_allclose(values, expected, atol=1e-5)


def test_hubness_rows_come_sorted_after_an_update(tmp_path) -> None:
    x = clustered(3, 2, seed=1)
    instances = ["a", "a", "b", "b", "c", "c"]
    with InstanceIndex.create(tmp_path / "index", tiny_recipe()) as index:
        index.add_descriptors(x[:3], instances[:3], ["p0", "p1", "p2"], index.recipe)
        first = index.add_descriptors(x[3:], instances[3:], ["p3", "p4", "p5"], index.recipe)
        index.remove(image="p0")
        index.add_descriptors(x[:1], instances[:1], ["p0"], index.recipe)
        rows = index.rows()
        got_rows, values = hubness(index)
        order = np.argsort(rows)
        np.testing.assert_array_equal(got_rows, rows[order])
        live = {int(r): k for k, r in enumerate(rows)}
        expected = hand_hubness(
            index.raw_descriptors(), [index.instances[c] for c in index.labels()]
        )
        np.testing.assert_allclose(values, expected[order], atol=1e-5)
        assert len(first) == 3 and len(live) == 6


# -- the finder -----------------------------------------------------------------------------


@pytest.fixture
def index(tmp_path: Path) -> InstanceIndex:
    """Instances red, yellow (red · yellow = 0.8), green, blue, white; windows of half
    each side. Hubness: red and yellow 0.8 / 4 = 0.2, the others 0."""
    built = palette_index(
        tmp_path / "index",
        tmp_path / "refs",
        {
            c: [solid(v)]
            for c, v in [
                ("red", RED),
                ("yellow", YELLOW),
                ("green", GREEN),
                ("blue", BLUE),
                ("white", WHITE),
            ]
        },
        tiny_recipe(query_windows=HALVES),
    )
    yield built
    built.close()


def image_id(index: InstanceIndex, instance: str) -> str:
    (image,) = [i for i in index.images() if i["instance"] == instance]
    return image["id"]


#: Green on the left half; on the right half a black strip (8 px) then blue (24 px).
SCENE = photo(32, 64, ((0, 0, 32, 32), GREEN), ((40, 0, 64, 32), BLUE))
#: The whole photo's best window (top-left, all green) against its best other (the
#: top-right window, 3/4 blue): 1 − 3/√10.
WHOLE_SCORE = 1 - 3 / math.sqrt(10)


def test_each_object_is_found_with_its_box_in_the_crop_that_shows_it(index) -> None:
    finder = ObjectFinder(index, threshold=0.5)
    found = finder.find(SCENE)
    # Green crop (0..32): its top-left window, cells 0..2 of 4 -> pixels (0, 0, 16, 16).
    # Blue crop (32..64): its top-right window (all blue) -> (32 + 16, 0, 32 + 32, 16).
    assert [(f.instance, f.box, f.image_id) for f in found] == [
        ("green", (0, 0, 16, 16), image_id(index, "green")),
        ("blue", (48, 0, 64, 16), image_id(index, "blue")),
    ]
    assert [f.confidence for f in found] == pytest.approx([1.0, 1.0], abs=1e-5)


def test_the_candidates_of_the_whole_photo_and_its_crops(index) -> None:
    finder = ObjectFinder(index, threshold=0.5)
    green, blue = index.instances.index("green"), index.instances.index("blue")
    candidates = finder.candidates(SCENE)
    assert [(c.code, c.box) for c in candidates] == [
        (green, (0, 0, 32, 16)),  # the whole photo: its top-left window of 4 × 8 cells
        (green, (0, 0, 16, 16)),
        (blue, (48, 0, 64, 16)),
    ]
    assert [c.score for c in candidates] == pytest.approx([WHOLE_SCORE, 1.0, 1.0], abs=1e-5)
    assert candidates[0].row == candidates[1].row != candidates[2].row


def test_without_zoom_only_the_whole_photo_is_searched(index) -> None:
    finder = ObjectFinder(index, threshold=0.0, zoom=False)
    (found,) = finder.find(SCENE)
    assert (found.instance, found.box) == ("green", (0, 0, 32, 16))
    assert found.confidence == pytest.approx(WHOLE_SCORE, abs=1e-5)
    assert ObjectFinder(index, threshold=0.1, zoom=False).find(SCENE) == []


def test_a_reference_that_resembles_others_scores_less(index) -> None:
    # All red: similarity 1, hubness of red 0.2, best other (yellow) 0.8: min(0.8, 0.2).
    finder = ObjectFinder(index, threshold=0.0)
    (found,) = finder.find(solid(RED))
    assert found.instance == "red" and found.confidence == pytest.approx(0.2, abs=1e-5)
    # All green: nothing else alike (hubness 0, best other 0): 1.
    (found,) = finder.find(solid(GREEN))
    assert found.confidence == pytest.approx(1.0, abs=1e-5)


def test_hubness_lowers_a_score_below_the_lead_over_the_others(tmp_path) -> None:
    # Red's only other reference is yellow (0.8), white is far from both; with k = 2
    # neighbours a red view sees red and yellow: min(1 − hub, 1 − 0.8) where hub = 0.8 / 2.
    # A yellow-and-white photo: yellow 1/√2... keeps the hubness term the smaller one here:
    with palette_index(
        tmp_path / "index",
        tmp_path / "refs",
        {"red": [solid(RED)], "yellow": [solid(YELLOW)], "white": [solid(WHITE)]},
        tiny_recipe(query_windows=((1.0, 1),)),
    ) as index:
        finder = ObjectFinder(index, threshold=0.0, zoom=False)
        half = photo(32, 32, ((0, 0, 16, 32), RED), ((16, 0, 32, 32), WHITE))
        (found,) = finder.find(half)
        query = PALETTE[RED] + PALETTE[WHITE]
        similarity = cos(query, PALETTE[RED])
        hub = CLOSE / 2
        other = max(cos(query, PALETTE[YELLOW]), cos(query, PALETTE[WHITE]))
        assert found.instance == "red"
        assert found.confidence == pytest.approx(
            min(similarity - hub, similarity - other), abs=1e-5
        )


def test_a_whole_photo_matching_a_blend_of_its_objects_is_dropped(tmp_path) -> None:
    # Teal: half green, half blue, as the whole scene; teal2 0.6 green, 0.4 blue.
    with palette_index(
        tmp_path / "index",
        tmp_path / "refs",
        {
            "green": [solid(GREEN, 40)],
            "blue": [solid(BLUE, 40)],
            "teal": [photo(40, 40, ((0, 0, 20, 40), GREEN), ((20, 0, 40, 40), BLUE))],
            "teal2": [photo(40, 40, ((0, 0, 24, 40), GREEN), ((24, 0, 40, 40), BLUE))],
        },
        tiny_recipe(query_windows=((1.0, 1),)),
    ) as index:
        finder = ObjectFinder(index, threshold=0.0)
        scene = photo(32, 64, ((0, 0, 32, 32), GREEN), ((32, 0, 64, 32), BLUE))
        g, b = PALETTE[GREEN], PALETTE[BLUE]
        refs = {"green": g, "blue": b, "teal": g + b, "teal2": 0.6 * g + 0.4 * b}

        def score(query: np.ndarray, name: str) -> float:
            sims = {n: cos(query, v) for n, v in refs.items()}
            hub = np.mean([cos(refs[name], v) for n, v in refs.items() if n != name])
            other = max(s for n, s in sims.items() if n != name)
            return min(sims[name] - hub, sims[name] - other)

        codes = {name: index.instances.index(name) for name in refs}
        candidates = finder.candidates(scene)
        assert [c.code for c in candidates] == [codes["green"], codes["blue"]]  # no teal
        assert [c.score for c in candidates] == pytest.approx(
            [score(g, "green"), score(b, "blue")], abs=1e-5
        )
        assert score(g + b, "teal") < score(b, "blue")  # the whole photo's, dropped
        assert [f.instance for f in finder.find(scene)] == ["blue", "green"]


def test_boxes_are_in_the_pixels_of_the_full_photo(index) -> None:
    # The features of the 32 × 64 photo, the photo's file twice as high and thrice as wide.
    finder = ObjectFinder(index, threshold=0.5)
    features, _ = index.describer.query_features(SCENE)
    found = finder.find_in(features, (64, 192), SCENE)
    assert [(f.instance, f.box) for f in found] == [
        ("green", (0, 0, 48, 32)),
        ("blue", (144, 0, 192, 32)),
    ]
    (whole,) = ObjectFinder(index, threshold=0.0).find_in(features, (64, 192))  # no crops
    assert whole.box == (0, 0, 96, 32) and whole.instance == "green"


def test_boxes_of_a_tall_photo_are_in_the_pixels_of_the_full_photo(index) -> None:
    # SCENE turned on its side: green on the top half; on the bottom half a black strip
    # (8 px) then blue (24 px). The crops halve the height; the full photo is thrice as high
    # and twice as wide as the pixels described, so a crop starting at pixel row 32 starts
    # at row 96 of the photo.
    tall = photo(64, 32, ((0, 0, 32, 32), GREEN), ((0, 40, 32, 64), BLUE))
    finder = ObjectFinder(index, threshold=0.5)
    features, _ = index.describer.query_features(tall)
    found = finder.find_in(features, (192, 64), tall)
    # Green crop, photo box (0, 0, 64, 96): its top-left window, cells 0..2 of 4 each way.
    # Blue crop, photo box (0, 96, 64, 192): its bottom-left window (all blue), rows 2..4.
    assert [(f.instance, f.box) for f in found] == [
        ("green", (0, 0, 32, 48)),
        ("blue", (0, 96 + 48, 32, 96 + 96)),
    ]


def test_an_emptied_index_gives_no_candidate(tmp_path) -> None:
    # The finder was made while the index held references; every view's search now finds
    # none (label -1): no candidate, from the whole photo or its crops.
    with palette_index(
        tmp_path / "index",
        tmp_path / "refs",
        {"green": [solid(GREEN)], "blue": [solid(BLUE)]},
        tiny_recipe(query_windows=HALVES),
    ) as index:
        finders = [ObjectFinder(index, threshold=0.0, zoom=zoom) for zoom in (True, False)]
        assert all(finder.candidates(SCENE) for finder in finders)
        index.remove(instance=["green", "blue"])
        for finder in finders:
            assert finder.candidates(SCENE) == []
            assert finder.find(SCENE) == []


def test_a_photo_file_is_decoded_and_found(index, tmp_path) -> None:
    path = tmp_path / "scene.png"
    SCENE.save(path)
    finder = ObjectFinder(index, threshold=0.5)
    assert finder.find(path) == finder.find(SCENE)
    assert finder.find(str(path)) == finder.find(SCENE)


def test_a_view_of_nothing_indexed_gives_no_candidate(index) -> None:
    finder = ObjectFinder(index, threshold=0.0)
    dark = photo(32, 32)  # black: orthogonal to every reference
    found = finder.find(dark)
    assert all(f.confidence == 0.0 for f in found)


def test_the_threshold_setting_is_the_default(index) -> None:
    with pytest.raises(ValueError, match="threshold: the index .* has no fitted objects threshold"):
        ObjectFinder(index)
    index.set_setting(THRESHOLD_SETTING, 0.25)
    assert ObjectFinder(index).threshold == 0.25
    assert ObjectFinder(index, threshold=0.5).threshold == 0.5
    finder = ObjectFinder(index, threshold=1)
    assert finder.threshold == 1.0 and type(finder.threshold) is float
    assert ObjectFinder(index, threshold=0).threshold == 0.0
    assert ObjectFinder(index).zoom is True


def test_a_stale_stored_threshold_is_refused_naming_how_to_pass_one(index) -> None:
    # Calibrated (by this record) on whitened descriptors; the palette index never whitens.
    record = {"whitened": True, "references": 3}
    index.set_settings({THRESHOLD_SETTING: 0.25, THRESHOLD_SETTING + "_calibrated_on": record})
    message = (
        "^objects_threshold: the index's objects threshold was calibrated on whitened "
        r"descriptors \(3 references\) but .* again, or pass one explicitly "
        r"\(identify --objects-threshold\)$"
    )
    with pytest.raises(StaleThresholdError, match=message):
        ObjectFinder(index)
    assert ObjectFinder(index, threshold=0.5).threshold == 0.5  # one given: not read


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"threshold": True}, TypeError, "threshold: expected a number"),
        ({"threshold": "0.5"}, TypeError, "threshold: expected a number"),
        ({"threshold": -0.01}, ValueError, "threshold: expected a number in"),
        ({"threshold": 1.01}, ValueError, "threshold: expected a number in"),
        ({"threshold": 0.5, "zoom": 1}, TypeError, "zoom: expected a bool"),
    ],
)
def test_bad_finder_options_are_refused(index, options, error, message) -> None:
    with pytest.raises(error, match=message):
        ObjectFinder(index, **options)


def test_bad_indexes_are_refused(index, tmp_path) -> None:
    with pytest.raises(TypeError, match="index: expected an InstanceIndex"):
        ObjectFinder(str(index.path), threshold=0.5)
    with (
        InstanceIndex.create(tmp_path / "empty", tiny_recipe()) as empty,
        pytest.raises(ValueError, match="holds no reference images"),
    ):
        ObjectFinder(empty, threshold=0.5)


def test_neighbours_per_view_cover_the_largest_instance(tmp_path) -> None:
    # Green has two references (green, and green with a black strip): k = 3 neighbours, so
    # a mostly green view still sees its best other instance (blue) after green's two.
    with palette_index(
        tmp_path / "index",
        tmp_path / "refs",
        {
            "green": [solid(GREEN), photo(32, 32, ((0, 0, 24, 32), GREEN))],
            "blue": [solid(BLUE)],
            "white": [solid(WHITE)],
        },
        tiny_recipe(query_windows=((1.0, 1),)),
    ) as index:
        finder = ObjectFinder(index, threshold=0.0, zoom=False)
        scene = photo(32, 64, ((0, 0, 40, 32), GREEN), ((40, 0, 64, 32), BLUE))
        (found,) = finder.find(scene)
        query = 5 * PALETTE[GREEN] + 3 * PALETTE[BLUE]
        similarity = cos(query, PALETTE[GREEN])
        assert found.instance == "green"
        # Hubness of the solid green reference: blue and white, both 0.
        assert found.confidence == pytest.approx(similarity - cos(query, PALETTE[BLUE]), abs=1e-5)


# -- calibration ----------------------------------------------------------------------------


def above(value: float) -> float:
    return float(np.nextafter(np.float32(value), np.float32(2), dtype=np.float32))


@pytest.mark.filterwarnings("error::RuntimeWarning")  # no mean of an empty recall list
def test_distractors_alone_fit_the_threshold_over_their_best_candidates(index, tmp_path) -> None:
    # A red photo: every view names red at min(1 − 0.2, 1 − 0.8) = 0.2, none of it there.
    path = tmp_path / "red.png"
    solid(RED).save(path)
    fit = calibrate_objects(index, target_far=0.0, scenes=0, references=0, distractors=[path])
    assert fit.threshold == pytest.approx(above(0.2), abs=1e-6)
    assert (fit.far, fit.photos, fit.target_far) == (0.0, 1, 0.0)
    assert math.isnan(fit.recall)
    assert index.get_setting(THRESHOLD_SETTING) == fit.threshold
    assert index.get_setting(THRESHOLD_SETTING + "_fit") == {**fit.to_dict(), "recall": None}
    assert fit.to_dict()["recall"] is None


def test_references_are_known_photos_of_their_own_instance(index, tmp_path) -> None:
    # Each reference photo names only itself: nothing invented (0); red and yellow score
    # 0.2, green, blue and white 1. At threshold 0.2+ two of five are missed.
    green = tmp_path / "green.png"
    solid(GREEN).save(green)
    fit = calibrate_objects(index, target_far=0.5, scenes=0, references=5, distractors=[green])
    # Unknown-best values: five references 0 and a green distractor 1 (green is not in it).
    assert fit.photos == 6
    assert fit.threshold == pytest.approx(above(0.0), abs=1e-6)
    assert fit.recall == 1.0 and fit.far == pytest.approx(1 / 6)
    fit = calibrate_objects(index, target_far=0.0, scenes=0, references=5, distractors=[green])
    # Nothing accepts none of the six: the threshold tops out at 1, which green, blue and
    # white reach (3 of 5 references named) and so does the green distractor.
    assert fit.threshold == 1.0 and fit.recall == pytest.approx(0.6)
    assert fit.far == pytest.approx(1 / 6)
    assert index.get_setting(THRESHOLD_SETTING + "_fit")["recall"] == pytest.approx(0.6)


def test_references_are_an_even_sample_of_the_readable_files(index, tmp_path) -> None:
    by_instance = {i["instance"]: Path(i["source"]) for i in index.images()}
    by_instance["white"].unlink()
    fit = calibrate_objects(index, target_far=0.0, scenes=0, references=2)
    # Readable (in index order, white gone): the first and the last are sampled.
    readable = [i["instance"] for i in index.images() if i["instance"] != "white"]
    assert fit.photos == 2
    sampled = {readable[0], readable[-1]}
    scores = {"red": 0.2, "yellow": 0.2, "green": 1.0, "blue": 1.0}
    expected_recall = np.mean([scores[s] >= fit.threshold for s in sorted(sampled)])
    assert fit.recall == pytest.approx(expected_recall)
    fit = calibrate_objects(index, target_far=0.0, scenes=0, references=10)
    assert fit.photos == 4


def test_scenes_are_composited_from_the_references(index) -> None:
    fit = calibrate_objects(index, target_far=0.2, scenes=3, references=0, seed=3)
    assert fit.photos == 3
    assert 0.0 <= fit.recall <= 1.0 and fit.far <= 0.2
    again = calibrate_objects(index, target_far=0.2, scenes=3, references=0, seed=3)
    assert again == fit


def test_no_photo_or_no_readable_file_is_an_error(index) -> None:
    with pytest.raises(ValueError, match="no photo to fit on"):
        calibrate_objects(index, scenes=0, references=0)
    for image in index.images():
        Path(image["source"]).unlink()
    with pytest.raises(ValueError, match="no reference file is readable"):
        calibrate_objects(index, scenes=0, references=1)
    with pytest.raises(ValueError, match="no reference file is readable"):
        calibrate_objects(index, scenes=1, references=0)


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"target_far": True}, TypeError, "target_far: expected a number"),
        ({"target_far": "0.1"}, TypeError, "target_far: expected a number"),
        ({"target_far": -0.1}, ValueError, "target_far: expected a number in"),
        ({"target_far": 1.0}, ValueError, "target_far: expected a number in"),
        ({"scenes": -1}, ValueError, "scenes: expected an int >= 0"),
        ({"scenes": True}, ValueError, "scenes: expected an int >= 0"),
        ({"scenes": 1.0}, ValueError, "scenes: expected an int >= 0"),
        ({"references": -1}, ValueError, "references: expected an int >= 0"),
        ({"references": False}, ValueError, "references: expected an int >= 0"),
        ({"seed": True}, TypeError, "seed: expected an int"),
        ({"seed": 1.0}, TypeError, "seed: expected an int"),
    ],
)
def test_bad_calibration_options_are_refused(index, options, error, message) -> None:
    with pytest.raises(error, match=message):
        calibrate_objects(index, **options)
    with pytest.raises(TypeError, match="index: expected an InstanceIndex"):
        calibrate_objects(str(index.path))


def test_target_far_zero_and_int_are_accepted(index, tmp_path) -> None:
    path = tmp_path / "red.png"
    solid(RED).save(path)
    fit = calibrate_objects(index, target_far=0, scenes=0, references=0, distractors=[path])
    assert fit.target_far == 0.0 and type(fit.target_far) is float


def test_without_windows_the_whole_view_is_one_window(tmp_path) -> None:
    with palette_index(
        tmp_path / "index",
        tmp_path / "refs",
        {"green": [solid(GREEN)], "blue": [solid(BLUE)]},
    ) as index:
        finder = ObjectFinder(index, threshold=0.0, zoom=False)
        (found,) = finder.find(photo(32, 64, ((0, 0, 40, 32), GREEN), ((40, 0, 64, 32), BLUE)))
        assert (found.instance, found.box) == ("green", (0, 0, 64, 32))
        query = 5 * PALETTE[GREEN] + 3 * PALETTE[BLUE]
        expected = cos(query, PALETTE[GREEN]) - cos(query, PALETTE[BLUE])
        assert found.confidence == pytest.approx(expected, abs=1e-5)


def test_a_bad_photo_is_an_error_naming_it(index) -> None:
    finder = ObjectFinder(index, threshold=0.0)
    flat = np.zeros((32, 32), np.uint8)
    for call in (finder.find, finder.candidates):
        with pytest.raises(ValueError, match=r"^image: expected a numpy"):
            call(flat)
    features, _ = index.describer.query_features(SCENE)
    for call in (finder.find_in, finder.candidates_in):
        with pytest.raises(ValueError, match=r"^image: expected a numpy"):
            call(features, (32, 64), flat)
    with pytest.raises(ValueError, match=r"^wall: expected a numpy"):
        finder.find(flat, "wall")
    with pytest.raises(ValueError, match=r"^wall: expected a numpy"):
        finder.find_in(features, (32, 64), flat, "wall")


def test_zoomed_crops_too_small_for_the_backbone_are_left_out(index) -> None:
    # At the query side a half-width crop of a square photo is half as wide as the photo: with
    # a backbone minimum above that (a query side below twice the minimum) the whole photo is
    # described and its crops are not, instead of the crop's refusal failing the photo.
    side = index.recipe.query_side
    square = photo(32, 32, ((0, 0, 16, 32), GREEN), ((16, 0, 32, 32), BLUE))
    whole = ObjectFinder(index, threshold=0.0, zoom=False).candidates(square, "gallery.png")
    zoomed = ObjectFinder(index, threshold=0.0)
    index.describer.min_input_size = side // 2 + 1
    index.describer.seen.clear()
    assert zoomed.candidates(square, "gallery.png") == whole
    assert index.describer.seen == [(32, 32)]  # the whole photo, no crop
    features, _ = index.describer.query_features(square)
    assert zoomed.candidates_in(features, (32, 32), square, "gallery.png") == whole
    index.describer.min_input_size = side // 2  # crops just large enough: described again
    index.describer.seen.clear()
    assert len(zoomed.candidates(square, "gallery.png")) == 3
    assert index.describer.seen == [(32, 32), (32, 16), (32, 16)]
    with pytest.raises(ValueError, match=r"^thin\.png: below the backbone's minimum"):
        zoomed.find(photo(32, 2, ((0, 0, 2, 32), GREEN)), "thin.png")  # the photo itself


def test_each_zoomed_crop_of_a_portrait_photo_is_sized_on_its_own(index) -> None:
    # A 33×32 photo (taller than wide) is cut across its height: rows 0-16 (16×32) and
    # 16-33 (17×32). At the query side 448 their shorter sides are 224 and 238 (a whole
    # 33×32 photo's: 434); a crop sized 49×32 by mistake (bottom + top) would be 293.
    assert index.recipe.query_side == 448
    portrait = photo(33, 32, ((0, 0, 32, 16), GREEN), ((0, 16, 32, 33), BLUE))
    zoomed = ObjectFinder(index, threshold=0.0)
    for minimum, crops_described in [(230, [(17, 32)]), (260, []), (224, [(16, 32), (17, 32)])]:
        index.describer.min_input_size = minimum
        index.describer.seen.clear()
        zoomed.candidates(portrait, "portrait.png")
        assert index.describer.seen == [(33, 32), *crops_described], minimum


def test_a_jpeg_is_decoded_reduced_to_the_query_side(tmp_path) -> None:
    with palette_index(
        tmp_path / "index",
        tmp_path / "refs",
        {"green": [solid(GREEN)], "blue": [solid(BLUE)]},
        tiny_recipe(query_windows=HALVES, max_side=16),
    ) as index:
        path = tmp_path / "scene.jpg"
        photo(64, 128, ((0, 0, 64, 64), GREEN), ((96, 0, 128, 64), BLUE)).save(path, quality=95)
        finder = ObjectFinder(index, threshold=0.2, zoom=False)
        index.describer.seen.clear()
        (found,) = finder.find(path)
        # Draft mode: the smallest 1/2^n decode at least twice 8 × 16: 16 × 32.
        assert index.describer.seen == [(16, 32)]
        # Cells 2 × 4, windows 1 × 2 cells; the box in the file's 64 × 128 pixels.
        assert (found.instance, found.box) == ("green", (0, 0, 64, 32))
        assert found.confidence == pytest.approx(1 - 1 / math.sqrt(2), abs=1e-3)


def test_scores_above_one_are_clipped(tmp_path) -> None:
    # Cyan is the opposite of red: red's hubness is -1 and its lead over cyan 2.
    with palette_index(
        tmp_path / "index",
        tmp_path / "refs",
        {"red": [solid(RED)], "cyan": [solid(CYAN)]},
        tiny_recipe(query_windows=((1.0, 1),)),
    ) as index:
        finder = ObjectFinder(index, threshold=1.0, zoom=False)
        (candidate,) = finder.candidates(solid(RED))
        assert candidate.score == pytest.approx(2.0, abs=1e-5)
        (found,) = finder.find(solid(RED))
        assert found.confidence == 1.0


def record_candidates(monkeypatch) -> list:
    seen: list = []
    real = ObjectFinder.candidates

    def candidates(self, image, name="image"):
        seen.append((image, name))
        return real(self, image, name)

    monkeypatch.setattr(ObjectFinder, "candidates", candidates)
    return seen


def test_the_reference_sample_spans_the_readable_files(index, monkeypatch) -> None:
    seen = record_candidates(monkeypatch)
    sources = [i["source"] for i in index.images()]
    calibrate_objects(index, scenes=0, references=3)
    assert seen == [(sources[0], sources[0]), (sources[2], sources[2]), (sources[4], sources[4])]
    seen.clear()
    Path(sources[4]).unlink()
    calibrate_objects(index, scenes=0, references=2)
    assert [photo for photo, _ in seen] == [sources[0], sources[3]]


def test_a_reference_that_shows_something_else_counts_as_missed_and_invented(
    index, tmp_path
) -> None:
    # red's file now shows green: its photo names green (invented, 1) and misses red.
    red = next(Path(i["source"]) for i in index.images() if i["instance"] == "red")
    solid(GREEN).save(red)
    fit = calibrate_objects(index, target_far=0.0, scenes=0, references=5)
    assert fit.threshold == 1.0 and fit.far == pytest.approx(0.2)
    # Named at threshold 1: green, blue and white (1 each); red missed, yellow 0.2.
    assert fit.recall == pytest.approx(0.6)


def test_scene_photos_are_searched_under_the_name_scene(index, monkeypatch) -> None:
    seen = record_candidates(monkeypatch)
    calls = []
    real = objects._scenes

    def scenes(references, count, side, seed):
        calls.append((list(references), count, side, seed))
        return real(references, count, side, seed)

    monkeypatch.setattr(objects, "_scenes", scenes)
    fit = calibrate_objects(index, scenes=2, references=0, seed=5)
    readable = [(i["source"], index.instances.index(i["instance"])) for i in index.images()]
    assert calls == [(readable, 2, index.recipe.query_side, 5)]
    assert [name for _, name in seen] == ["scene", "scene"] and fit.photos == 2


class Composer:
    """Records what _scenes asks of SceneComposer; hangs every other reference it gets."""

    made: list = []

    def __init__(self, size, scale, others):
        self.options = (size, scale, others)
        self.calls = []
        Composer.made.append(self)

    def __call__(self, main, rng, others):
        self.calls.append((main.size, main.getpixel((0, 0)), [o.getpixel((0, 0)) for o in others]))
        return Scene(main, (0, 0, 1, 1), np.zeros((4, 2)), ((0, 0, 1, 1),) * len(others))


def test_scenes_hang_a_reference_and_another_one_beside_it(tmp_path, monkeypatch) -> None:
    colours = {0: RED, 1: GREEN, 2: BLUE}
    references = []
    for code, colour in colours.items():
        path = tmp_path / f"{code}.png"
        solid(colour, 64).save(path)
        references.append((str(path), code))
    Composer.made = []
    monkeypatch.setattr(objects, "SceneComposer", Composer)
    scenes = objects._scenes(references, 6, 40, seed=1)
    (composer,) = Composer.made
    assert composer.options == (40, (0.4, 0.8), 1)
    assert len(scenes) == 6
    for (_image, truth), (size, main, others) in zip(scenes, composer.calls, strict=True):
        assert size == (40, 40)  # the reference thumbnailed to the scene's side
        assert len(others) == 1 and others[0] != main
        by_colour = {colours[c]: c for c in colours}
        assert truth == {by_colour[main], by_colour[others[0]]}
    assert objects._scenes(references, 6, 40, seed=1)[0][1] == scenes[0][1]
    draws = [sorted(t) for _, t in objects._scenes(references, 6, 40, seed=2)]
    assert draws != [sorted(t) for _, t in scenes]


def test_two_references_always_hang_together(tmp_path, monkeypatch) -> None:
    # with exactly two references both are drawn, never one twice (without replacement)
    references = []
    for code, colour in ((0, RED), (1, GREEN)):
        solid(colour, 64).save(tmp_path / f"{code}.png")
        references.append((str(tmp_path / f"{code}.png"), code))
    Composer.made = []
    monkeypatch.setattr(objects, "SceneComposer", Composer)
    scenes = objects._scenes(references, 8, 32, seed=0)
    assert [truth for _, truth in scenes] == [{0, 1}] * 8
    assert all(others and others[0] != main for _, main, others in Composer.made[0].calls)


def test_a_single_reference_scene_hangs_it_alone(tmp_path, monkeypatch) -> None:
    path = tmp_path / "only.png"
    solid(RED, 64).save(path)
    Composer.made = []
    monkeypatch.setattr(objects, "SceneComposer", Composer)
    scenes = objects._scenes([(str(path), 3)], 2, 32, seed=0)
    assert [truth for _, truth in scenes] == [{3}, {3}]
    assert [others for _, _, others in Composer.made[0].calls] == [[], []]


def test_scene_references_are_decoded_for_the_scene_side(tmp_path, monkeypatch) -> None:
    path = tmp_path / "wide.jpg"
    photo(64, 128, ((0, 0, 128, 64), RED)).save(path)
    targets = []
    real = objects.decode_image

    def decode(source, target=None):
        targets.append(target(64, 128))
        return real(source, target)

    monkeypatch.setattr(objects, "decode_image", decode)
    image = objects._thumbnail(str(path), 32)
    assert targets == [(16, 32)] and image.size == (32, 16)


def test_calibration_defaults(index, monkeypatch, capsys) -> None:
    seen = record_candidates(monkeypatch)
    calls = []

    def scenes(references, count, side, seed):
        calls.append((count, seed))
        return []

    monkeypatch.setattr(objects, "_scenes", scenes)
    fit = calibrate_objects(index)
    assert calls == [(60, 0)]
    assert len(seen) == fit.photos == 5  # every reference (fewer than 60)
    assert fit.target_far == 0.05
    assert capsys.readouterr().err == ""  # no progress bar unless asked
    # no monitor thread: a process forked after this test (mutmut) must not inherit its lock
    monkeypatch.setattr(tqdm, "monitor_interval", 0)
    calibrate_objects(index, progress=True)
    err = capsys.readouterr().err.replace("\r", "\n")
    assert re.search(r"^calibrate objects: 100%\|.*\| 5/5 \[.*(img/s|s/img)\]$", err, re.M), err


def test_scenes_and_references_are_fitted_together(index, monkeypatch) -> None:
    seen = record_candidates(monkeypatch)
    fit = calibrate_objects(index, scenes=2, references=3, seed=1)
    assert fit.photos == 5 and len(seen) == 5
    assert [name for _, name in seen][:2] == ["scene", "scene"]


def _distractors_scoring(index, tmp_path, monkeypatch, scores: list[float]) -> list[Path]:
    """Distractor files whose best (invented) candidate scores ``scores``."""
    paths = []
    for i, _ in enumerate(scores):
        solid(RED).save(tmp_path / f"d{i}.png")
        paths.append(tmp_path / f"d{i}.png")
    by_name = {str(p): s for p, s in zip(paths, scores, strict=True)}

    def candidates(self, image, name="image"):
        return [Candidate(0, by_name[image], 0, (0, 0, 1, 1))]

    monkeypatch.setattr(ObjectFinder, "candidates", candidates)
    return paths


def test_negative_best_scores_count_as_zero(index, tmp_path, monkeypatch) -> None:
    # a view scores below 0 when its reference's hubness exceeds its similarity
    paths = _distractors_scoring(index, tmp_path, monkeypatch, [-0.3])
    fit = calibrate_objects(index, target_far=0.0, scenes=0, references=0, distractors=paths)
    assert fit.threshold == float(np.nextafter(np.float32(0), np.float32(1)))  # just above 0


def test_the_far_is_measured_on_the_float32_scores_the_threshold_comes_from(
    index, tmp_path, monkeypatch
) -> None:
    # t: the float32 just above 0.25; a score 2^-28 below t rounds to t in float32
    t = float(np.nextafter(np.float32(0.25), np.float32(1)))
    paths = _distractors_scoring(index, tmp_path, monkeypatch, [t - 2.0**-28, 0.25])
    fit = calibrate_objects(index, target_far=0.5, scenes=0, references=0, distractors=paths)
    assert fit.threshold == t and fit.far == 0.5
