"""``pyinstance index build|add|remove|refit|compact|info``: each command's printed answer and
exit status, in every branch (text and ``--json``), with the tiny networks of
test_cli_units.py (a plain-coloured photo's descriptor is its normalised colour).

Every expected line is written here from the photos, ids and settings the test makes: three
photos (``red/0.png``, ``red/1.png``, ``green/0.png``), so a removal leaves 2 images and a
collection version (images ever added + images ever removed) of 4.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import pyinstance
from pyinstance.index import Describer, InstanceIndex
from pyinstance.models.trained import TrainedModel
from tests.index import test_cli_units
from tests.index.test_cli_units import COLOURS, build_json, run
from tests.index.test_describer_units import Means, Pixels, colour_image

# test_cli_units' fixtures, found here by name: the tiny networks (autouse) and three photos.
tiny = test_cli_units.tiny
photos = test_cli_units.photos


def rows(out: str) -> list[tuple[str, str]]:
    """The (label, value) rows of a printed two-column table, a wrapped cell joined back."""
    table: list[tuple[str, str]] = []
    for line in out.splitlines():
        if not line.startswith("│"):
            continue
        label, value = (cell.strip() for cell in line.strip("│").split("│"))
        if label:
            table.append((label, value))
        else:  # the continuation of a wrapped cell
            table[-1] = (table[-1][0], f"{table[-1][1]} {value}")
    return table


def stale(ix: Path, then: str, now: str, before: int, after: int) -> str:
    """The warning line of a stale ``threshold`` (thresholds.stale_reason's wording)."""
    return (
        f"stale threshold: the index's threshold was calibrated on {then} descriptors "
        f"({before} references) but the collection ({after} references) is now searched "
        f"{now}, so its similarities are on another scale; run 'pyinstance calibrate {ix}' again"
    )


def calibrate(ix: Path, whitened: bool) -> None:
    """Store a threshold as if calibrated on 3 references, ``whitened`` or not."""
    with InstanceIndex.open(ix) as index:
        index.set_settings(
            {"threshold": 0.5, "threshold_calibrated_on": {"whitened": whitened, "references": 3}}
        )


@pytest.fixture
def engines(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The engines asked of ``Describer.set_engine`` (each then runs torch, as a fallback)."""
    requested: list[str] = []
    set_engine = Describer.set_engine

    def recording(self, engine="auto", **kwargs):
        requested.append(engine)
        return set_engine(self, "torch", **kwargs)

    monkeypatch.setattr(Describer, "set_engine", recording)
    return requested


# build ------------------------------------------------------------------------------------


def test_build_describes_with_the_engine_it_was_given(
    tmp_path: Path, photos: Path, capsys, engines: list[str]
) -> None:
    built = build_json(capsys, photos, tmp_path / "ix", "--engine", "openvino")
    assert (built["added"], built["engine"]) == (3, "torch")
    assert engines == ["openvino"]  # one describer, set once: no second one made on torch


def test_build_with_a_model_file_keeps_the_other_recipe_fields(
    tmp_path: Path, photos: Path, capsys
) -> None:
    model = TrainedModel(
        backbone="pix",
        head="means",
        backbone_state=Pixels(1.0).state_dict(),
        head_state=Means(3, 1).state_dict(),
    ).save(tmp_path / "model.pt")
    build_json(capsys, photos, tmp_path / "ix", "--model", str(model), "--scales", "1,0.5")
    recipe = json.loads(run(capsys, "info", str(tmp_path / "ix"), "--json")[1])["recipe"]
    assert (recipe["model"], recipe["max_side"], recipe["scales"]) == (str(model), 10, [1.0, 0.5])
    assert (recipe["dtype"], recipe["postprocess"]) == ("float32", {})


def whitening_set(tmp_path: Path) -> Path:
    """A separate whitening set of two photos (yellow, cyan)."""
    folder = tmp_path / "wset"
    folder.mkdir()
    colour_image((255, 255, 0)).save(folder / "0.png")
    colour_image((0, 255, 255)).save(folder / "1.png")
    return folder


def test_info_text_of_a_whitened_index_with_a_stale_threshold(
    tmp_path: Path, photos: Path, capsys
) -> None:
    ix, wset = tmp_path / "ix", whitening_set(tmp_path)
    code, _, err = run(
        capsys, "build", str(photos), "-o", str(ix), "--max-side", "10", "--engine", "torch",
        "--no-progress", "--json", "--whiten-from", str(wset),
    )  # fmt: skip
    assert (code, err) == (0, "")
    calibrate(ix, whitened=False)  # the index searches whitened now
    code, out, err = run(capsys, "info", str(ix))
    assert (code, err) == (0, "")
    lines = [line.strip() for line in out.splitlines()]
    assert lines[0] == f"index {ix}"  # the title
    assert lines[1].startswith("┌") and not any(line.startswith("┃") for line in lines)  # no header
    table = rows(out)
    assert [label for label, _ in table] == [
        "images",
        "instances",
        "removed rows",
        "version",
        "pyinstance version",
        "recipe",
        "size on disk",
        "whitening fitted on",
        "setting threshold",
        "setting threshold_calibrated_on",
    ]
    values = dict(table)
    assert (values["images"], values["instances"], values["removed rows"]) == ("3", "2", "0")
    assert values["pyinstance version"] == pyinstance.__version__
    assert json.loads(values["whitening fitted on"]) == {
        "source": str(wset),
        "images": 2,
        "skipped": 0,
    }
    assert values["setting threshold"] == "0.5"
    assert json.loads(values["setting threshold_calibrated_on"]) == {
        "whitened": False,
        "references": 3,
    }
    assert lines[-1] == stale(ix, "unwhitened", "whitened", 3, 3)
    assert "whitening skipped" not in out


def test_info_text_of_a_skipped_whitening(tmp_path: Path, photos: Path, capsys) -> None:
    ix = tmp_path / "ix"
    build_json(capsys, photos, ix, "--whiten", "--whiten-min-references", "5")
    code, out, err = run(capsys, "info", str(ix))
    assert (code, err) == (0, "")
    values = dict(rows(out))
    assert values["whitening"] == (
        "whitening skipped: the collection holds 3 reference image(s), fewer than "
        "min_references 5; descriptors are not whitened until it holds that many"
    )
    assert "whitening fitted on" not in values and not out.rstrip().endswith("again")


def test_info_json_is_indented_by_two(tmp_path: Path, photos: Path, capsys) -> None:
    ix = tmp_path / "ix"
    build_json(capsys, photos, ix)
    code, out, err = run(capsys, "info", str(ix), "--json")
    assert (code, err) == (0, "")
    info = json.loads(out)
    assert out == json.dumps(info, indent=2) + "\n"
    assert (info["images"], info["instances"], info["path"]) == (3, 2, str(ix))


# add --------------------------------------------------------------------------------------


def test_add_text_summary_engine_and_progress(
    tmp_path: Path, photos: Path, capsys, engines: list[str]
) -> None:
    ix = tmp_path / "ix"
    build_json(capsys, photos, ix)
    assert engines == ["torch"]  # build_json's --engine torch
    engines.clear()
    blue = tmp_path / "blue.png"
    colour_image(COLOURS["blue"]).save(blue)
    code, out, err = run(
        capsys, "add", str(ix), str(blue), "--instance", "blue", "--engine", "openvino"
    )
    assert (code, engines) == (0, ["openvino"])
    assert "describe" in err  # the progress bar, on by default
    values = dict(rows(out))
    assert (values["images added"], values["images in the index"], values["instances"]) == (
        "1",
        "4",
        "3",
    )
    assert values["skipped"] == "0" and "images/s (torch engine)" in values["throughput"]


def test_add_without_progress_writes_nothing_to_stderr(
    tmp_path: Path, photos: Path, capsys
) -> None:
    ix = tmp_path / "ix"
    build_json(capsys, photos, ix)
    blue = tmp_path / "blue.png"
    colour_image(COLOURS["blue"]).save(blue)
    code, out, err = run(
        capsys, "add", str(ix), str(blue), "--instance", "blue", "--engine", "torch",
        "--no-progress", "--json",
    )  # fmt: skip
    assert (code, err) == (0, "")
    assert (json.loads(out)["added"], json.loads(out)["images"]) == (1, 4)


# remove, refit, compact -------------------------------------------------------------------


def test_remove_an_image_by_id(tmp_path: Path, photos: Path, capsys) -> None:
    ix = tmp_path / "ix"
    build_json(capsys, photos, ix)
    code, out, err = run(capsys, "remove", str(ix), "--image", "red/1.png", "--json")
    assert (code, err) == (0, "")
    assert json.loads(out) == {"removed": 1, "images": 2, "instances": 2, "stale_thresholds": {}}
    code, out, err = run(capsys, "remove", str(ix), "--image", "red/0.png", "green/0.png")
    assert (code, err) == (0, "")
    assert out == "removed 2 image(s); 0 image(s) of 0 instance(s) remain\n"


def test_remove_warns_of_a_stale_threshold(tmp_path: Path, photos: Path, capsys) -> None:
    ix = tmp_path / "ix"
    build_json(capsys, photos, ix)  # --no-whiten
    calibrate(ix, whitened=True)
    code, out, err = run(capsys, "remove", str(ix), "--image", "red/1.png")
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        "removed 1 image(s); 2 image(s) of 2 instance(s) remain",
        stale(ix, "whitened", "unwhitened", 3, 2),
    ]


def test_refit_of_a_whitening_learnt_from_the_collection(
    tmp_path: Path, photos: Path, capsys
) -> None:
    ix = tmp_path / "ix"
    build_json(capsys, photos, ix, "--whiten", "--whiten-min-references", "2")
    assert run(capsys, "remove", str(ix), "--image", "red/1.png", "--json")[0] == 0
    code, out, err = run(capsys, "refit", str(ix))
    assert (code, out, err) == (
        0,
        "refitted the post-processing state on 2 image(s) (collection version 4)\n",
        "",
    )
    code, out, err = run(capsys, "refit", str(ix), "--json")
    assert (code, err) == (0, "")
    assert json.loads(out) == {"refitted": True, "fitted": {"whitening": 4}}


def test_refit_with_nothing_to_fit(tmp_path: Path, photos: Path, capsys) -> None:
    ix = tmp_path / "ix"
    build_json(capsys, photos, ix)  # --no-whiten
    assert run(capsys, "refit", str(ix)) == (
        0,
        "nothing to refit: the recipe's post-processing learns nothing from the collection\n",
        "",
    )
    code, out, err = run(capsys, "refit", str(ix), "--json")
    assert (code, json.loads(out), err) == (0, {"refitted": False, "fitted": {}}, "")


def test_compact_exit_status(tmp_path: Path, photos: Path, capsys) -> None:
    ix = tmp_path / "ix"
    build_json(capsys, photos, ix)
    code, out, err = run(capsys, "compact", str(ix), "--json")
    assert (code, json.loads(out)["reclaimed_rows"], err) == (0, 0, "")
    code, out, err = run(capsys, "compact", str(ix))
    assert (code, out.startswith("reclaimed 0 row(s); size on disk "), err) == (0, True, "")
