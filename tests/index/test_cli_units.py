"""``pyinstance index ...`` parsed and run in-process, with tiny networks (milliseconds a test).

The registry's backbone and head are replaced by the tiny modules of
test_describer_units.py (a plain-coloured photo's descriptor is its normalised colour);
every printed number is worked out here from the photos written by the test.
"""

from __future__ import annotations

import argparse
import json
import re
import sqlite3
from pathlib import Path

import pytest

import pyinstance.plugins
from pyinstance.cli import build_parser, main
from pyinstance.index import cli
from pyinstance.index.recipe import DEFAULT_RECIPE
from pyinstance.index.store import IndexBusyError
from pyinstance.models.regions import DEFAULT_WINDOWS
from tests.index.test_describer_units import Means, Pixels, colour_image

COLOURS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}


@pytest.fixture(autouse=True)
def tiny(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pyinstance.plugins, "get_backbone", lambda name, **p: Pixels(**p))
    monkeypatch.setattr(pyinstance.plugins, "get_head", lambda name, **p: Means(**p))


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    """Two photos of ``red``, one of ``green`` (one sub-folder per instance)."""
    source = tmp_path / "photos"
    for name, count in (("red", 2), ("green", 1)):
        (source / name).mkdir(parents=True)
        for index in range(count):
            colour_image(COLOURS[name], 6 + index, 10).save(source / name / f"{index}.png")
    return source


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["index", *argv])


def run(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    code = main(["index", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def build_json(capsys, photos: Path, ix: Path, *extra: str) -> dict:
    code, out, err = run(
        capsys, "build", str(photos), "-o", str(ix), "--max-side", "10", "--engine", "torch",
        "--json", "--no-progress", "--no-whiten", *extra,
    )  # fmt: skip
    assert (code, err) == (0, "")
    return json.loads(out)


# parsing ---------------------------------------------------------------------------------


def test_build_defaults_are_the_default_recipe() -> None:
    args = parse("build", "src", "-o", "ix")
    assert (args.source, args.output, args.index_command) == (["src"], "ix", "build")
    assert (args.backbone, args.head, args.head_param) == (
        DEFAULT_RECIPE.backbone,
        DEFAULT_RECIPE.head,
        [],
    )
    assert (args.scales, args.max_side, args.query_max_side, args.windows, args.dtype) == (
        DEFAULT_RECIPE.scales,
        DEFAULT_RECIPE.max_side,
        DEFAULT_RECIPE.query_max_side,
        DEFAULT_RECIPE.query_windows,
        DEFAULT_RECIPE.dtype,
    )
    assert (args.instance, args.model, args.engine, args.json, args.no_progress) == (
        None,
        None,
        "auto",
        False,
        False,
    )
    assert args.metadata is None
    assert args.whiten is True  # the default recipe whitens
    assert (args.whiten_min_references, args.whiten_method, args.whiten_from) == (None, "pca", None)
    assert (args.whiten_dim, args.shrinkage, args.whiten_ridge) == (None, 1.0, 0.0)
    assert (args.dba, args.dba_alpha, args.qe, args.alpha_qe) == (None, None, None, 0.0)
    assert (args.scale_weights, args.matrix_scoring) == (None, None)
    assert cli._postprocess(args) == dict(DEFAULT_RECIPE.postprocess) | {
        "whiten": {"dim": None, "power": 1.0, "ridge": 0.0, "method": "pca"}
        | dict(DEFAULT_RECIPE.postprocess["whiten"])
    }


def test_build_options_are_read() -> None:
    args = parse(
        "build", "a", "b", "-o", "ix", "--backbone", "pix", "--head", "means",
        "--head-param", "repeat=2", "--head-param", "name=x", "--scales", "1,0.5",
        "--max-side", "20", "--query-max-side", "30", "--windows", "1:1,0.5:2",
        "--dtype", "float16", "--instance", "obj", "--model", "m.pt", "--engine", "torch",
        "--json", "--no-progress", "--metadata", "meta.csv", "--no-whiten",
        "--dba", "3", "--dba-alpha", "2.5", "--qe", "2", "--alpha-qe", "3",
        "--matrix-scoring", "max", "--scale-weights", "1,2",
    )  # fmt: skip
    assert args.source == ["a", "b"] and args.head_param == ["repeat=2", "name=x"]
    assert (args.scales, args.max_side, args.query_max_side) == ((1.0, 0.5), 20, 30)
    assert args.windows == ((1.0, 1), (0.5, 2)) and args.dtype == "float16"
    assert (args.instance, args.model, args.engine, args.metadata) == (
        "obj",
        "m.pt",
        "torch",
        "meta.csv",
    )
    assert args.json and args.no_progress and not args.whiten
    assert cli._postprocess(args) == {
        "dba": {"k": 3, "alpha": 2.5},
        "qe": {"k": 2, "alpha": 3.0},
        "multiscale": {"reduction": "max"},
        "scale_weights": [1.0, 2.0],
    }
    assert parse("build", "a", "-o", "ix", "--query-max-side", "same").query_max_side is None
    assert parse("build", "a", "-o", "ix", "--windows", "none").windows is None
    assert parse("build", "a", "-o", "ix", "--windows", "default").windows == DEFAULT_WINDOWS


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["add", "ix", "s1", "s2"], {"index": "ix", "source": ["s1", "s2"], "instance": None}),
        (["update", "ix", "s", "--instance", "o"], {"source": ["s"], "instance": "o"}),
        (["remove", "ix", "--instance", "a", "b"], {"instance": ["a", "b"], "image": None}),
        (["remove", "ix", "--image", "x", "--json"], {"image": ["x"], "json": True}),
        (["compact", "ix"], {"index": "ix", "json": False}),
        (["refit", "ix", "--json"], {"json": True}),
        (["info", "ix"], {"index": "ix", "json": False}),
    ],
)
def test_sub_commands_parse(argv: list[str], expected: dict) -> None:
    args = parse(*argv)
    assert args.index_command == argv[0]
    assert {key: getattr(args, key) for key in expected} == expected


