"""The ``pyinstance index`` commands, run in-process through the main entry point."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pyinstance.cli import main
from pyinstance.index import InstanceIndex


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
        "--head-param",
        "p=4",
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
    assert json.loads(out) == {"removed": 1, "images": 3, "instances": 3}
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
