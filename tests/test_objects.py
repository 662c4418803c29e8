"""Every object in the photo: boxes, selection, the finder on real photos, and the answer
everywhere it goes (identify, CLI, evaluation)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from PIL import Image

from pyinstance.cli import main
from pyinstance.eval.evaluate import evaluate
from pyinstance.eval.report import render_html
from pyinstance.identification import Identifier, identify
from pyinstance.index import InstanceIndex
from pyinstance.objects import (
    THRESHOLD_SETTING,
    Candidate,
    ObjectFinder,
    calibrate_objects,
    select_objects,
    to_pixels,
    without_blend,
    zoom_crops,
)
from tests.recipes import PREVIOUS_DEFAULT

#: The cascade's own recipe (the previous default at smaller sizes: GeM at one scale, queries
#: larger than references, windows), pinned: its expectations (the two-object scene, what is
#: reported missed) were set with it.
RECIPE = PREVIOUS_DEFAULT.with_(max_side=320, query_max_side=448)
THRESHOLD = 0.1


@pytest.fixture(scope="module")
def pairs(shared_data: Path) -> Path:
    return shared_data / "opencv-pairs"


@pytest.fixture(scope="module")
def index(pairs: Path, tmp_path_factory: pytest.TempPathFactory) -> InstanceIndex:
    path = tmp_path_factory.mktemp("objects") / "index"
    built, _ = InstanceIndex.build(path, pairs / "manifest.csv", RECIPE, progress=False)
    built.set_setting(THRESHOLD_SETTING, THRESHOLD)
    yield built
    built.close()


def scene(pairs: Path, names: list[str]) -> Image.Image:
    """Reference photos hung side by side on a plain wall."""
    wall = Image.new("RGB", (1200, 600), (200, 196, 188))
    left = 40
    for name in names:
        picture = Image.open(pairs / "reference" / name).convert("RGB")
        picture.thumbnail((500, 500))
        wall.paste(picture, (left, 50))
        left += picture.width + 80
    return wall


def test_zoom_crops_halve_the_longer_side() -> None:
    assert zoom_crops(300, 640) == [(0, 0, 320, 300), (320, 0, 640, 300)]
    assert zoom_crops(640, 300) == [(0, 0, 300, 320), (0, 320, 300, 640)]
    assert zoom_crops(1, 1) == [(0, 0, 1, 1), (0, 0, 1, 1)]
    with pytest.raises(ValueError, match="at least 1×1"):
        zoom_crops(0, 4)


def test_selection_names_each_instance_once_best_first() -> None:
    box = (0, 0, 10, 10)
    candidates = [
        Candidate(1, 0.2, 10, box),
        Candidate(2, 0.5, 11, box),
        Candidate(1, 0.3, 12, box),
        Candidate(-1, 0.9, -1, box),
    ]
    assert [(c.code, c.row) for c in select_objects(candidates, 0.1)] == [(2, 11), (1, 12)]
    assert [c.code for c in select_objects(candidates, 0.4)] == [2]
    assert select_objects(candidates, 0.6) == []
    assert select_objects([], 0.0) == []


def test_a_whole_photo_blending_its_objects_is_dropped() -> None:
    box = (0, 0, 10, 10)
    whole, left, right = (
        Candidate(7, 0.03, 1, box),
        Candidate(1, 0.06, 2, box),
        Candidate(2, 0.0, 3, box),
    )
    assert without_blend([whole, left, right]) == [left, right]
    confirmed = Candidate(7, 0.02, 4, box)
    assert without_blend([whole, left, confirmed]) == [whole, left, confirmed]
    weaker = Candidate(1, 0.01, 2, box)
    assert without_blend([whole, weaker]) == [whole, weaker]
    assert without_blend([whole]) == [whole] and without_blend([]) == []


def test_cells_to_pixels() -> None:
    assert to_pixels((0, 0, 10, 20), (10, 20), (300, 600)) == (0, 0, 600, 300)
    assert to_pixels((5, 10, 10, 20), (10, 20), (300, 600)) == (300, 150, 600, 300)


def test_two_pictures_on_a_wall_both_named_with_their_boxes(
    index: InstanceIndex, pairs: Path
) -> None:
    found = ObjectFinder(index).find(scene(pairs, ["graf1.png", "home.jpg"]))
    assert {f.instance for f in found} == {"graf", "home"}
    centre = {f.instance: (f.box[0] + f.box[2]) / 2 for f in found}
    assert centre["graf"] < 600 < centre["home"]
    for f in found:
        assert 0 <= f.box[0] < f.box[2] <= 1200 and 0 <= f.box[1] < f.box[3] <= 600
        assert THRESHOLD <= f.confidence <= 1 and f.image_id


def test_the_second_picture_is_found_by_zooming_in(index: InstanceIndex, pairs: Path) -> None:
    """The whole wall names one picture; only its halves, described again, name both."""
    wall = scene(pairs, ["graf1.png", "home.jpg"])
    assert len(ObjectFinder(index, zoom=False).find(wall)) < 2
    assert {f.instance for f in ObjectFinder(index).find(wall)} == {"graf", "home"}
    with pytest.raises(TypeError, match="zoom"):
        ObjectFinder(index, zoom="yes")  # type: ignore[arg-type]


def test_one_picture_is_named_once_and_a_bare_wall_gives_nothing(
    index: InstanceIndex, pairs: Path
) -> None:
    finder = ObjectFinder(index)
    assert [f.instance for f in finder.find(scene(pairs, ["rubberwhale1.png"]))] == ["rubberwhale"]
    assert finder.find(scene(pairs, [])) == []
    assert [f.instance for f in finder.find(pairs / "query" / "graf3.png")] == ["graf"]


def test_threshold_is_required_and_checked(index: InstanceIndex, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="[01]"):
        ObjectFinder(index, threshold=1.5)
    with pytest.raises(TypeError, match="threshold"):
        ObjectFinder(index, threshold="high")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="index"):
        ObjectFinder("index")  # type: ignore[arg-type]
    view = index.pinned()
    with (
        InstanceIndex.create(tmp_path / "empty", RECIPE) as empty,
        pytest.raises(ValueError, match="no reference"),
    ):
        ObjectFinder(empty, threshold=0.5)
    assert ObjectFinder(view).threshold == THRESHOLD


def test_calibration_stores_a_threshold(index: InstanceIndex, pairs: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(index.path, copy)
    with InstanceIndex.open(copy) as other:
        other.set_setting(THRESHOLD_SETTING, None)
        with pytest.raises(ValueError, match="calibrate INDEX --objects"):
            ObjectFinder(other)
        fit = calibrate_objects(
            other,
            target_far=0.0,
            scenes=3,
            references=3,
            distractors=[pairs / "query" / "box_in_scene.png"],
        )
        assert fit.photos == 7 and fit.far == 0.0 and 0.0 <= fit.recall <= 1.0
        assert other.get_setting(THRESHOLD_SETTING) == fit.threshold
        assert other.get_setting(THRESHOLD_SETTING + "_fit")["photos"] == 7
        for bad in (1.0, -0.1):
            with pytest.raises(ValueError, match="target_far"):
                calibrate_objects(other, target_far=bad)
        with pytest.raises(ValueError, match="scenes"):
            calibrate_objects(other, scenes=-1)
        with pytest.raises(ValueError, match="references"):
            calibrate_objects(other, references=1.5)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="no photo to fit on"):
            calibrate_objects(other, scenes=0, references=0)
    argv = ["calibrate", str(copy), "--objects", "--scenes", "2", "--references", "1", "--json"]
    assert main(argv) == 0
    with InstanceIndex.open(copy) as other:
        assert other.get_setting(THRESHOLD_SETTING + "_fit")["photos"] == 3


def test_identify_multi_answers_objects_too(index: InstanceIndex, pairs: Path) -> None:
    (single,) = identify(index, [pairs / "query" / "graf3.png"])
    assert single.objects is None and "objects" not in single.to_dict()
    (multi,) = identify(index, [scene(pairs, ["graf1.png", "home.jpg"])], multi=True)
    assert {f.instance for f in multi.objects} == {"graf", "home"}
    record = multi.to_dict()
    assert {o["instance"] for o in record["objects"]} == {"graf", "home"}
    assert all(len(o["box"]) == 4 for o in record["objects"]) and "objects" in multi.ms
    json.dumps(record)
    (same,) = identify(index, [pairs / "query" / "graf3.png"], multi=True)
    assert same.instance == single.instance
    assert same.confidence == pytest.approx(single.confidence, abs=1e-5)
    with pytest.raises(ValueError, match="only with multi"):
        Identifier(index, objects_threshold=0.2)
    with pytest.raises(TypeError, match="multi"):
        Identifier(index, multi="yes")  # type: ignore[arg-type]


def test_cli_identify_multi_json(index: InstanceIndex, pairs: Path, tmp_path: Path, capsys) -> None:
    photo = tmp_path / "wall.jpg"
    scene(pairs, ["box.png", "aero1.jpg"]).save(photo)
    blank = tmp_path / "blank.jpg"
    scene(pairs, []).save(blank)
    code = main(["identify", str(index.path), str(photo), str(blank), "--multi", "--json"])
    assert code == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {o["instance"] for o in lines[0]["objects"]} == {"box", "aero"}
    assert lines[1]["objects"] == []
    assert main(["identify", str(index.path), str(photo), "--multi"]) == 0
    assert "objects (confidence, box)" in capsys.readouterr().out


def test_evaluate_multi_reports_object_recall_and_precision(
    index: InstanceIndex, pairs: Path, tmp_path: Path
) -> None:
    scene(pairs, ["graf1.png", "home.jpg"]).save(tmp_path / "two.jpg")
    scene(pairs, ["box.png", "basketball1.png"]).save(tmp_path / "other-two.jpg")
    scene(pairs, []).save(tmp_path / "wall.jpg")
    extra = tmp_path / "extra.csv"
    with open(extra, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "instance_ids", "kind"])
        writer.writerow(["two.jpg", "graf;home", "multiple_paintings"])
        writer.writerow(["other-two.jpg", "box;building", "multiple_paintings"])
        writer.writerow(["wall.jpg", "", "not_in_collection"])
    result = evaluate(index, pairs / "manifest.csv", extra, multi=True)
    objects = result.metrics["objects"]
    multi = objects["multi_object"]
    assert (multi["queries"], multi["objects"]) == (2, 4)
    assert multi["found"] <= 3  # 'building' is not in other-two.jpg: it cannot be found
    assert multi["recall"] == multi["found"] / 4
    assert objects["single_object"]["queries"] == 7 and objects["unknown"]["queries"] == 1
    assert objects["unknown"]["named"] == 0
    page = render_html(result)
    assert page.count('<figure class="objects">') == 10
    assert "missed: building" in page and "Every object in the photo" in page
    record = result.to_dict()
    assert all("objects" in q for q in record["per_query"])
    plain = evaluate(index, pairs / "manifest.csv")
    page = render_html(plain)
    assert "objects" not in plain.metrics and '<figure class="objects">' not in page
    assert "Every object in the photo" not in page


def test_objects_in_a_post_processed_index(pairs: Path, tmp_path: Path) -> None:
    """Regions are searched in the index's post-processed space, as whole queries are."""
    recipe = RECIPE.with_(postprocess={"whiten": {"power": 0.5}})
    whitened, _ = InstanceIndex.build(
        tmp_path / "w", pairs / "manifest.csv", recipe, progress=False
    )
    with whitened:
        whitened.set_setting(THRESHOLD_SETTING, THRESHOLD)
        (single,) = identify(whitened, [pairs / "query" / "graf3.png"])
        (multi,) = identify(whitened, [scene(pairs, ["graf1.png", "home.jpg"])], multi=True)
        (same,) = identify(whitened, [pairs / "query" / "graf3.png"], multi=True)
    assert "graf" in {f.instance for f in multi.objects}
    assert same.instance == single.instance == "graf"
    assert same.confidence == pytest.approx(single.confidence, abs=1e-5)