def test_add_and_update_options() -> None:
    args = parse(
        "add", "ix", "s", "--engine", "torch", "--json", "--no-progress", "--metadata", "m"
    )
    assert (args.engine, args.json, args.no_progress, args.metadata) == ("torch", True, True, "m")
    args = parse("update", "ix", "s")
    assert (args.engine, args.json, args.no_progress) == ("auto", False, False)
    assert not hasattr(args, "metadata")


@pytest.mark.parametrize(
    "argv",
    [
        ["remove", "ix"],
        ["remove", "ix", "--instance", "a", "--image", "b"],
        ["build", "s"],
        ["build", "-o", "ix"],
        ["add", "ix"],
        ["build", "s", "-o", "ix", "--dtype", "float64"],
        ["build", "s", "-o", "ix", "--scales", "1,x"],
        ["build", "s", "-o", "ix", "--windows", "big"],
        ["build", "s", "-o", "ix", "--windows", "0.5"],
        ["build", "s", "-o", "ix", "--query-max-side", "0"],
        ["build", "s", "-o", "ix", "--query-max-side", "big"],
        ["build", "s", "-o", "ix", "--whiten-method", "zca"],
        ["build", "s", "-o", "ix", "--matrix-scoring", "median"],
        [],
    ],
)
def test_bad_command_lines_are_usage_errors(argv: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as raised:
        parse(*argv)
    assert raised.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_value_parsers() -> None:
    assert cli._floats("1,0.5,2") == (1.0, 0.5, 2.0)
    with pytest.raises(
        argparse.ArgumentTypeError, match="expected comma-separated numbers, got 'a'"
    ):
        cli._floats("a")
    assert cli._query_side("same") is None and cli._query_side("1") == 1
    for bad in ("0", "-3", "x", "1.5"):
        with pytest.raises(argparse.ArgumentTypeError, match=f"positive number .* got '{bad}'"):
            cli._query_side(bad)
    assert cli._windows("none") is None and cli._windows("default") == DEFAULT_WINDOWS
    assert cli._windows("0.5:3") == ((0.5, 3),)
    with pytest.raises(argparse.ArgumentTypeError, match="'none', 'default' or FRACTION"):
        cli._windows("0.5:x")
    assert cli._params(["a=1", "b=x", "c=[1, 2]", "d=", "e=a=b"]) == {
        "a": 1,
        "b": "x",
        "c": [1, 2],
        "d": "",
        "e": "a=b",
    }
    for bad in ("a", "=1"):
        with pytest.raises(ValueError, match=f"--head-param: expected KEY=VALUE, got '{bad}'"):
            cli._params([bad])
    assert cli._scale_weights("learnt") == "learnt"
    assert cli._scale_weights("1,0.5") == [1.0, 0.5]
    with pytest.raises(ValueError, match="--scale-weights: expected .* got 'x'"):
        cli._scale_weights("x")


def test_sizes() -> None:
    assert [cli._size(n) for n in (0, 1023, 1024, 1536, 1024**2 * 3, 1024**3 * 5, 1024**4)] == [
        "0 B",
        "1023 B",
        "1.0 KiB",
        "1.5 KiB",
        "3.0 MiB",
        "5.0 GiB",
        "1024.0 GiB",
    ]


# post-processing options -----------------------------------------------------------------


def postprocess(*argv: str) -> dict:
    return cli._postprocess(parse("build", "s", "-o", "ix", *argv))


def test_whitening_options() -> None:
    assert postprocess("--no-whiten") == {}
    assert postprocess(
        "--whiten-dim", "8", "--shrinkage", "0.5", "--whiten-ridge", "0.1",
        "--whiten-method", "pairs", "--whiten-min-references", "2",
    ) == {
        "whiten": {
            "dim": 8, "power": 0.5, "ridge": 0.1, "method": "pairs", "min_references": 2
        }
    }  # fmt: skip
    assert postprocess("--whiten-from", "set", "--whiten-from", "more") == {
        "whiten": {"dim": None, "power": 1.0, "ridge": 0.0, "method": "pca", "fit_on": "separate"}
    }


def test_whitening_defaults_to_the_default_recipes_minimum(monkeypatch) -> None:
    monkeypatch.setattr(cli, "_DEFAULT_MIN_REFERENCES", None)
    assert postprocess() == {"whiten": {"dim": None, "power": 1.0, "ridge": 0.0, "method": "pca"}}
    monkeypatch.setattr(cli, "_DEFAULT_MIN_REFERENCES", 7)
    assert postprocess()["whiten"]["min_references"] == 7


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--no-whiten", "--whiten-dim", "4"], "^--whiten-dim: only with --whiten$"),
        (["--no-whiten", "--shrinkage", "0.5"], "^--shrinkage: only with --whiten$"),
        (["--no-whiten", "--whiten-ridge", "0.5"], "^--whiten-ridge: only with --whiten$"),
        (["--no-whiten", "--whiten-method", "pairs"], "^--whiten-method: only with --whiten$"),
        (["--no-whiten", "--whiten-from", "s"], "^--whiten-from: only with --whiten$"),
        (
            ["--no-whiten", "--whiten-min-references", "3", "--whiten-dim", "2"],
            "^--whiten-dim, --whiten-min-references: only with --whiten$",
        ),
        (
            ["--whiten-from", "s", "--whiten-method", "pairs"],
            "^--whiten-from: only with --whiten-method pca$",
        ),
        (
            ["--whiten-from", "s", "--whiten-min-references", "3"],
            r"^--whiten-min-references: not with --whiten-from \(fitted once\)$",
        ),
        (["--dba-alpha", "2"], "^--dba-alpha: only with --dba K$"),
        (["--alpha-qe", "2"], "^--alpha-qe: only with --qe K$"),
        (
            ["--whiten-min-references", "1"],
            "^--whiten-min-references: expected an int >= 2, got 1$",
        ),
    ],
)
def test_postprocess_refusals(argv: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        postprocess(*argv)


def test_postprocess_boundaries() -> None:
    assert postprocess("--whiten-min-references", "2")["whiten"]["min_references"] == 2
    assert postprocess("--dba", "2") == postprocess() | {"dba": {"k": 2, "alpha": None}}
    assert postprocess("--qe", "1")["qe"] == {"k": 1, "alpha": 0.0}
    assert postprocess("--scale-weights", "learnt")["scale_weights"] == "learnt"


def test_components_with_a_model_are_refused() -> None:
    args = parse("build", "s", "-o", "ix", "--model", "m.pt")
    cli._refuse_components_with_model(args)  # nothing named beside it
    for extra, named in (
        (["--backbone", "x"], "--backbone"),
        (["--head", "x"], "--head"),
        (["--head-param", "a=1"], "--head-param"),
        (["--backbone", "x", "--head", "y"], "--backbone, --head"),
    ):
        with pytest.raises(
            ValueError, match=f"^--model: the model file fixes the network; drop {named}$"
        ):
            cli._refuse_components_with_model(parse("build", "s", "-o", "ix", *extra))


# guarded ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "shown"),
    [
        (ValueError("bad value"), "bad value"),
        (TypeError("bad type"), "bad type"),
        (KeyError("no such instance"), "no such instance"),
        (KeyError(), ""),
        (OSError("gone"), "gone"),
        (IndexBusyError("busy"), "busy"),
        (sqlite3.OperationalError("locked"), "locked"),
    ],
)
def test_guarded_prints_one_line(error: Exception, shown: str, capsys) -> None:
    seen = []

    def failing(args, console):
        seen.append(console)
        raise error

    code = cli._guarded(failing)(argparse.Namespace(index_command="add"))
    assert code == 2 and len(seen) == 1 and seen[0] is not None
    assert capsys.readouterr() == ("", f"pyinstance index add: error: {shown}\n")


