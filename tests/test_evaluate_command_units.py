"""``pyinstance evaluate`` in-process over a fake index, evaluation and report writer
(recorders): the options handed on, the problems, tables, JSON and report written, and the
refusal of a report folder in use (for mutation testing: no network, no index on disk)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import pyinstance.eval.evaluate as evaluate_module
import pyinstance.eval.report as report_module
from pyinstance.cli import main
from pyinstance.commands.evaluate import _cell, _write_json, objects_table, summary_table
from pyinstance.eval.evaluate import SUMMARY_KEYS
from pyinstance.index import InstanceIndex

HEADERS = ["group", "queries", "P@1", "mAP", "mAP@R", "µAP", "R@5", "AUROC", "FAR", "FRR", "ms"]


class FakeResult:
    def __init__(self, metrics: dict[str, Any], problems: list[str]) -> None:
        self.metrics = metrics
        self.problems = problems
        self.classifier = "knn"
        self.threshold = 0.25
        self.reranker = None

    def to_dict(self) -> dict[str, Any]:
        return {"answer": 42, "nested": {"a": [1, 2]}}


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The index, ``evaluate`` and ``write_report`` replaced by recorders."""
    record: dict[str, Any] = {"opened": [], "closed": 0}
    record["result"] = FakeResult(
        {**dict.fromkeys(SUMMARY_KEYS, 0.5), "queries": 3}, ["row 7: bad", "row 9: worse"]
    )
    index = SimpleNamespace(describer="the describer")

    class Opened:
        def __enter__(self) -> SimpleNamespace:
            return index

        def __exit__(self, *exc: Any) -> None:
            record["closed"] += 1

    def open_index(path: str, *, engine: str) -> Opened:
        record["opened"].append((path, engine))
        return Opened()

    def evaluate(index_: Any, manifest: Any, extra: Any, **options: Any) -> FakeResult:
        assert index_ is index
        record["evaluate"] = (manifest, extra, options)
        return record["result"]

    def write_report(result: Any, folder: Path, *, describer: Any, force: bool) -> Path:
        record["report"] = (result, folder, describer, force)
        return folder / "index.html"

    monkeypatch.setattr(InstanceIndex, "open", open_index)
    monkeypatch.setattr(evaluate_module, "evaluate", evaluate)
    monkeypatch.setattr(report_module, "write_report", write_report)
    monkeypatch.setenv("COLUMNS", "250")
    return record


def test_defaults_reach_the_evaluation(calls: dict[str, Any], capsys) -> None:
    assert main(["evaluate", "idx", "--manifest", "m.csv"]) == 0
    assert calls["opened"] == [("idx", "auto")] and calls["closed"] == 1
    manifest, extra, options = calls["evaluate"]
    assert (manifest, extra) == ("m.csv", None)
    assert options == {
        "classifier": None,
        "threshold": None,
        "top_k": 5,
        "groups": {},
        "progress": True,
        "multi": False,
        "reranker": None,
    }
    assert "report" not in calls
    captured = capsys.readouterr()
    assert captured.err == "pyinstance evaluate: row 7: bad\npyinstance evaluate: row 9: worse\n"
    assert "evaluation (classifier knn, threshold 0.250)" in captured.out
    assert "every object in the photo" not in captured.out
    assert "written" not in captured.out


def test_every_option_reaches_the_evaluation(calls: dict[str, Any], tmp_path: Path, capsys) -> None:
    report = tmp_path / "report"
    out = tmp_path / "metrics.json"
    argv = [
        "evaluate", "idx", "--manifest", "m.csv", "--extra", "x.csv", "--classifier", "nn",
        "--threshold", "0.5", "--top-k", "3", "--group", "crop=a,b", "--group", "all=c",
        "--multi", "--rerank", "v.pt", "--engine", "torch", "--json", str(out),
        "--report", str(report),
    ]  # fmt: skip
    assert main(argv) == 0
    assert calls["opened"] == [("idx", "torch")]
    manifest, extra, options = calls["evaluate"]
    assert (manifest, extra) == ("m.csv", "x.csv")
    assert options == {
        "classifier": "nn",
        "threshold": 0.5,
        "top_k": 3,
        "groups": {"crop": ("a", "b"), "all": ("c",)},
        "progress": True,
        "multi": True,
        "reranker": "v.pt",
    }
    assert json.loads(out.read_text()) == {"answer": 42, "nested": {"a": [1, 2]}}
    assert calls["report"] == (calls["result"], report, "the describer", False)
    text = " ".join(capsys.readouterr().out.split())
    assert f"metrics written to {out}" in text
    assert f"report written to {report / 'index.html'}" in text


