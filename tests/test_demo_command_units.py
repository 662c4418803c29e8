"""``pyinstance demo`` in-process over a fake index, calibration, queries, identifier and
page writer (recorders): what is built where, the options handed on, the table's cells, the
page's results and the summary line; the previous index replaced, anything else refused
(for mutation testing: no network, no index on disk; tests/demo/test_demo_command.py runs
it for real)."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import pyinstance.calibration as calibration_module
import pyinstance.demo.page as page_module
import pyinstance.demo.queries as queries_module
import pyinstance.identification as identification_module
from pyinstance.cli import main
from pyinstance.commands.demo import _fresh_index_folder
from pyinstance.demo import COLLECTION_DIR
from pyinstance.demo.page import QueryResult
from pyinstance.identification import Identification, Match
from pyinstance.index import InstanceIndex

ANSWERS = {
    "vase-crop.jpg": Identification(
        image="vase-crop.jpg",
        instance="vase",
        confidence=0.87654,
        top_k=(Match("vase", 0.9, "v1", "/refs/vase_1.png"), Match("bowl", 0.4, "b1", "/b.png")),
        ms={"total": 12.6},
    ),
    "bowl-blur.jpg": Identification(
        image="bowl-blur.jpg",
        instance="vase",
        confidence=0.51,
        top_k=(Match("vase", 0.51, "v1", "/refs/vase_1.png"),),
        ms={"total": 7.4},
    ),
    "unknown-cat.jpg": Identification(
        image="unknown-cat.jpg", instance=None, confidence=0.2, top_k=(), ms={"total": 3.0}
    ),
}
TRUTH = {"vase-crop.jpg": "vase", "bowl-blur.jpg": "bowl", "unknown-cat.jpg": None}


class FakeIndex:
    def __init__(self, record: dict[str, Any], skipped: str | None) -> None:
        self.record = record
        self.skipped = skipped
        self.instances = {"vase": 1, "bowl": 2, "cup": 3}

    def __enter__(self) -> FakeIndex:
        self.record["entered"] += 1
        return self

    def __exit__(self, *exc: Any) -> None:
        self.record["closed"] += 1

    def info(self) -> dict[str, Any]:
        return {"whitening_skipped": self.skipped, "other": 1}


@pytest.fixture
def record(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, Any]:
    calls: dict[str, Any] = {"entered": 0, "closed": 0, "skipped": None, "identified": []}

    def build(folder: Path, source: Path, *, progress: bool, engine: str):
        calls["build"] = (folder, source, progress, engine)
        calls["index"] = FakeIndex(calls, calls["skipped"])
        return calls["index"], SimpleNamespace(added=8)

    def calibrate(index: Any, *, target_far: float, progress: bool):
        assert index is calls["index"]
        calls["calibrate"] = (target_far, progress)
        return SimpleNamespace(threshold=0.41234)

    def make_queries(out: Path):
        calls["queries"] = out
        return [
            SimpleNamespace(path=tmp_path / "q" / name, truth=truth)
            for name, truth in TRUTH.items()
        ]

    class Identifier:
        def __init__(self, index: Any, *, top_k: int) -> None:
            assert index is calls["index"]
            calls["top_k"] = top_k

        def identify(self, paths: list[Path]) -> list[Identification]:
            calls["identified"].append(paths)
            return [ANSWERS[Path(paths[0]).name]]

    def write_page(results: list[QueryResult], path: Path, *, title: str) -> Path:
        calls["page"] = (results, path, title)
        return path

    ticks = iter([100.0, 163.6])
    monkeypatch.setattr(InstanceIndex, "build", build)
    monkeypatch.setattr(calibration_module, "calibrate", calibrate)
    monkeypatch.setattr(queries_module, "make_queries", make_queries)
    monkeypatch.setattr(identification_module, "Identifier", Identifier)
    monkeypatch.setattr(page_module, "write_page", write_page)
    monkeypatch.setattr(time, "perf_counter", lambda: next(ticks))
    monkeypatch.setenv("COLUMNS", "250")
    return calls


def test_demo_builds_calibrates_identifies_and_writes_the_page(
    record: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert main(["demo", "--out", str(out), "--far", "0.1", "--engine", "torch"]) == 0
    assert record["build"] == (out / "index", COLLECTION_DIR, True, "torch")
    assert record["calibrate"] == (0.1, True)
    assert record["queries"] == out / "queries"
    assert record["top_k"] == 3
    q = tmp_path / "q"
    assert record["identified"] == [[q / name] for name in TRUTH]
    assert (record["entered"], record["closed"]) == (1, 1)
    results, path, title = record["page"]
    assert (path, title) == (out / "results.html", "pyinstance demo")
    assert results == [
        QueryResult(
            q / "vase-crop.jpg",
            "vase",
            "vase",
            0.87654,
            [("vase", 0.9, Path("/refs/vase_1.png")), ("bowl", 0.4, Path("/b.png"))],
            12.6,
        ),
        QueryResult(
            q / "bowl-blur.jpg",
            "bowl",
            "vase",
            0.51,
            [("vase", 0.51, Path("/refs/vase_1.png"))],
            7.4,
        ),
        QueryResult(q / "unknown-cat.jpg", None, None, 0.2, [], 3.0),
    ]
    printed = capsys.readouterr().out
    lines = [" ".join(line.split()) for line in printed.splitlines()]
    assert lines[0] == f"indexing the sample collection {COLLECTION_DIR} ..."
    assert lines[1] == (
        "8 references of 3 objects indexed; open-set threshold 0.412 fitted for a 10% "
        "false-accept rate"
    )
    assert "whitening" not in printed
    cells = [
        [cell.strip() for cell in line.strip("│┃").split("│")]
        for line in printed.splitlines()
        if line.startswith("│")
    ]
    assert cells == [
        ["vase-crop.jpg", "vase", "vase", "0.877", "right", "13"],
        ["bowl-blur.jpg", "bowl", "vase", "0.510", "wrong", "7"],
        ["unknown-cat.jpg", "(not in collection)", "unknown", "0.200", "right", "3"],
    ]
    header = next(line for line in printed.splitlines() if line.startswith("┃"))
    assert [cell.strip() for cell in header.strip("┃").split("┃")] == [
        "query", "truth", "answer", "confidence", "", "ms",
    ]  # fmt: skip
    assert "pyinstance demo: changed photos of the collection and unknown objects" in printed
    assert lines[-1] == f"2 of 3 right in 64 s; page: {out / 'results.html'}"


def test_demo_defaults_and_the_whitening_note(
    record: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    record["skipped"] = "whitening skipped: 8 references"
    assert main(["demo"]) == 0
    assert record["build"] == (Path("pyinstance-demo") / "index", COLLECTION_DIR, True, "auto")
    assert record["calibrate"] == (0.05, True)
    lines = [" ".join(line.split()) for line in capsys.readouterr().out.splitlines()]
    assert lines[1] == (
        "whitening skipped: 8 references (the default recipe's policy for small collections)"
    )
    assert "for a 5% false-accept rate" in lines[2]


def test_demo_colours_the_verdicts(
    record: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from rich.console import Console

    printed: list[Any] = []
    monkeypatch.setattr(Console, "print", lambda self, *objects, **kw: printed.extend(objects))
    assert main(["demo", "--out", str(tmp_path / "o")]) == 0
    (table,) = [p for p in printed if hasattr(p, "columns")]
    assert table.title == "pyinstance demo: changed photos of the collection and unknown objects"
    assert list(table.columns[4].cells) == [
        "[green]right[/green]",
        "[red]wrong[/red]",
        "[green]right[/green]",
    ]


def test_a_previous_demo_index_is_removed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    folder = tmp_path / "index"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "f").write_text("x")
    opened: list[Path] = []

    def open_index(path: Path):
        opened.append(path)
        return SimpleNamespace(close=lambda: opened.append("closed"))

    monkeypatch.setattr(InstanceIndex, "open", open_index)
    _fresh_index_folder(folder)
    assert opened == [folder, "closed"]
    assert not folder.exists()
    _fresh_index_folder(folder)  # nothing there: nothing opened
    assert opened == [folder, "closed"]


@pytest.mark.parametrize("error", [OSError("no index.json"), ValueError("bad recipe")])
def test_a_folder_that_is_not_an_index_is_refused_and_kept(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, error: Exception
) -> None:
    folder = tmp_path / "precious"
    folder.mkdir()
    (folder / "keep.txt").write_text("keep me")

    def open_index(path: Path):
        raise error

    monkeypatch.setattr(InstanceIndex, "open", open_index)
    with pytest.raises(ValueError) as raised:
        _fresh_index_folder(folder)
    assert str(raised.value) == (
        f"--out: {str(folder)!r} exists and is not a pyinstance index ({error}); "
        "choose another --out folder"
    )
    assert raised.value.__cause__ is error
    assert (folder / "keep.txt").read_text() == "keep me"


def test_demo_replaces_its_previous_index_first(
    record: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    (out / "index").mkdir(parents=True)
    (out / "index" / "old.bin").write_text("x")
    (out / "queries").mkdir()
    opened: list[Path] = []

    def open_index(path: Path):
        opened.append(path)
        return SimpleNamespace(close=lambda: None)

    monkeypatch.setattr(InstanceIndex, "open", open_index)
    assert main(["demo", "--out", str(out)]) == 0
    assert opened == [out / "index"]
    assert not (out / "index").exists()  # removed (the fake build writes nothing)
    assert (out / "queries").is_dir()  # nothing else removed