def test_guarded_passes_the_result_and_other_errors() -> None:
    assert cli._guarded(lambda args, console: 5)(argparse.Namespace(index_command="x")) == 5
    with pytest.raises(RuntimeError):
        cli._guarded(lambda args, console: (_ for _ in ()).throw(RuntimeError()))(
            argparse.Namespace(index_command="x")
        )


# in-process runs -------------------------------------------------------------------------


def test_build_add_update_remove_compact_refit_info(tmp_path: Path, photos: Path, capsys) -> None:
    ix = tmp_path / "ix"
    built = build_json(capsys, photos, ix, "--backbone", "pix", "--head", "means", "--scales", "1")
    assert (built["added"], built["updated"], built["unchanged"], built["skipped"]) == (3, 0, 0, [])
    assert (built["images"], built["instances"], built["index"]) == (3, 2, str(ix))
    assert built["engine"] == "torch" and built["images_per_second"] > 0
    assert built["instances_with_metadata"] == 0 and built["whitening_skipped"] is None
    assert built["stale_thresholds"] == {} and built["size_on_disk"] > 0
    assert built["seconds"] >= 0 and round(built["seconds"], 3) == built["seconds"]
    info = json.loads(run(capsys, "info", str(ix), "--json")[1])
    assert info["recipe"]["backbone"] == "pix" and info["recipe"]["dim"] == 3
    assert info["recipe"]["max_side"] == 10 and info["recipe"]["scales"] == [1.0]
    assert info["recipe"]["postprocess"] == {}

    more = tmp_path / "more"
    (more / "blue").mkdir(parents=True)
    colour_image(COLOURS["blue"]).save(more / "blue" / "0.png")
    (more / "blue" / "bad.png").write_bytes(b"no image")
    code, out, _ = run(
        capsys, "add", str(ix), str(more), "--engine", "torch", "--json", "--no-progress"
    )
    added = json.loads(out)
    assert code == 0 and (added["added"], added["images"], added["engine"]) == (1, 4, "torch")
    assert [skip["path"] for skip in added["skipped"]] == [str(more / "blue" / "bad.png")]
    code, out, _ = run(
        capsys, "add", str(ix), str(more / "blue" / "0.png"), "--instance", "blue", "--json"
    )
    again = json.loads(out)
    assert (again["added"], again["unchanged"], again["engine"]) == (0, 1, None)
    assert again["images_per_second"] is None

    colour_image(COLOURS["green"], 8, 10).save(more / "blue" / "0.png")  # changed file
    code, out, _ = run(
        capsys, "update", str(ix), str(more), "--engine", "torch", "--json", "--no-progress"
    )
    updated = json.loads(out)
    assert (updated["updated"], updated["added"], updated["engine"]) == (1, 0, "torch")

    code, out, _ = run(capsys, "remove", str(ix), "--instance", "red", "--json")
    assert json.loads(out) == {"removed": 2, "images": 2, "instances": 2, "stale_thresholds": {}}
    code, _, err = run(capsys, "remove", str(ix), "--instance", "red")
    assert code == 2 and err.startswith("pyinstance index remove: error: ")  # gone
    removed_rows = json.loads(run(capsys, "info", str(ix), "--json")[1])["removed_rows"]
    code, out, _ = run(capsys, "compact", str(ix), "--json")
    compacted = json.loads(out)
    assert compacted["reclaimed_rows"] == removed_rows and compacted["size_on_disk"] > 0
    assert json.loads(run(capsys, "info", str(ix), "--json")[1])["removed_rows"] == 0
    code, out, _ = run(capsys, "refit", str(ix), "--json")
    assert json.loads(out) == {"refitted": False, "fitted": {}}
    code, out, _ = run(capsys, "refit", str(ix))
    assert "nothing to refit" in out