def test_objects_table_only_when_objects_were_measured(calls: dict[str, Any], capsys) -> None:
    values = dict.fromkeys(("queries", "objects", "named", "found", "recall"), 2)
    values.update(precision=0.5, inventing=0.0, ms_per_query=12.0)
    calls["result"].metrics["objects"] = {"all": values}
    assert main(["evaluate", "idx", "--manifest", "m.csv", "--multi"]) == 0
    assert "every object in the photo" in capsys.readouterr().out


def test_a_report_folder_in_use_is_refused_before_the_index_opens(
    calls: dict[str, Any], tmp_path: Path, capsys
) -> None:
    folder = tmp_path / "used"
    folder.mkdir()
    (folder / "old.html").write_text("x")
    assert main(["evaluate", "idx", "--manifest", "m", "--report", str(folder)]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"pyinstance evaluate: error: --report: folder {str(folder)!r} exists and is not "
        "empty; pass --force\n"
    )
    assert calls["opened"] == []
    assert main(["evaluate", "idx", "--manifest", "m", "--report", str(folder), "--force"]) == 0
    assert calls["report"][1:] == (folder, "the describer", True)


def test_an_empty_or_new_report_folder_is_accepted(calls: dict[str, Any], tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["evaluate", "idx", "--manifest", "m", "--report", str(empty)]) == 0
    assert calls["report"][1:] == (empty, "the describer", False)
    new = tmp_path / "new"
    assert main(["evaluate", "idx", "--manifest", "m", "--report", str(new)]) == 0
    assert calls["report"][1:] == (new, "the describer", False)


def _cells(table: Any) -> list[list[str]]:
    return [list(column.cells) for column in table.columns]


def test_summary_table_rows_and_title() -> None:
    metrics = {
        **dict.fromkeys(SUMMARY_KEYS, float("nan")),
        "queries": 4,
        "p_at_1": 0.5,
        "map": 2 / 3,
        "ms_per_query": 12.3456,
        "groups": {"s2": {**dict.fromkeys(SUMMARY_KEYS, 1.0), "queries": 1}},
    }
    table = summary_table(metrics, "knn", 0.1234, "verifier")
    assert table.title == "evaluation (classifier knn, re-ranker verifier, threshold 0.123)"
    assert [column.header for column in table.columns] == HEADERS
    assert [column.justify for column in table.columns] == ["left"] + ["right"] * 10
    columns = _cells(table)
    assert [column[0] for column in columns] == ["all", "4", "0.500", "0.667"] + ["-"] * 6 + [
        "12.346"
    ]
    assert [column[1] for column in columns] == ["s2", "1"] + ["1.000"] * 9
    assert summary_table(metrics, "nn", None).title == "evaluation (classifier nn, threshold none)"
    assert summary_table(metrics, "nn", 0.0, "").title == (
        "evaluation (classifier nn, threshold 0.000)"
    )


def test_objects_table_rows_and_title() -> None:
    values = {
        "queries": 3, "objects": 5, "named": 4, "found": 2, "recall": 0.4,
        "precision": float("nan"), "inventing": 1 / 3, "ms_per_query": 7.0,
    }  # fmt: skip
    table = objects_table({"all": values, "crop": {**values, "queries": 1}})
    assert table.title == "every object in the photo"
    assert [column.header for column in table.columns] == [
        "group", "queries", "objects", "named", "found", "recall", "precision", "inventing", "ms",
    ]  # fmt: skip
    assert [column.justify for column in table.columns] == ["left"] + ["right"] * 8
    columns = _cells(table)
    assert [column[0] for column in columns] == [
        "all", "3", "5", "4", "2", "0.400", "-", "0.333", "7.000",
    ]  # fmt: skip
    assert [column[1] for column in columns][:2] == ["crop", "1"]


@pytest.mark.parametrize(
    ("value", "text"),
    [(0.12345, "0.123"), (float("nan"), "-"), (3, "3"), (True, "True"), ("x", "x"), (2.0, "2.000")],
)
def test_cell(value: Any, text: str) -> None:
    assert _cell(value) == text


def test_write_json_indents_ends_with_a_newline_and_refuses_nan(tmp_path: Path) -> None:
    path = tmp_path / "out.json"
    _write_json(path, {"a": [1, 2.5], "b": None})
    assert path.read_text() == '{\n  "a": [\n    1,\n    2.5\n  ],\n  "b": null\n}\n'
    with pytest.raises(ValueError):
        _write_json(path, {"a": math.nan})
    assert json.loads(path.read_text()) == {"a": [1, 2.5], "b": None}  # left as it was


def test_the_summary_names_the_re_ranker(calls: dict[str, Any], capsys) -> None:
    calls["result"].reranker = "verifier.pt"
    assert main(["evaluate", "idx", "--manifest", "m.csv"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "evaluation (classifier knn, re-ranker verifier.pt, threshold 0.250)" in out
