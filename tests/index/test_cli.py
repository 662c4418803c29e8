"""The ``pyinstance index`` commands, run in-process through the main entry point."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from pyinstance.cli import main
from pyinstance.index import DEFAULT_RECIPE, InstanceIndex


def run(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def collection(tmp_path: Path, pairs: Path) -> Path:
    root = tmp_path / "collection"
    for instance, name in (("box", "box.png"), ("graf", "graf1.png"), ("home", "home.jpg")):
        (root / instance).mkdir(parents=True)
        shutil.copy(pairs / "reference" / name, root / instance / name)
    (root / "graf" / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    return root


def test_build_add_remove_compact_info(
    tmp_path: Path, collection: Path, pairs: Path, capsys
) -> None:
    ix = str(tmp_path / "ix")
    code, out, _ = run(
        capsys,
        "index",
        "build",
        str(collection),
        "-o",
        ix,
        "--max-side",
        "160",
        "--dtype",
        "float16",
        "--windows",
        "1:1,0.5:2",
        "--head",
        "gem",
        "--head-param",
        "p=4",
        "--no-whiten",
        "--no-progress",
    )
    assert code == 0
    for text in ("images added", "skipped", "broken.jpg", "instances", "size on disk"):
        assert text in out
    code, out, _ = run(capsys, "index", "info", ix, "--json")
    info = json.loads(out)
    assert (code, info["images"], info["instances"], info["version"]) == (0, 3, 3, 1)
    recipe = info["recipe"]
    assert (recipe["max_side"], recipe["dtype"], recipe["head_params"]) == (
        160,
        "float16",
        {"p": 4},
    )
    assert recipe["query_windows"] == [[1.0, 1], [0.5, 2]]
    code, out, _ = run(
        capsys,
        "index",
        "add",
        ix,
        str(pairs / "reference" / "aero1.jpg"),
        "--instance",
        "aero",
        "--json",
        "--no-progress",
    )
    added = json.loads(out)
    assert (code, added["added"], added["images"], added["instances"]) == (0, 1, 4, 4)
    code, out, _ = run(capsys, "index", "add", ix, str(collection), "--json", "--no-progress")
    again = json.loads(out)
    assert (again["added"], again["unchanged"], len(again["skipped"])) == (0, 3, 1)
    shutil.copy(pairs / "reference" / "building.jpg", collection / "home" / "home.jpg")
    code, out, _ = run(capsys, "index", "update", ix, str(collection), "--json", "--no-progress")
    changed = json.loads(out)
    assert (code, changed["updated"], changed["unchanged"], changed["images"]) == (0, 1, 2, 4)
    code, out, _ = run(capsys, "index", "remove", ix, "--image", "box/box.png", "--json")
    assert json.loads(out) == {
        "removed": 1,
        "images": 3,
        "instances": 3,
        "stale_thresholds": {},
    }
    code, out, _ = run(capsys, "index", "compact", ix, "--json")
    assert code == 0 and json.loads(out)["reclaimed_rows"] in (0, 1)  # auto-compaction may have run
    code, out, _ = run(capsys, "index", "info", ix)
    assert code == 0 and "efficientnet_lite0" in out and "float16" in out
    with InstanceIndex.open(ix) as index:
        assert index.instances == ("aero", "graf", "home")


def test_errors_are_one_line_and_exit_2(tmp_path: Path, collection: Path, capsys) -> None:
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "keep.txt").write_text("mine")
    for argv, message in (
        (["index", "info", str(tmp_path / "absent")], "no such directory"),
        (["index", "info", str(tmp_path / "foreign")], "is not a pyinstance index"),
        (["index", "remove", str(tmp_path / "absent"), "--instance", "x"], "no such directory"),
        (
            ["index", "build", str(tmp_path / "nothing"), "-o", str(tmp_path / "o")],
            "no such file or folder",
        ),
        (
            ["index", "build", str(collection), "-o", str(tmp_path / "o"), "--backbone", "nope"],
            "nope",
        ),
        (
            ["index", "build", str(collection), "-o", str(tmp_path / "o"), "--max-side", "0"],
            "max_side",
        ),
    ):
        code, out, err = run(capsys, *argv)
        assert code == 2, argv
        assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o").exists()
    assert (tmp_path / "foreign" / "keep.txt").read_text() == "mine"


def test_remove_of_an_unknown_instance_is_a_clear_error(
    tmp_path: Path, collection: Path, capsys
) -> None:
    ix = str(tmp_path / "ix")
    assert (
        run(
            capsys,
            "index",
            "build",
            str(collection),
            "-o",
            ix,
            "--max-side",
            "160",
            "--no-progress",
        )[0]
        == 0
    )
    code, _, err = run(capsys, "index", "remove", ix, "--instance", "ghost")
    assert code == 2 and "not in the index: 'ghost'" in err
    with pytest.raises(SystemExit) as exited:
        main(["index", "remove", ix])  # neither --instance nor --image
    assert exited.value.code == 2
    with pytest.raises(SystemExit):
        main(["index", "build", str(collection), "-o", ix, "--windows", "big"])


def test_build_with_postprocessing_refit_and_identify(
    tmp_path: Path, collection: Path, pairs: Path, capsys
) -> None:
    from pyinstance import Identifier, calibrate

    ix = str(tmp_path / "ix")
    argv = ["index", "build", str(collection), "-o", ix, "--max-side", "160", "--no-progress"]
    options = ["--windows", "none", "--whiten", "--shrinkage", "0.5", "--dba", "1", "--qe", "1"]
    options += ["--whiten-min-references", "2"]  # fitted on the 3 references
    assert run(capsys, *argv, *options)[0] == 0
    code, out, _ = run(capsys, "index", "info", ix, "--json")
    info = json.loads(out)
    assert (code, info["version"], info["fitted"]) == (0, 2, {"whitening": 3})
    assert info["recipe"]["postprocess"] == {
        "whiten": {"dim": None, "power": 0.5, "ridge": 0.0, "method": "pca", "min_references": 2},
        "dba": {"k": 1, "alpha": None},
        "qe": {"k": 1, "alpha": 0.0},
    }
    aero = pairs / "reference" / "aero1.jpg"
    code, out, _ = run(capsys, "index", "add", ix, str(aero), "--instance", "aero", "--json")
    assert code == 0 and json.loads(run(capsys, "index", "info", ix, "--json")[1])["fitted"] == {
        "whitening": 4
    }
    code, out, _ = run(capsys, "index", "refit", ix, "--json")
    assert (code, json.loads(out)) == (0, {"refitted": True, "fitted": {"whitening": 4}})
    with InstanceIndex.open(ix) as index:
        assert index.descriptors().shape == (4, 3)  # whitened to N - 1 dimensions
        (answer,) = Identifier(index, threshold=0).identify([aero])
        assert answer.instance == "aero"
        # calibration describes its views and distractors in the whitened space too
        fit = calibrate(index, views=1, distractors=[pairs / "reference" / "leuvenA.jpg"])
        assert 0.0 <= fit.threshold <= 1.0 and index.get_setting("threshold") == fit.threshold


def test_postprocessing_options_are_checked(tmp_path: Path, collection: Path, capsys) -> None:
    base = ["index", "build", str(collection), "-o", str(tmp_path / "o"), "--no-progress"]
    for options, message in (
        (["--no-whiten", "--shrinkage", "0.5"], "--shrinkage: only with --whiten"),
        (["--no-whiten", "--whiten-min-references", "5"], "--whiten-min-references: only with"),
        (["--whiten-min-references", "1"], "--whiten-min-references: expected an int >= 2"),
        (["--alpha-qe", "3"], "--alpha-qe: only with --qe K"),
        (["--whiten", "--shrinkage", "2"], "recipe.postprocess.whiten.power"),
        (["--dba", "0"], "recipe.postprocess.dba.k"),
        (["--qe", "1", "--matrix-scoring", "max"], "cannot be combined with dba or qe"),
    ):
        code, _, err = run(capsys, *base, *options)
        assert code == 2 and message in err, (options, err)
    assert not (tmp_path / "o").exists()
    with pytest.raises(SystemExit):
        main([*base, "--matrix-scoring", "mean"])
    ix = str(tmp_path / "plain")
    argv = ["index", "build", str(collection), "-o", ix, "--max-side", "160", "--no-whiten"]
    assert run(capsys, *argv)[0] == 0
    code, out, _ = run(capsys, "index", "refit", ix)
    assert code == 0 and "nothing to refit" in out
    for value in ("0", "-3", "big", "1.5"):
        with pytest.raises(SystemExit):
            main([*base, "--query-max-side", value])
        assert "expected a positive number of pixels or 'same'" in capsys.readouterr().err


def test_default_build_is_the_default_recipe_and_skips_whitening_when_small(
    tmp_path: Path, collection: Path, capsys
) -> None:
    ix = str(tmp_path / "ix")
    base = ["index", "build", str(collection), "--max-side", "160", "--no-progress", "--json"]
    code, out, _ = run(capsys, *base, "-o", ix)
    assert code == 0
    reason = json.loads(out)["whitening_skipped"]
    assert reason.startswith("whitening skipped: the collection holds 3 reference image(s)")
    with InstanceIndex.open(ix) as index:
        recipe = index.recipe
        assert recipe.same_descriptors(
            DEFAULT_RECIPE.with_(max_side=160, weights_sha256=recipe.weights_sha256)
        )
        assert recipe.query_max_side is None and recipe.query_windows is None
        assert index.descriptors().shape == (3, 1280)  # not whitened
    code, out, _ = run(capsys, "index", "info", ix)
    assert code == 0 and "whitening skipped" in out
    # enough references for the whitening: fitted (3 references: 2 dimensions)
    small = str(tmp_path / "small")
    options = ["--whiten-min-references", "3", "--query-max-side", "200"]
    assert run(capsys, *base, "-o", small, *options)[0] == 0
    with InstanceIndex.open(small) as index:
        assert index.info()["whitening_skipped"] is None
        assert index.recipe.postprocess["whiten"]["min_references"] == 3
        assert index.recipe.query_max_side == 200
        assert index.descriptors().shape == (3, 2)
    same = str(tmp_path / "same")
    assert run(capsys, *base, "-o", same, "--query-max-side", "same", "--no-whiten")[0] == 0
    with InstanceIndex.open(same) as index:
        assert index.recipe.query_max_side is None and index.recipe.postprocess == {}


def test_build_with_similarity_matrix_scoring_and_identify(
    tmp_path: Path, collection: Path, pairs: Path, capsys
) -> None:
    from pyinstance import Identifier

    ix = str(tmp_path / "ix")
    argv = ["index", "build", str(collection), "-o", ix, "--max-side", "160", "--no-progress"]
    options = ["--scales", "1,0.5", "--windows", "none", "--query-max-side", "160"]
    options += ["--matrix-scoring", "row_max_sum"]
    assert run(capsys, *argv, *options)[0] == 0
    with InstanceIndex.open(ix) as index:
        assert index.raw_descriptors().shape == (3, 2, 1280)
        queries = index.describe_queries([pairs / "reference" / "home.jpg"])
        assert queries.shape == (1, 2, 1280)  # the query at both scales
        found = index.search(queries, 3)
        assert index.instances[found.labels[0, 0]] == "home"
        assert found.scores[0, 0] == pytest.approx(1.0, abs=0.02)  # the mean of row maxima
        (answer,) = Identifier(index, threshold=0).identify([pairs / "reference" / "graf1.png"])
        assert answer.instance == "graf"


def test_metadata_files_on_build_and_add(
    tmp_path: Path, collection: Path, pairs: Path, capsys
) -> None:
    ix = str(tmp_path / "ix")
    titles = tmp_path / "titles.csv"
    titles.write_text("instance_id,title,author\nbox,A box,\ngraf,Graffiti,Anon\nabsent,X,Y\n")
    code, out, _ = run(
        capsys, "index", "build", str(collection), "-o", ix, "--max-side", "224",
        "--windows", "none", "--metadata", str(titles), "--json", "--no-progress",
    )  # fmt: skip
    assert code == 0 and json.loads(out)["instances_with_metadata"] == 2
    with InstanceIndex.open(ix) as index:
        assert index.metadata() == {
            "box": {"title": "A box"},
            "graf": {"title": "Graffiti", "author": "Anon"},
        }
    more = tmp_path / "more.json"
    more.write_text(json.dumps({"aero": {"title": "Plane"}}))
    code, out, _ = run(
        capsys, "index", "add", ix, str(pairs / "reference" / "aero1.jpg"), "--instance",
        "aero", "--metadata", str(more), "--json", "--no-progress",
    )  # fmt: skip
    assert code == 0 and json.loads(out)["instances_with_metadata"] == 3
    bad = tmp_path / "bad.json"
    bad.write_text('{"aero": {"title": [1]}}')
    code, _, err = run(capsys, "index", "add", ix, str(collection), "--metadata", str(bad))
    assert code == 2 and "'title' must be a str" in err


def test_build_with_a_whitening_set(tmp_path: Path, collection: Path, pairs: Path, capsys) -> None:
    whitening_set = tmp_path / "set"
    whitening_set.mkdir()
    for name in ("aero1.jpg", "aloeL.jpg", "building.jpg", "leuvenA.jpg", "rubberwhale1.png"):
        shutil.copy(pairs / "reference" / name, whitening_set / name)
    (whitening_set / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    ix = str(tmp_path / "ix")
    argv = ["index", "build", str(collection), "-o", ix, "--max-side", "160", "--no-progress"]
    options = ["--windows", "none", "--whiten", "--whiten-dim", "4"]
    assert run(capsys, *argv, *options, "--whiten-from", str(whitening_set))[0] == 0
    info = json.loads(run(capsys, "index", "info", ix, "--json")[1])
    assert info["recipe"]["postprocess"]["whiten"]["fit_on"] == "separate"
    assert info["whitening_set"] == {"source": str(whitening_set), "images": 5, "skipped": 1}
    stamp = info["fitted"]
    assert run(capsys, "index", "info", ix)[1].count("whitening fitted on") == 1
    code, _, _ = run(
        capsys, "index", "add", ix, str(pairs / "reference" / "aero1.jpg"), "--instance", "aero"
    )
    assert (
        code == 0 and json.loads(run(capsys, "index", "info", ix, "--json")[1])["fitted"] == stamp
    )
    code, out, _ = run(capsys, "index", "refit", ix)
    assert code == 0 and "nothing to refit" in out
    with InstanceIndex.open(ix) as index:
        assert index.descriptors().shape == (4, 4)  # 4 dims although 4 references allow 3

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "broken.jpg").write_bytes(b"not an image")
    base = [*argv[:3], "-o", str(tmp_path / "o"), "--max-side", "160", "--no-progress", "--whiten"]
    for options, message in (
        (["--whiten-from", str(empty)], "whiten_from: the whitening set needs at least 2 images"),
        (["--whiten-from", str(whitening_set), "--whiten-dim", "5"], "at least 6 images for dim 5"),
        (["--whiten-from", str(tmp_path / "nope")], "whiten_from: source: no such file"),
        (["--whiten-from", str(empty), "--whiten-method", "pairs"], "--whiten-from: only with"),
    ):
        code, _, err = run(capsys, *base, *options)
        assert code == 2 and message in err, (options, err)
    assert not (tmp_path / "o").exists()
    code, _, err = run(
        capsys, *argv[:3], "-o", str(tmp_path / "o"), "--no-whiten", "--whiten-from", str(empty)
    )
    assert code == 2 and "--whiten-from: only with --whiten" in err
    code, _, err = run(capsys, *base, "--whiten-from", str(empty), "--whiten-min-references", "9")
    assert code == 2 and "--whiten-min-references: not with --whiten-from" in err


def test_build_with_scale_weights(tmp_path: Path, collection: Path, capsys) -> None:
    ix = str(tmp_path / "ix")
    argv = ["index", "build", str(collection), "-o", ix, "--max-side", "160", "--no-progress"]
    options = ["--scales", "1,0.7071", "--no-whiten", "--scale-weights", "0.7,0.3"]
    assert run(capsys, *argv, *options)[0] == 0
    info = json.loads(run(capsys, "index", "info", ix, "--json")[1])
    assert info["recipe"]["postprocess"] == {"scale_weights": [0.7, 0.3]}
    with InstanceIndex.open(ix) as index:
        raw = index.raw_descriptors()
        assert raw.shape == (3, 2, index.recipe.dim)
        summed = 0.7 * raw[:, 0] + 0.3 * raw[:, 1]
        expected = summed / np.linalg.norm(summed, axis=1, keepdims=True)
        np.testing.assert_allclose(index.descriptors(), expected, atol=1e-5)
        assert index.describe_queries([collection / "box" / "box.png"]).shape == (1, 1, 1280)
    base = [*argv[:3], "-o", str(tmp_path / "o"), "--max-side", "160", "--no-progress"]
    for options, message in (
        (["--scales", "1,0.5", "--scale-weights", "1,x"], "--scale-weights: expected comma"),
        (["--scales", "1,0.5", "--scale-weights", "1,1,1"], "one weight per scale"),
        (
            ["--scales", "1,0.5", "--windows", "none", "--scale-weights", "learnt"],
            "scale_weights: 'learnt' needs an instance with at least 2 references",
        ),
    ):
        code, _, err = run(capsys, *base, *options)
        assert code == 2 and message in err, (options, err)
    assert not (tmp_path / "o").exists()