def test_text_summaries(tmp_path: Path, photos: Path, capsys) -> None:
    ix = tmp_path / "ix"
    code, out, err = run(
        capsys, "build", str(photos), "-o", str(ix), "--max-side", "10", "--engine", "torch",
        "--no-progress", "--whiten-min-references", "5",
    )  # fmt: skip
    assert code == 0 and err == ""
    assert f"index {ix}" in out
    lines = {line.strip("│ ").split("│")[0].strip(): line for line in out.splitlines()}
    assert "3" in lines["images added"] and "0" in lines["unchanged (already indexed)"]
    assert "3" in lines["images in the index"] and "2" in lines["instances"]
    assert "0" in lines["skipped"] and "0" in lines["instances with metadata"]
    assert "images/s (torch engine)" in out and " s" in lines["time"]
    assert "images updated" not in out
    assert "whitening" in lines and "5" in lines["whitening"]
    code, out, _ = run(capsys, "info", str(ix))
    info_lines = {line.strip("│ ").split("│")[0].strip(): line for line in out.splitlines()}
    assert "3" in info_lines["images"] and "2" in info_lines["instances"]
    assert "0" in info_lines["removed rows"] and "recipe" in info_lines
    assert "efficientnet_lite0 (weights" in info_lines["recipe"]
    assert "max_side 10, D=3 float32" in info_lines["recipe"]
    assert "whitening" in info_lines and "KiB" in info_lines["size on disk"]
    code, out, _ = run(capsys, "remove", str(ix), "--instance", "green")
    assert out == "removed 1 image(s); 2 image(s) of 1 instance(s) remain\n"
    code, out, _ = run(capsys, "compact", str(ix))
    assert re.fullmatch(r"reclaimed \d+ row\(s\); size on disk \d+\.\d KiB\n", out)


