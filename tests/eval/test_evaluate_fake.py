"""``evaluate`` over a fake index and identifier (no network): what it asks of each, the
problems it reports, the outcomes it keeps and what it hands to the metrics."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from tqdm.auto import tqdm

import pyinstance.eval.evaluate as evaluate_module
from pyinstance.data.images import ImageDecodeError
from pyinstance.eval.evaluate import QueryOutcome, QuerySpec, evaluate
from pyinstance.identification import DEFAULT_CLASSIFIER, Match


class FakeIndex:
    def __init__(self, path: Path):
        self.path = path
        self.instances = ("a", "b", "c")
        self.recipe = SimpleNamespace(to_dict=lambda: {"head": "gem", "dim": 8})
        self.settings: dict[str, Any] = {}
        self.searches: list[tuple[np.ndarray, int]] = []

    def __len__(self) -> int:
        return 4

    def search(self, queries: np.ndarray, k: int) -> Any:
        self.searches.append((queries, k))
        row = int(queries[0, 0])
        return SimpleNamespace(labels=np.array([[row, 1, 2, 0]]))

    def labels(self) -> np.ndarray:
        return np.array([0, 1, 1, 2])

    def get_setting(self, key: str) -> Any:
        return self.settings.get(key)


class FakeIdentifier:
    made: list[FakeIdentifier] = []
    answers: dict[str, Any] = {}
    reorder: bool = False

    def __init__(self, index, **options: Any):
        self.index, self.options = index, options
        self.threshold = 0.4 if options["threshold"] is None else options["threshold"]
        self.reranker_name = "verifier" if options["reranker"] else None
        self.reranking = SimpleNamespace(reorder=self._reorder) if FakeIdentifier.reorder else None
        self.reordered: list[tuple[np.ndarray, Any]] = []
        FakeIdentifier.made.append(self)

    def _reorder(self, queries: np.ndarray, neighbours: Any) -> Any:
        self.reordered.append((queries, neighbours))
        return SimpleNamespace(labels=neighbours.labels[:, ::-1].copy())

    def identify_described(self, paths: list[Path]) -> list[tuple[Any, np.ndarray]]:
        (path,) = paths
        found = FakeIdentifier.answers[path.name]
        if isinstance(found, Exception):
            raise found
        return [(found, np.full(8, found.row, dtype=np.float32))]


def answer(instance: str | None, confidence: float, row: int, total: float, objects=None):
    top = (Match(instance or "b", confidence, "img", "/x/img.jpg"),)
    return SimpleNamespace(
        instance=instance,
        confidence=confidence,
        top_k=top,
        ms={"total": total, "extract": 99.0},
        objects=objects,
        row=row,
    )


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    FakeIdentifier.made = []
    FakeIdentifier.reorder = False
    FakeIdentifier.answers = {
        "q1.jpg": answer("a", 0.9, 0, 10.0),
        "q2.jpg": answer(None, 0.2, 1, 20.0),
        "q3.jpg": ImageDecodeError("q3.jpg: truncated"),
        "q4.jpg": answer("b", 0.6, 2, 30.0, objects=("obj",)),
    }
    monkeypatch.setattr(evaluate_module, "InstanceIndex", FakeIndex)
    monkeypatch.setattr(evaluate_module, "Identifier", FakeIdentifier)
    calls: dict[str, Any] = {}

    def metrics(outcomes, ranked, labels, code_of, n_refs, named):
        calls["metrics"] = (outcomes, ranked, labels, code_of, n_refs, named)
        return {"map": 0.5}

    def objects(outcomes):
        calls["objects"] = outcomes
        return {"objects_found": 1}

    monkeypatch.setattr(evaluate_module, "_metrics", metrics)
    monkeypatch.setattr(evaluate_module, "object_metrics", objects)
    manifest = tmp_path / "m.csv"
    manifest.write_text(
        "path,instance_id,split,query_set\n"
        "r.jpg,a,reference,\n"
        "q1.jpg,a,query,s1\n"
        "q2.jpg,z,query,s1\n"  # not in the index: unknown
        "q3.jpg,b,query,\n"
    )
    extra = tmp_path / "e.csv"
    extra.write_text("path,instance_ids,kind,query_set\nq4.jpg,b;y;c,painting,s2\n")
    return {
        "index": FakeIndex(tmp_path / "idx"),
        "manifest": manifest,
        "extra": extra,
        "calls": calls,
    }


def test_evaluate_identifies_each_query_and_reports_problems(setup, tmp_path: Path) -> None:
    index, calls = setup["index"], setup["calls"]
    result = evaluate(index, setup["manifest"], setup["extra"], groups={"g": ["s1"]})
    (identifier,) = FakeIdentifier.made
    assert identifier.index is index
    assert identifier.options == {
        "classifier": None,
        "classifier_options": None,
        "threshold": None,
        "top_k": 5,
        "multi": False,
        "reranker": None,
    }
    m = setup["manifest"]
    assert [str(p) for p in result.problems] == [
        f"{m}:4: instance id(s) z not in the index; counted as unknown",
        f"{m}:5: not evaluated: q3.jpg: truncated",
        f"{setup['extra']}:2: instance id(s) y not in the index",
    ]
    assert result.failed_queries == 1
    spec = QuerySpec(tmp_path / "q1.jpg", ("a",), "s1", None, f"{m}:3")
    assert result.outcomes[0] == QueryOutcome(
        spec, ("a",), "a", 0.9, FakeIdentifier.answers["q1.jpg"].top_k, 10.0, None
    )
    assert [(o.truth, o.answer, o.confidence, o.ms) for o in result.outcomes] == [
        (("a",), "a", 0.9, 10.0),
        ((), None, 0.2, 20.0),
        (("b", "c"), "b", 0.6, 30.0),
    ]
    assert result.outcomes[2].objects == ("obj",)
    assert [k for _, k in index.searches] == [4, 4, 4]
    assert [q.shape for q, _ in index.searches] == [(1, 8)] * 3
    outcomes, ranked, labels, code_of, n_refs, named = calls["metrics"]
    assert outcomes == result.outcomes
    np.testing.assert_array_equal(ranked, [[0, 1, 2, 0], [1, 1, 2, 0], [2, 1, 2, 0]])
    np.testing.assert_array_equal(labels, [0, 1, 1, 2])
    assert code_of == {"a": 0, "b": 1, "c": 2} and n_refs == 4
    assert named == {"g": frozenset({"s1"})}
    assert "objects" not in calls
    assert result.metrics == {"map": 0.5}
    assert result.index == str(tmp_path / "idx")
    assert result.recipe == {"head": "gem", "dim": 8}
    assert (result.classifier, result.threshold, result.reranker) == (DEFAULT_CLASSIFIER, 0.4, None)


def test_evaluate_passes_its_options_and_names_the_classifier(setup) -> None:
    index = setup["index"]

    class Custom:
        pass

    custom = Custom()
    result = evaluate(
        index,
        setup["manifest"],
        classifier=custom,
        classifier_options={"k": 3},
        threshold=0.7,
        top_k=2,
        multi=True,
        reranker="v",
    )
    assert FakeIdentifier.made[-1].options == {
        "classifier": custom,
        "classifier_options": {"k": 3},
        "threshold": 0.7,
        "top_k": 2,
        "multi": True,
        "reranker": "v",
    }
    assert (result.classifier, result.threshold, result.reranker) == ("Custom", 0.7, "verifier")
    assert setup["calls"]["objects"] == result.outcomes
    assert result.metrics == {"map": 0.5, "objects": {"objects_found": 1}}
    assert evaluate(index, setup["manifest"], classifier="knn").classifier == "knn"
    index.settings["classifier"] = "stored"
    assert evaluate(index, setup["manifest"]).classifier == "stored"


def test_evaluate_ranks_with_the_reranker_order(setup) -> None:
    FakeIdentifier.reorder = True
    evaluate(setup["index"], setup["manifest"])
    identifier = FakeIdentifier.made[-1]
    assert len(identifier.reordered) == 2
    queries, neighbours = identifier.reordered[0]
    assert queries.shape == (1, 8)
    np.testing.assert_array_equal(neighbours.labels, [[0, 1, 2, 0]])
    ranked = setup["calls"]["metrics"][1]
    np.testing.assert_array_equal(ranked, [[0, 2, 1, 0], [0, 2, 1, 1]])


def test_evaluate_counts_every_kind_of_failure(setup) -> None:
    FakeIdentifier.answers["q1.jpg"] = OSError("gone")
    FakeIdentifier.answers["q2.jpg"] = ValueError("too small")
    result = evaluate(setup["index"], setup["manifest"], setup["extra"])
    assert result.failed_queries == 3
    assert [o.spec.path.name for o in result.outcomes] == ["q4.jpg"]
    assert [str(p).split(": ", 1)[1] for p in result.problems if "not evaluated" in str(p)] == [
        "not evaluated: gone",
        "not evaluated: too small",
        "not evaluated: q3.jpg: truncated",
    ]
    FakeIdentifier.answers["q4.jpg"] = ImageDecodeError("bad")
    with pytest.raises(ValueError, match="^manifest: none of the 4 queries could be evaluated$"):
        evaluate(setup["index"], setup["manifest"], setup["extra"])
    FakeIdentifier.answers["q4.jpg"] = RuntimeError("a bug")
    with pytest.raises(RuntimeError, match="a bug"):
        evaluate(setup["index"], setup["manifest"], setup["extra"])


def test_evaluate_refuses_other_indexes_and_bad_groups(setup, tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="^index: expected an InstanceIndex, got str$"):
        evaluate("idx", setup["manifest"])
    with pytest.raises(ValueError, match=r"^groups\['g'\]"):
        evaluate(setup["index"], tmp_path / "missing.csv", groups={"g": []})
    assert FakeIdentifier.made == []


def test_evaluate_shows_progress_only_when_asked(
    setup, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # no monitor thread: a process forked after this test (mutmut) must not inherit its lock
    monkeypatch.setattr(tqdm, "monitor_interval", 0)
    evaluate(setup["index"], setup["manifest"])
    assert "evaluate" not in capsys.readouterr().err
    evaluate(setup["index"], setup["manifest"], progress=True)
    err = capsys.readouterr().err.replace("\r", "\n")
    assert re.search(r"^evaluate: 100%\|.*\| 3/3 \[.*(query/s|s/query)\]$", err, re.M), err


def test_metrics_with_two_references_recall_at_two() -> None:
    # recall@min(5, 2): the reference at rank 2 counts; P@2 is not reported.
    spec = QuerySpec(Path("q.jpg"), ("a",), None, None, "m.csv:2")
    outcome = QueryOutcome(spec, ("a",), "b", 0.9, (), 4.0)
    m = evaluate_module._metrics(
        [outcome], np.array([[1, 0]]), np.array([0, 1]), {"a": 0, "b": 1}, 2, {}
    )
    assert m["recall_at_5"] == 1.0 and m["p_at_1"] == 0.0 and m["map"] == 0.5
    assert "p_at_2" not in m and "recall_at_2" not in m


def test_every_missing_id_of_a_query_is_named(setup, tmp_path: Path) -> None:
    extra = tmp_path / "two.csv"
    extra.write_text("path,instance_ids,kind,query_set\nq4.jpg,y;b;x,painting,s2\n")
    result = evaluate(setup["index"], setup["manifest"], extra)
    assert f"{extra}:2: instance id(s) y, x not in the index" in [str(p) for p in result.problems]
    assert result.outcomes[-1].truth == ("b",)
