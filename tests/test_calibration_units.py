"""calibrate() on tiny palette indexes (tests/pipeline_fakes.py): the threshold at a target
false-accept rate worked out by hand, what it is fitted on (views, distractors, re-ranker)
and what it stores; the learnt post-processing refitted as the index itself fits it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from pyinstance import calibration
from pyinstance.calibration import DEFAULT_VIEWS, calibrate, learnt_postprocessing_fit
from pyinstance.classify import NearestNeighbour, fit_threshold
from pyinstance.data.images import ImageDecodeError
from pyinstance.index import InstanceIndex
from pyinstance.rerank.verifier import RecipeMismatchError
from tests.pipeline_fakes import (
    BLACK,
    BLUE,
    DIM,
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

#: red · yellow, the only similarity between different instances below.
CLOSE = float(PALETTE[RED] @ PALETTE[YELLOW])


def above(value: float) -> float:
    """The smallest float32 above ``value``: the threshold that rejects exactly ``value``."""
    return float(np.nextafter(np.float32(value), np.float32(2), dtype=np.float32))


@pytest.fixture
def index(tmp_path: Path) -> InstanceIndex:
    """Single-reference instances red, yellow, green and blue: leaving one instance out,
    red and yellow each find the other at ``CLOSE``, green and blue find nothing alike (0)."""
    built = palette_index(
        tmp_path / "index",
        tmp_path / "refs",
        {
            "red": [solid(RED)],
            "yellow": [solid(YELLOW)],
            "green": [solid(GREEN)],
            "blue": [solid(BLUE)],
        },
    )
    yield built
    built.close()


@pytest.mark.parametrize(
    ("target_far", "threshold"), [(0.0, above(CLOSE)), (0.25, above(CLOSE)), (0.5, above(0.0))]
)
def test_the_threshold_accepts_at_most_the_target_share_of_unknown_queries(
    index, target_far, threshold
) -> None:
    # Unknown confidences (each instance left out): CLOSE, CLOSE, 0, 0. Accepting at most
    # 0 or 1 of 4 needs a threshold above CLOSE; 2 of 4, above 0.
    fit = calibrate(index, target_far=target_far, views=0)
    assert fit.threshold == pytest.approx(threshold, abs=1e-6)
    assert fit.target_far == target_far
    assert fit.unknown == {"leave_instance_out": 4, "distractors": 0}
    assert fit.known == {"leave_one_out": 0, "views": 0}
    assert fit.far == (0.0 if target_far < 0.5 else 0.5)


def test_the_fit_and_the_classifier_are_stored_as_the_index_defaults(index) -> None:
    fit = calibrate(index, views=0)
    assert index.get_setting("threshold") == fit.threshold
    assert index.get_setting("threshold_fit") == fit.to_dict()
    assert index.get_setting("classifier") == "nn"
    assert index.get_setting("classifier_options") == {}
    assert index.get_setting("reranker") is None
    assert fit.target_far == 0.05
    calibrate(index, classifier="knn_vote", classifier_options={"k": 2}, views=0)
    assert index.get_setting("classifier") == "knn_vote"
    assert index.get_setting("classifier_options") == {"k": 2}


def test_the_classifier_options_build_the_classifier_fitted(index, monkeypatch) -> None:
    built: list[tuple[str, dict]] = []
    real = calibration.fit_threshold

    def record(model: Any, *args: Any, **kwargs: Any) -> Any:
        built.append((type(model).__name__, model.k))
        return real(model, *args, **kwargs)

    monkeypatch.setattr(calibration, "fit_threshold", record)
    calibrate(index, classifier="knn_vote", classifier_options={"k": 3}, views=0)
    assert built == [("KnnVote", 3)]


def test_views_of_single_reference_instances_are_known_queries(index, monkeypatch) -> None:
    seeds: list[tuple[int, int]] = []
    real = calibration.augment_views

    def record(image: Image.Image, *, count: int, seed: int) -> list[Image.Image]:
        seeds.append((count, seed))
        return real(image, count=count, seed=seed)

    monkeypatch.setattr(calibration, "augment_views", record)
    fit = calibrate(index, views=3, seed=7, target_far=0.0)
    assert fit.known == {"leave_one_out": 0, "views": 12}
    assert fit.misidentified == 0  # each view is labelled with its own instance
    assert fit.frr == 0.0  # a view of a flat colour is that colour: confidence 1
    assert seeds == [(3, 7), (3, 8), (3, 9), (3, 10)]
    assert fit.threshold == pytest.approx(above(CLOSE), abs=1e-6)
    seeds.clear()
    calibrate(index, views=1)
    assert seeds == [(1, 0), (1, 1), (1, 2), (1, 3)]


def test_no_views_when_no_reference_file_is_left(index, tmp_path) -> None:
    for image in index.images():
        Path(image["source"]).unlink()
    fit = calibrate(index, views=2, target_far=0.25)
    assert fit.known == {"leave_one_out": 0, "views": 0}
    assert fit.threshold == pytest.approx(above(CLOSE), abs=1e-6)


def test_views_default_and_skip_instances_with_several_references(tmp_path) -> None:
    with palette_index(
        tmp_path / "index",
        tmp_path / "refs",
        {"red": [solid(RED), solid(YELLOW)], "green": [solid(GREEN)], "blue": [solid(BLUE)]},
    ) as index:
        fit = calibrate(index)
        assert fit.known["views"] == DEFAULT_VIEWS * 2 == 8
        assert fit.known["leave_one_out"] == 2  # red's two references, each held out


def test_a_reference_file_gone_since_indexing_gives_no_views(index, tmp_path) -> None:
    (tmp_path / "refs" / "green" / "green_0.png").unlink()
    fit = calibrate(index, views=2)
    assert fit.known == {"leave_one_out": 0, "views": 6}


def test_distractors_are_unknown_queries(index, tmp_path) -> None:
    # Three quarters red on black: its nearest reference (red) at 3/sqrt(10).
    path = tmp_path / "distractor.png"
    photo(32, 32, ((0, 0, 24, 32), RED)).save(path)
    fit = calibrate(index, views=0, distractors=[path], target_far=0.0)
    assert fit.unknown == {"leave_instance_out": 4, "distractors": 1}
    assert fit.threshold == pytest.approx(above(3 / np.sqrt(10)), abs=1e-6)
    assert fit.far == 0.0
    fit = calibrate(index, views=0, distractors=[str(path)], target_far=0.2)
    assert fit.threshold == pytest.approx(above(CLOSE), abs=1e-6)  # 1 of 5 may pass


def test_a_distractor_that_cannot_be_read_is_an_error_naming_it(index, tmp_path) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(ImageDecodeError, match="broken.png"):
        calibrate(index, views=0, distractors=[broken])
    with pytest.raises(FileNotFoundError, match="missing.png"):
        calibrate(index, views=0, distractors=[tmp_path / "missing.png"])


def test_progress_bars_only_when_asked(index, tmp_path, capsys) -> None:
    path = tmp_path / "distractor.png"
    solid(WHITE).save(path)
    calibrate(index, views=1, distractors=[path])
    assert capsys.readouterr().err == ""
    calibrate(index, views=1, distractors=[path], progress=True)
    err = capsys.readouterr().err
    assert re.search(r"(^|\r|\n)views: ", err) and re.search(r"(^|\r|\n)distractors: ", err)


class ConstantScorer:
    recipe = None
    k = 2

    def score(self, queries: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        return np.full(candidates.shape[:2], 0.375, np.float32)


def test_a_reranker_is_fitted_on_and_stored(index) -> None:
    fit = calibrate(index, views=0, target_far=0.0, reranker=ConstantScorer())
    assert fit.threshold == pytest.approx(above(0.375), abs=1e-6)  # every confidence 0.375
    assert index.get_setting("reranker") == "ConstantScorer"
    with pytest.raises(ValueError, match="reranker_options"):
        calibrate(index, views=0, reranker=ConstantScorer(), reranker_options={"k": 1})
    other = ConstantScorer()
    other.recipe = tiny_recipe().with_(dim=8).to_dict()
    with pytest.raises(RecipeMismatchError, match="reranker: trained on the descriptors"):
        calibrate(index, views=0, reranker=other)


@pytest.mark.parametrize("views", [-1, True, 1.5, "2"])
def test_bad_views_are_refused(index, views) -> None:
    with pytest.raises(ValueError, match="views: expected an int >= 0"):
        calibrate(index, views=views)


def test_bad_arguments_are_refused(index, tmp_path) -> None:
    with pytest.raises(TypeError, match="index: expected an InstanceIndex"):
        calibrate(str(index.path))
    with pytest.raises(TypeError, match="classifier: expected a registered name"):
        calibrate(index, classifier=NearestNeighbour())
    with pytest.raises(LookupError, match="no_such"):
        calibrate(index, classifier="no_such")
    with (
        InstanceIndex.create(tmp_path / "empty", tiny_recipe()) as empty,
        pytest.raises(ValueError, match="holds no reference images"),
    ):
        calibrate(empty)
    assert index.get_setting("threshold") is None  # nothing stored by a refused call


# -- learnt post-processing -------------------------------------------------------------


def rows(n: int, seed: int, per_image: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = (n, DIM) if per_image == 1 else (n, per_image, DIM)
    x = 1.5 + rng.standard_normal(shape) * np.geomspace(1.0, 0.05, DIM)
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def filled(path: Path, postprocess: dict, n: int = 24, per_image_scales=(1.0,), **changes):
    index = InstanceIndex.create(
        path, tiny_recipe(postprocess=postprocess, scales=per_image_scales, **changes)
    )
    index.add_descriptors(
        rows(n, 0, index.recipe.descriptors_per_image),
        [f"i{i % (n // 2)}" for i in range(n)],
        [f"im{i}" for i in range(n)],
        index.recipe,
    )
    return index


@pytest.mark.parametrize("postprocess", [{}, {"qe": {"k": 2, "alpha": 3.0}}])
def test_nothing_is_refitted_when_the_recipe_learns_nothing(tmp_path, postprocess) -> None:
    with filled(tmp_path / "index", postprocess) as index:
        assert learnt_postprocessing_fit(index, index.labels()) is None


@pytest.mark.parametrize(
    ("postprocess", "scales", "changes"),
    [
        ({"whiten": {}}, (1.0,), {}),
        ({"whiten": {}, "multiscale": {"reduction": "max"}}, (1.0, 0.5), {}),
        ({"whiten": {}}, (1.0,), {"query_windows": ((1.0, 1), (0.5, 2))}),
        # Weighted scales are summed into one descriptor per query (scale_sets) ...
        ({"whiten": {}, "scale_weights": [2, 1]}, (1.0, 0.5), {}),
        # ... and query expansion reads the refitted references.
        ({"whiten": {}, "qe": {"k": 2, "alpha": 3.0}}, (1.0,), {}),
    ],
)
def test_the_refit_on_every_reference_is_the_index_own_post_processing(
    tmp_path, postprocess, scales, changes
) -> None:
    with filled(tmp_path / "index", postprocess, per_image_scales=scales, **changes) as index:
        refit = learnt_postprocessing_fit(index, index.labels())
        references, queries = refit(np.ones(len(index), dtype=bool))
        np.testing.assert_allclose(references, index.descriptors(), atol=1e-5)
        per_query = 1 if "query_windows" in changes else len(scales)
        raw = rows(5, 1, per_query + 1)[:, :per_query]
        got = queries(raw.reshape(5, -1))
        np.testing.assert_allclose(got, index.postprocess_queries(raw)[:, 0], atol=1e-5)


def test_the_refit_on_a_subset_is_the_post_processing_of_an_index_of_that_subset(
    tmp_path,
) -> None:
    with filled(tmp_path / "index", {"whiten": {}}) as index:
        keep = np.arange(len(index)) % 3 != 0
        references, queries = learnt_postprocessing_fit(index, index.labels())(keep)
        instances = [index.instances[c] for c in index.labels()[keep]]
        with InstanceIndex.create(tmp_path / "subset", index.recipe) as subset:
            subset.add_descriptors(
                index.raw_descriptors()[keep],
                instances,
                [f"s{i}" for i in range(int(keep.sum()))],
                subset.recipe,
            )
            np.testing.assert_allclose(references, subset.descriptors(), atol=1e-5)
            raw = rows(4, 2)
            got = queries(raw)
            np.testing.assert_allclose(got, subset.postprocess_queries(raw)[:, 0], atol=1e-5)


def test_a_fold_below_min_references_is_whitened_when_the_index_is(tmp_path) -> None:
    """The index (24 references, whitening from 20) is searched whitened: a refit on 16 of
    them whitens too, as an index of those 16 that always whitens does."""
    with filled(tmp_path / "index", {"whiten": {"min_references": 20}}) as index:
        assert index.whitened
        keep = np.arange(len(index)) % 3 != 0
        references, queries = learnt_postprocessing_fit(index, index.labels())(keep)
        instances = [index.instances[c] for c in index.labels()[keep]]
        always = index.recipe.with_(postprocess={"whiten": {}})
        with InstanceIndex.create(tmp_path / "subset", always) as subset:
            subset.add_descriptors(
                index.raw_descriptors()[keep],
                instances,
                [f"s{i}" for i in range(int(keep.sum()))],
                subset.recipe,
            )
            assert subset.whitened
            np.testing.assert_allclose(references, subset.descriptors(), atol=1e-5)
            raw = rows(4, 2)
            np.testing.assert_allclose(
                queries(raw), subset.postprocess_queries(raw)[:, 0], atol=1e-5
            )


@pytest.mark.parametrize("scales", [(1.0,), (1.0, 0.5)])
def test_a_learnt_post_processing_is_calibrated_on_raw_descriptors(tmp_path, scales) -> None:
    postprocess = {"whiten": {}}
    if len(scales) > 1:
        postprocess["multiscale"] = {"reduction": "max"}
    with filled(tmp_path / "index", postprocess, per_image_scales=scales) as index:
        labels = index.labels()
        fit = calibrate(index, views=0, target_far=0.1)
        raw = index.raw_descriptors().reshape(len(labels), -1)
        expected = fit_threshold(
            NearestNeighbour(),
            raw,
            labels,
            target_far=0.1,
            refit=learnt_postprocessing_fit(index, labels),
        )
        assert fit.threshold == expected.threshold and fit.far == expected.far
        assert fit.known == expected.known and fit.unknown == expected.unknown
        processed = fit_threshold(NearestNeighbour(), index.descriptors(), labels, target_far=0.1)
        assert processed.to_dict() != fit.to_dict()


def mixes() -> dict[str, list[Image.Image]]:
    """Twelve instances of two-colour photos (a fraction of the width in one colour)."""
    colours = [RED, GREEN, BLUE, WHITE, YELLOW]
    out = {}
    for i in range(12):
        a, b = colours[i % 5], colours[(i + 1 + i // 5) % 5]
        split = 8 * (1 + i % 3)
        out[f"m{i}"] = [photo(32, 32, ((0, 0, split, 32), a), ((split, 0, 32, 32), b))]
    return out


def test_views_of_a_whitened_index_are_described_raw(tmp_path, monkeypatch) -> None:
    with palette_index(
        tmp_path / "index", tmp_path / "refs", mixes(), tiny_recipe(postprocess={"whiten": {}})
    ) as index:
        described: list[np.ndarray] = []
        real = calibration._first

        def record(rows: np.ndarray) -> np.ndarray:
            described.append(real(rows))
            return described[-1]

        monkeypatch.setattr(calibration, "_first", record)
        fit = calibrate(index, views=1)
        assert fit.known == {"leave_one_out": 0, "views": 12}
        views = np.concatenate(described)
        first = Image.open(index.images()[0]["source"])
        raw = index.describer.queries(calibration.augment_views(first, count=1, seed=0))
        np.testing.assert_allclose(views[:1], raw.reshape(1, -1), atol=1e-6)


def test_query_describers_for_the_fit(tmp_path) -> None:
    windows = ((1.0, 1), (0.5, 2))
    recipe = tiny_recipe(
        query_windows=windows, scales=(1.0, 0.5), postprocess={"multiscale": {"reduction": "max"}}
    )
    index = InstanceIndex.create(tmp_path / "index", recipe)
    index._describer = PaletteDescriber(recipe)
    images = [photo(32, 32, ((0, 0, 16, 32), RED)), solid(GREEN)]
    raw = index.describer.queries(images)
    assert raw.shape == (2, 5, DIM)
    described = calibration._raw_queries(index)(images)
    np.testing.assert_allclose(described, np.repeat(raw[:, :1], 2, axis=1))
    plain = InstanceIndex.create(tmp_path / "plain", tiny_recipe(scales=(1.0, 0.5)))
    plain._describer = PaletteDescriber(plain.recipe)
    np.testing.assert_allclose(
        calibration._raw_queries(plain)(images), plain.describer.queries(images)
    )
    expected = np.stack([PALETTE[RED] + PALETTE[BLACK], PALETTE[GREEN]])
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    processed = calibration._processed_queries(plain)(images)
    assert processed.shape == (2, 1, DIM)
    np.testing.assert_allclose(processed[:, 0], expected, atol=1e-6)
    windowed = InstanceIndex.create(tmp_path / "windowed", tiny_recipe(query_windows=windows))
    windowed._describer = PaletteDescriber(windowed.recipe)
    processed = calibration._processed_queries(windowed)(images)
    assert processed.shape == (2, 1, DIM)
    np.testing.assert_allclose(processed, windowed.describer.queries(images)[:, :1])
    index.close()
    plain.close()
    windowed.close()


def test_rows_and_sets_helpers() -> None:
    raw = np.arange(12, dtype=np.float64).reshape(2, 3, 2)
    flat = calibration._raw_rows(raw)
    assert flat.dtype == np.float32 and flat.flags.c_contiguous
    np.testing.assert_array_equal(flat, raw.reshape(2, 6))
    sets = np.array([[[3.0, 0.0], [0.0, 4.0]], [[1.0, 0.0], [1.0, 0.0]]], np.float32)
    np.testing.assert_allclose(calibration._whole(sets), [[0.6, 0.8], [1.0, 0.0]], atol=1e-6)
    small = sets / 10
    np.testing.assert_allclose(calibration._whole(small), [[0.6, 0.8], [1.0, 0.0]], atol=1e-6)
    np.testing.assert_array_equal(calibration._whole(sets[:, :1]), sets[:, 0])
    np.testing.assert_array_equal(calibration._whole(np.zeros((1, 2, 2))), [[0.0, 0.0]])
    np.testing.assert_array_equal(calibration._first(np.ones((2, 3, 4))), np.ones((2, 12)))


def test_a_post_processing_learnt_from_nothing_is_calibrated_as_searched(tmp_path) -> None:
    # DBA changes the references, QE the queries; neither is refitted per search.
    postprocess = {"dba": {"k": 2, "alpha": 1.0}, "qe": {"k": 2, "alpha": 3.0}}
    with filled(tmp_path / "index", postprocess) as index:
        labels = index.labels()
        fit = calibrate(index, views=0, target_far=0.1)
        expected = fit_threshold(NearestNeighbour(), index.descriptors(), labels, target_far=0.1)
        assert fit.to_dict() == expected.to_dict()
        raw = fit_threshold(NearestNeighbour(), index.raw_descriptors(), labels, target_far=0.1)
        assert raw.to_dict() != fit.to_dict()


def test_views_of_an_expanded_index_are_post_processed(tmp_path, monkeypatch) -> None:
    recipe = tiny_recipe(postprocess={"qe": {"k": 2, "alpha": 3.0}})
    with palette_index(tmp_path / "index", tmp_path / "refs", mixes(), recipe) as index:
        described: list[np.ndarray] = []
        real = calibration._first

        def record(rows: np.ndarray) -> np.ndarray:
            described.append(real(rows))
            return described[-1]

        monkeypatch.setattr(calibration, "_first", record)
        calibrate(index, views=1)
        first = Image.open(index.images()[0]["source"])
        view = calibration.augment_views(first, count=1, seed=0)
        processed = index.describe_queries(view)[:, 0]
        np.testing.assert_allclose(described[0], processed, atol=1e-6)
        assert not np.allclose(processed, index.describer.queries(view)[:, 0], atol=1e-3)