def test_skips_are_listed_up_to_the_limit(
    tmp_path: Path, photos: Path, capsys, monkeypatch
) -> None:
    monkeypatch.setattr(cli, "_SHOWN_SKIPS", 2)
    for index in range(3):
        (photos / "red" / f"bad{index}.png").write_bytes(b"x" * (index + 1))  # not identical
    code, out, _ = run(
        capsys, "build", str(photos), "-o", str(tmp_path / "ix"), "--max-side", "10",
        "--engine", "torch", "--no-progress", "--no-whiten",
    )  # fmt: skip
    assert code == 0
    listed = [line for line in out.splitlines() if line.startswith("skipped ")]
    assert len(listed) == 2  # two listed, then the rest counted
    assert "... and 1 more skipped (see --json)" in out
    assert f"skipped {photos / 'red' / 'bad0.png'}: cannot decode" in out.replace("\n", "")


def test_build_with_a_model_file(tmp_path: Path, photos: Path, capsys) -> None:
    from pyinstance.models.trained import TrainedModel

    model = TrainedModel(
        backbone="pix",
        head="means",
        backbone_state=Pixels(2.0).state_dict(),
        head_state=Means(3, 2).state_dict(),
        head_params={"repeat": 2},
    ).save(tmp_path / "model.pt")
    built = build_json(capsys, photos, tmp_path / "ix", "--model", str(model))
    assert built["added"] == 3
    info = json.loads(run(capsys, "info", str(tmp_path / "ix"), "--json")[1])
    assert (info["recipe"]["dim"], info["recipe"]["model"]) == (6, str(model))
    code, _, err = run(
        capsys, "build", str(photos), "-o", str(tmp_path / "ix2"), "--model", str(model),
        "--head", "gem", "--engine", "torch",
    )  # fmt: skip
    assert code == 2
    assert (
        err
        == "pyinstance index build: error: --model: the model file fixes the network; drop --head\n"
    )


def test_build_options_reach_the_recipe(tmp_path: Path, photos: Path, capsys) -> None:
    build_json(
        capsys, photos, tmp_path / "ix", "--head-param", "repeat=2", "--scales", "1,0.5",
        "--query-max-side", "12", "--windows", "1:1", "--dtype", "float16", "--qe", "1",
    )  # fmt: skip
    recipe = json.loads(run(capsys, "info", str(tmp_path / "ix"), "--json")[1])["recipe"]
    assert (recipe["dim"], recipe["head_params"], recipe["scales"]) == (
        6,
        {"repeat": 2},
        [1.0, 0.5],
    )
    assert (recipe["query_max_side"], recipe["query_windows"], recipe["dtype"]) == (
        12,
        [[1.0, 1]],
        "float16",
    )
    assert recipe["postprocess"] == {"qe": {"k": 1, "alpha": 0.0}}


