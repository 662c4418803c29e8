"""``pyinstance identify`` and ``pyinstance calibrate`` in-process, over a fake index and a
fake identifier / calibration (recorders): the options handed on, the photos found in
folders, the JSON lines, the table's cells and the exit status (for mutation testing:
no network, no index on disk)."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from tqdm.auto import tqdm

import pyinstance.calibration as calibration_module
import pyinstance.identification as identification_module
import pyinstance.objects as objects_module
from pyinstance.cli import main
from pyinstance.commands.identify import _result_table, image_paths
from pyinstance.data.images import ImageDecodeError
from pyinstance.identification import Identification, Match
from pyinstance.index import InstanceIndex
from pyinstance.objects import DetectedObject


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """``InstanceIndex.open`` replaced: records (path, engine), yields a token."""
    calls: list[tuple[str, str]] = []

    class Opened:
        def __enter__(self) -> str:
            return "the index"

        def __exit__(self, *exc: Any) -> None:
            calls.append(("closed", ""))

    def open_index(path: str, *, engine: str) -> Opened:
        calls.append((path, engine))
        return Opened()

    monkeypatch.setattr(InstanceIndex, "open", open_index)
    monkeypatch.setenv("COLUMNS", "250")
    # No progress-bar monitor thread (it can hang a process forked by mutmut).
    monkeypatch.setattr(tqdm, "monitor_interval", 0)
    return calls


ANSWERS = {
    "a.jpg": Identification(
        image="a.jpg",
        instance="vase",
        confidence=0.87654,
        top_k=(
            Match("vase", 0.91234, "v1", "/refs/vase_1.png"),
            Match("bowl", 0.5, None, None),
        ),
        ms={"total": 12.6},
    ),
    "b.jpg": Identification(
        image="b.jpg",
        instance=None,
        confidence=0.125,
        top_k=(Match("cup", 0.25, "c1", "/refs/cup.png"),),
        ms={"total": 3.4},
    ),
}


OBJECTS = (
    DetectedObject("vase", 0.75, (1, 2, 3, 4), "v1"),
    DetectedObject("bowl", 0.5, (5, 6, 7, 8), None),
)


class FakeIdentifier:
    """Answers ANSWERS by file name; "bad.jpg" cannot be decoded, "gone.jpg" is missing."""

    made: list[tuple[Any, dict[str, Any]]] = []

    def __init__(self, index: Any, **options: Any):
        FakeIdentifier.made.append((index, options))
        self.threshold = options["threshold"]
        self.reranker_name = None if not options["reranker"] else "verifier"
        self.multi = options["multi"]

    def identify(self, images: list[Path]) -> list[Identification]:
        (path,) = images
        assert isinstance(path, Path)
        if path.name == "bad.jpg":
            raise ImageDecodeError(f"{path}: not an image")
        if path.name == "gone.jpg":
            raise FileNotFoundError(f"{path}: no such file")
        answer = ANSWERS[path.name]
        if self.multi:
            objects = () if path.name == "b.jpg" else OBJECTS
            answer = Identification(**{**answer.__dict__, "objects": objects})
        return [answer]


@pytest.fixture
def identifier(monkeypatch: pytest.MonkeyPatch) -> type[FakeIdentifier]:
    FakeIdentifier.made = []
    monkeypatch.setattr(identification_module, "Identifier", FakeIdentifier)
    return FakeIdentifier


def _table_rows(text: str) -> list[list[str]]:
    """The cells of each line of a rich table (continuation lines included)."""
    rows = []
    for line in text.replace("┃", "│").splitlines():
        if "│" in line:
            rows.append([cell.strip() for cell in line.strip().strip("│").split("│")])
    return rows


def test_identify_defaults_reach_the_identifier(opened, identifier, capsys) -> None:
    assert main(["identify", "ix", "a.jpg", "--json"]) == 0
    assert opened == [("ix", "auto"), ("closed", "")]
    ((index, options),) = identifier.made
    assert index == "the index"
    assert options == {
        "classifier": None,
        "threshold": None,
        "top_k": 5,
        "multi": False,
        "objects_threshold": None,
        "reranker": None,
    }


def test_identify_options_reach_the_identifier(opened, identifier, capsys) -> None:
    arguments = ["identify", "ix", "a.jpg", "--json", "--top-k", "3", "--threshold", "0.25"]
    arguments += ["--classifier", "knn_vote", "--multi", "--objects-threshold", "0.5"]
    arguments += ["--rerank", "none", "--engine", "torch"]
    assert main(arguments) == 0
    assert opened[0] == ("ix", "torch")
    assert identifier.made[0][1] == {
        "classifier": "knn_vote",
        "threshold": 0.25,
        "top_k": 3,
        "multi": True,
        "objects_threshold": 0.5,
        "reranker": False,
    }


def test_identify_json_is_one_object_per_photo_and_errors_name_the_photo(
    opened, identifier, capsys
) -> None:
    assert main(["identify", "ix", "a.jpg", "bad.jpg", "b.jpg", "gone.jpg", "--json"]) == 1
    out, err = capsys.readouterr()
    lines = [json.loads(line) for line in out.splitlines()]
    assert lines == [
        ANSWERS["a.jpg"].to_dict(),
        {"image": "bad.jpg", "error": "bad.jpg: not an image"},
        ANSWERS["b.jpg"].to_dict(),
        {"image": "gone.jpg", "error": "gone.jpg: no such file"},
    ]
    assert err == ""  # no progress bar with --json


def test_identify_table_cells(opened, identifier, capsys) -> None:
    assert main(["identify", "ix", "a.jpg", "b.jpg", "--threshold", "0.25"]) == 0
    out, err = capsys.readouterr()
    assert "identification (threshold 0.250)" in out
    rows = _table_rows(out)
    assert rows[0] == ["image", "answer", "confidence", "top matches (score, reference)", "ms"]
    assert ["a.jpg", "vase", "0.877", "vase 0.912 (vase_1.png)", "13"] in rows
    assert ["", "", "", "bowl 0.500 (-)", ""] in rows
    assert ["b.jpg", "unknown", "0.125", "cup 0.250 (cup.png)", "3"] in rows
    assert "identify: 100%" in err and "2/2" in err  # a progress bar for several photos
    assert "img/s]" in err  # counting photos


def test_identify_table_with_objects_and_a_reranker(opened, identifier, capsys) -> None:
    arguments = ["identify", "ix", "a.jpg", "b.jpg", "--multi", "--rerank", "verifier.pt"]
    assert main(arguments) == 0
    out = capsys.readouterr().out
    assert "identification (threshold none (no rejection), re-ranker verifier)" in out
    rows = _table_rows(out)
    assert rows[0][4:] == ["objects (confidence, box)", "ms"]
    assert [
        "a.jpg",
        "vase",
        "0.877",
        "vase 0.912 (vase_1.png)",
        "vase 0.750 [1, 2, 3, 4]",
        "13",
    ] in rows
    assert ["", "", "", "bowl 0.500 (-)", "bowl 0.500 [5, 6, 7, 8]", ""] in rows  # one a line
    assert ["b.jpg", "unknown", "0.125", "cup 0.250 (cup.png)", "none", "3"] in rows


def test_identify_table_lists_unreadable_photos_and_exits_1(opened, identifier, capsys) -> None:
    assert main(["identify", "ix", "bad.jpg"]) == 1
    out, err = capsys.readouterr()
    assert "bad.jpg: bad.jpg: not an image" in out
    assert err == ""  # a single photo: no progress bar


def test_image_paths_expand_folders_to_their_images_sorted(tmp_path) -> None:
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    for name in ("b.JPG", "a.png", "sub/c.webp", "notes.txt", "sub/d.TIFF", "e.gif"):
        (folder / name).write_bytes(b"")
    single = tmp_path / "single.txt"  # a file is taken as it is, whatever its suffix
    found = image_paths([str(single), str(folder)])
    assert found == [
        single,
        folder / "a.png",
        folder / "b.JPG",
        folder / "e.gif",
        folder / "sub" / "c.webp",
        folder / "sub" / "d.TIFF",
    ]


def test_identify_without_any_photo_is_refused(opened, identifier, tmp_path, capsys) -> None:
    assert main(["identify", "ix", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"pyinstance identify: error: images: no image file in ['{tmp_path}']")
    assert opened == []


@dataclass
class Fit:
    threshold: float = 0.123456
    far: float = 0.0421
    target_far: float = 0.05
    frr: float | None = 0.2
    known: dict = field(default_factory=lambda: {"leave_one_out": 3})
    unknown: dict = field(default_factory=lambda: {"leave_instance_out": 4})
    recall: float = 0.5
    photos: int = 7

    def to_dict(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "far": self.far}


@pytest.fixture
def calibrations(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict[str, Any]]]:
    calls: list[tuple[str, dict[str, Any]]] = []

    def calibrate(index: Any, **options: Any) -> Fit:
        calls.append(("threshold", {"index": index, **options}))
        return Fit()

    def calibrate_objects(index: Any, **options: Any) -> Fit:
        calls.append(("objects", {"index": index, **options}))
        return Fit()

    monkeypatch.setattr(calibration_module, "calibrate", calibrate)
    monkeypatch.setattr(objects_module, "calibrate_objects", calibrate_objects)
    return calls


def test_calibrate_defaults_and_line(opened, calibrations, capsys) -> None:
    assert main(["calibrate", "ix"]) == 0
    assert opened == [("ix", "auto"), ("closed", "")]
    assert calibrations == [
        (
            "threshold",
            {
                "index": "the index",
                "classifier": "nn",
                "target_far": 0.05,
                "views": 4,
                "distractors": [],
                "progress": True,
                "reranker": None,
            },
        )
    ]
    out = capsys.readouterr().out
    assert " ".join(out.split()) == (
        "threshold 0.1235 stored in ix (classifier nn): FAR 0.042 (target 0.05), FRR 0.200; "
        "known queries {'leave_one_out': 3}, unknown queries {'leave_instance_out': 4}"
    )


def test_calibrate_options_and_json(opened, calibrations, tmp_path, capsys) -> None:
    (tmp_path / "d.png").write_bytes(b"")
    arguments = ["calibrate", "ix", "--far", "0.1", "--classifier", "knn_vote", "--views", "0"]
    arguments += ["--distractors", str(tmp_path), "--json", "--rerank", "v.pt"]
    arguments += ["--engine", "onnxruntime"]
    assert main(arguments) == 0
    assert opened[0] == ("ix", "onnxruntime")
    assert calibrations[0][1] == {
        "index": "the index",
        "classifier": "knn_vote",
        "target_far": 0.1,
        "views": 0,
        "distractors": [tmp_path / "d.png"],
        "progress": False,
        "reranker": "v.pt",
    }
    assert json.loads(capsys.readouterr().out) == {"threshold": 0.123456, "far": 0.0421}


def test_calibrate_line_names_the_reranker_and_a_missing_frr(
    opened, calibrations, monkeypatch, capsys
) -> None:
    monkeypatch.setattr(calibration_module, "calibrate", lambda index, **options: Fit(frr=None))
    assert main(["calibrate", "ix", "--rerank", "v.pt"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert out.startswith("threshold 0.1235 stored in ix (classifier nn, re-ranker v.pt): ")
    assert "FAR 0.042 (target 0.05), FRR n/a; known" in out


def test_calibrate_objects(opened, calibrations, tmp_path, capsys) -> None:
    arguments = ["calibrate", "ix", "--objects", "--far", "0.2", "--scenes", "5"]
    arguments += ["--references", "6", "--distractors", str(tmp_path / "x.jpg")]
    assert main([*arguments, "--engine", "torch"]) == 0
    assert opened == [("ix", "torch"), ("closed", "")]
    assert calibrations == [
        (
            "objects",
            {
                "index": "the index",
                "target_far": 0.2,
                "distractors": [tmp_path / "x.jpg"],
                "scenes": 5,
                "references": 6,
                "progress": True,
            },
        )
    ]
    out = " ".join(capsys.readouterr().out.split())
    assert out == (
        "objects threshold 0.1235 stored in ix: photos inventing an object 0.042 "
        "(target 0.05) of 7, references named 0.500"
    )
    assert main(["calibrate", "ix", "--objects", "--json"]) == 0
    assert calibrations[-1][1]["scenes"] == 60 and calibrations[-1][1]["references"] == 60
    assert calibrations[-1][1]["progress"] is False and calibrations[-1][1]["target_far"] == 0.05
    assert json.loads(capsys.readouterr().out) == {"threshold": 0.123456, "far": 0.0421}


def test_calibrate_objects_refuses_a_reranker(opened, calibrations, capsys) -> None:
    assert main(["calibrate", "ix", "--objects", "--rerank", "v.pt"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pyinstance calibrate: error: --rerank: not with --objects")
    assert calibrations == [] and opened == []


def test_result_cells_fold_instead_of_being_cut() -> None:
    """On a narrow terminal a long cell wraps onto more lines, whole (no "…")."""
    for multi in (False, True):
        table = _result_table(0.5, multi)
        name = "photo_" + "x" * 70 + ".jpg"
        table.add_row(
            name, "vase_" + "y" * 40, "0.500", "z" * 50, *(["o" * 30] if multi else []), "1"
        )
        console = Console(width=60, file=io.StringIO(), color_system=None)
        console.print(table)
        text = console.file.getvalue()
        assert "…" not in text
        body = "\n".join(line for line in text.splitlines() if "│" in line)  # not the head
        lines = _table_rows(body)
        assert "".join(cells[0] for cells in lines) == name
        assert "".join(cells[1] for cells in lines) == "vase_" + "y" * 40
        assert "".join(cells[3] for cells in lines) == "z" * 50


class FlushRecorder(io.StringIO):
    """stdout that records what had been written at each flush."""

    def __init__(self) -> None:
        super().__init__()
        self.flushed: list[str] = []

    def flush(self) -> None:
        self.flushed.append(self.getvalue())
        super().flush()


def test_identify_json_lines_are_flushed_one_by_one(opened, identifier, monkeypatch) -> None:
    """A reader of the pipe gets each answer as soon as it is known."""
    out = FlushRecorder()
    monkeypatch.setattr("sys.stdout", out)
    assert main(["identify", "ix", "a.jpg", "bad.jpg", "b.jpg", "--json"]) == 1
    lines = out.getvalue().splitlines(keepends=True)
    assert len(lines) == 3
    for count in (1, 2, 3):
        assert "".join(lines[:count]) in out.flushed