def test_build_with_instance_and_metadata(tmp_path: Path, capsys) -> None:
    colour_image(COLOURS["red"]).save(tmp_path / "a.png")
    meta = tmp_path / "meta.json"
    meta.write_text(json.dumps({"obj": {"title": "A"}, "other": {"title": "B"}}))
    built = build_json(
        capsys, tmp_path / "a.png", tmp_path / "ix", "--instance", "obj", "--metadata", str(meta)
    )
    assert (built["instances"], built["instances_with_metadata"]) == (1, 1)
    more = tmp_path / "b.png"
    colour_image(COLOURS["green"]).save(more)
    meta.write_text(json.dumps({"two": {"title": "C"}}))
    code, out, _ = run(
        capsys, "add", str(tmp_path / "ix"), str(more), "--instance", "two", "--metadata",
        str(meta), "--engine", "torch", "--json",
    )  # fmt: skip
    assert json.loads(out)["instances_with_metadata"] == 2


def test_build_progress_goes_to_stderr(tmp_path: Path, photos: Path, capsys) -> None:
    code, _, err = run(
        capsys, "build", str(photos), "-o", str(tmp_path / "ix"), "--max-side", "10",
        "--engine", "torch", "--json", "--no-whiten",
    )  # fmt: skip
    assert code == 0 and "describe" in err


def test_errors_are_one_line(tmp_path: Path, photos: Path, capsys) -> None:
    code, out, err = run(capsys, "info", str(tmp_path / "nothing"))
    assert code == 2 and out == "" and err.startswith("pyinstance index info: error: ")
    assert err.count("\n") == 1
    ix = tmp_path / "ix"
    build_json(capsys, photos, ix)
    code, _, err = run(capsys, "remove", str(ix), "--instance", "nobody")
    assert code == 2 and err.startswith("pyinstance index remove: error: ") and "nobody" in err
    code, _, err = run(capsys, "build", str(photos), "-o", str(tmp_path / "x"), "--head-param", "a")
    assert err == "pyinstance index build: error: --head-param: expected KEY=VALUE, got 'a'\n"


def test_stale_thresholds_are_warned_one_line_each() -> None:
    from io import StringIO

    from rich.console import Console

    buffer = StringIO()
    console = Console(file=buffer, force_terminal=True, color_system="standard", width=40)
    reason = "fitted on [whitened] scores 0.5 of version 3, now version 4 of the collection"
    cli._warn_stale(console, {"stale_thresholds": {"open_threshold": reason, "other": "x"}})
    yellow, reset = "\x1b[33m", "\x1b[0m"
    assert buffer.getvalue() == (
        f"{yellow}stale open_threshold{reset}: {reason}\n{yellow}stale other{reset}: x\n"
    )  # markup read, the reason escaped and not highlighted, one line however long
    cli._warn_stale(console, {"stale_thresholds": {}})
    assert buffer.getvalue().count("\n") == 2


def test_update_takes_the_instance_engine_and_progress(
    tmp_path: Path, photos: Path, capsys, monkeypatch
) -> None:
    from pyinstance.index import Describer

    ix = tmp_path / "ix"
    build_json(capsys, photos, ix)
    requested: list[str] = []
    set_engine = Describer.set_engine

    def recording(self, engine="auto", **kwargs):
        requested.append(engine)  # then torch, as after a fallback
        return set_engine(self, "torch", **kwargs)

    monkeypatch.setattr(Describer, "set_engine", recording)
    colour_image(COLOURS["blue"], 9, 10).save(photos / "red" / "0.png")  # changed
    code, out, err = run(
        capsys, "update", str(ix), str(photos / "red" / "0.png"), "--instance", "red",
        "--engine", "openvino",
    )  # fmt: skip
    assert code == 0 and requested == ["openvino"]
    assert "describe" in err  # the progress bar
    lines = {line.strip("│ ").split("│")[0].strip(): line for line in out.splitlines()}
    assert "1" in lines["images updated"] and "0" in lines["images added"]
    assert "3" in lines["images in the index"] and "2" in lines["instances"]
