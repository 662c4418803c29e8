"""pyinstance.eval.evaluate without a network: reading the query CSVs, the outcome and result
records, the summary rows and the metrics of hand-made outcomes, each counted by hand."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from pyinstance.data.manifest import RowProblem
from pyinstance.eval.evaluate import (
    EvaluationResult,
    QueryOutcome,
    QuerySpec,
    _check_groups,
    _metrics,
    read_queries,
    summary_rows,
)
from pyinstance.identification import Match
from pyinstance.objects import DetectedObject


def _spec(name="q.jpg", ids=("a",), query_set=None, kind=None) -> QuerySpec:
    return QuerySpec(Path(name), tuple(ids), query_set, kind, f"m.csv:{name}")


def _outcome(truth, answer, confidence=0.5, ms=1.0, spec=None, top_k=(), objects=None):
    spec = spec or _spec(ids=truth)
    return QueryOutcome(spec, tuple(truth), answer, confidence, tuple(top_k), ms, objects)


# --------------------------------------------------------------------------- reading


def test_manifest_and_extra_rows_become_specs_and_problems(tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text(
        "path,instance_id,split,query_set\nr.jpg,a,reference,\nq1.jpg,a,query,s1\nq2.jpg,,query,-\n"
    )
    extra = tmp_path / "e.csv"
    extra.write_text(
        "path,instance_ids,kind,query_set\n"
        ",a,painting,s1\n"  # no path: a problem, and the next rows are still read
        "x1.jpg,a;;a; b ;,painting,-\n"
        "x2.jpg,c,not_in_collection,\n"
        "x3.jpg,d,,s2\n"
        "q1.jpg,z,painting,s3\n"  # the manifest's q1 again: evaluated once
    )
    specs, problems = read_queries(manifest, extra)
    assert specs == [
        QuerySpec(tmp_path / "q1.jpg", ("a",), "s1", None, f"{manifest}:3"),
        QuerySpec(tmp_path / "q2.jpg", (), None, None, f"{manifest}:4"),
        QuerySpec(tmp_path / "x1.jpg", ("a", "b"), None, "painting", f"{extra}:3"),
        QuerySpec(tmp_path / "x2.jpg", (), None, "not_in_collection", f"{extra}:4"),
        QuerySpec(tmp_path / "x3.jpg", ("d",), "s2", None, f"{extra}:5"),
    ]
    q1 = str(tmp_path / "q1.jpg")
    assert problems == [
        RowProblem(f"{extra}:2", "empty path"),
        RowProblem(f"{extra}:6", f"duplicate query {q1!r} (first at {manifest}:3); evaluated once"),
    ]


def test_an_extra_file_without_query_sets(tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,instance_id,split\nq.jpg,a,query\n")
    extra = tmp_path / "e.csv"
    extra.write_text("path,instance_ids,kind\nx.jpg,b,painting\n")
    specs, problems = read_queries(manifest, extra)
    assert [(s.path.name, s.query_set) for s in specs] == [("q.jpg", None), ("x.jpg", None)]
    assert problems == []


def test_no_query_rows_names_every_file_read(tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,instance_id,split\nr.jpg,a,reference\n")
    with pytest.raises(ValueError, match=f"^manifest: no query rows in {str(manifest)!r}$"):
        read_queries(manifest)
    extra = tmp_path / "e.csv"
    extra.write_text("path,instance_ids,kind\n")
    expected = f"^manifest: no query rows in {str(manifest)!r} or {str(extra)!r}$"
    with pytest.raises(ValueError, match=expected):
        read_queries(manifest, extra)


def test_a_missing_extra_column_shows_the_expected_header(tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,instance_id,split\nq.jpg,a,query\n")
    extra = tmp_path / "e.csv"
    extra.write_text("path,instance_ids\nx.jpg,b\n")
    with pytest.raises(ValueError, match=r"\(expected path,instance_ids,kind\[,query_set\]\)$"):
        read_queries(manifest, extra)


def test_errors_about_the_extra_file_name_the_argument(tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,instance_id,split\nq.jpg,a,query\n")
    extra = tmp_path / "e.csv"
    extra.write_text("path,instance_ids\nx.jpg,b\n")
    with pytest.raises(ValueError, match=f"^extra {str(extra)!r}: missing column"):
        read_queries(manifest, extra)
    with pytest.raises(FileNotFoundError, match="^extra: no such file"):
        read_queries(manifest, tmp_path / "missing.csv")


# --------------------------------------------------------------------------- records


@pytest.mark.parametrize(
    ("truth", "answer", "known", "correct", "verdict"),
    [
        (("a", "b"), "b", True, True, "right"),
        (("a",), "c", True, False, "wrong"),
        (("a",), None, True, False, "rejected"),
        ((), None, False, True, "right"),  # an unknown object answered "unknown"
        ((), "c", False, False, "wrong"),
    ],
)
def test_outcome_verdicts(truth, answer, known, correct, verdict) -> None:
    outcome = _outcome(truth, answer)
    assert (outcome.known, outcome.correct, outcome.verdict) == (known, correct, verdict)


def test_outcome_to_dict() -> None:
    spec = QuerySpec(Path("d/q.jpg"), ("a", "b"), "s1", "painting", "e.csv:4")
    top_k = (Match("b", 0.75, "img1", "refs/b.jpg"), Match("c", 0.5, None, None))
    found = DetectedObject("b", 0.8, (1, 2, 3, 4), "img1")
    expected = {
        "path": "d/q.jpg", "row": "e.csv:4", "query_set": "s1", "kind": "painting",
        "truth": ["b"], "answer": "b", "confidence": 0.75, "verdict": "right",
        "top_k": [
            {"instance": "b", "score": 0.75, "image": "refs/b.jpg"},
            {"instance": "c", "score": 0.5, "image": None},
        ],
        "ms": 12.5,
    }  # fmt: skip
    outcome = QueryOutcome(spec, ("b",), "b", 0.75, top_k, 12.5)
    assert outcome.to_dict() == expected
    with_objects = QueryOutcome(spec, ("b",), "b", 0.75, top_k, 12.5, (found,))
    assert with_objects.to_dict() == {
        **expected,
        "objects": [{"instance": "b", "confidence": 0.8, "box": [1, 2, 3, 4], "image_id": "img1"}],
    }


def test_result_to_dict_turns_every_nan_into_none() -> None:
    outcome = _outcome((), "c", confidence=float("nan"), spec=_spec("u.jpg", ()))
    result = EvaluationResult(
        metrics={"map": float("nan"), "far": 1.0, "groups": {"s": {"map": float("nan")}},
                 "pair": (float("nan"), 2), "n": 3},
        outcomes=[outcome],
        problems=[RowProblem("m.csv:5", "empty path")],
        failed_queries=2,
        index="/ix",
        recipe={"dim": 8},
        classifier="nn",
        threshold=None,
        reranker="verification",
    )  # fmt: skip
    data = result.to_dict()
    assert data == {
        "map": None, "far": 1.0, "groups": {"s": {"map": None}}, "pair": [None, 2], "n": 3,
        "failed_queries": 2, "index": "/ix", "recipe": {"dim": 8}, "classifier": "nn",
        "threshold": None, "reranker": "verification", "problems": ["m.csv:5: empty path"],
        "per_query": [{**outcome.to_dict(), "confidence": None}],
    }  # fmt: skip


def test_summary_rows_order() -> None:
    metrics = {
        "queries": 9,
        "groups": {"b": {"queries": 2}, "a": {"queries": 3}},
        "named_groups": {"z": {"queries": 4}, "c": {"queries": 5}},  # as given
        "kinds": {"query": {"queries": 6}, "extra": {"queries": 1}},
    }
    rows = summary_rows(metrics)
    assert [name for name, _ in rows] == ["all", "a", "b", "z", "c", "kind extra", "kind query"]
    assert [values["queries"] for _, values in rows] == [9, 3, 2, 4, 5, 1, 6]
    assert summary_rows({"queries": 1}) == [("all", {"queries": 1})]


def test_named_groups_are_checked() -> None:
    assert _check_groups(None) == {}
    assert _check_groups({"crop": ["s1", "s2"], "one": ("s3",)}) == {
        "crop": frozenset({"s1", "s2"}),
        "one": frozenset({"s3"}),
    }
    with pytest.raises(TypeError, match="^groups: expected a dict name -> query sets, got list"):
        _check_groups([("crop", ["s1"])])
    for bad_name in ("", 3):
        with pytest.raises(ValueError, match="^groups: expected non-empty str names"):
            _check_groups({bad_name: ["s1"]})
    for bad_sets in ("s1", [], ["s1", ""], ["s1", 2]):
        with pytest.raises(ValueError, match=r"^groups\['crop'\]: expected a list of query set"):
            _check_groups({"crop": bad_sets})


# --------------------------------------------------------------------------- metrics

# References: codes 0 "a", 1 "b", 1 "b", 2 "c".
_REFERENCES = np.array([0, 1, 1, 2])
_CODES = {"a": 0, "b": 1, "c": 2}


def _four_queries():
    """q1 right (a), q2 wrong (b answered c), q3 unknown rejected, q4 right (b or c)."""
    outcomes = [
        _outcome(("a",), "a", 0.9, 10.0, _spec("q1", ("a",), "s1")),
        _outcome(("b",), "c", 0.6, 20.0, _spec("q2", ("b",), "s1", "extra")),
        _outcome((), None, 0.2, 30.0, _spec("q3", (), "s2", "not_in_collection")),
        _outcome(("b", "c"), "c", 0.7, 40.0, _spec("q4", ("b", "c"), None, "multiple")),
    ]
    ranked = np.array([[0, 1, 1, 2], [2, 1, 0, 1], [1, 0, 1, 2], [0, 2, 1, 1]])
    return outcomes, ranked


def test_metrics_of_hand_made_outcomes() -> None:
    outcomes, ranked = _four_queries()
    named = {"both": frozenset({"s1", "s2"}), "none": frozenset({"zz"})}
    m = _metrics(outcomes, ranked, _REFERENCES, _CODES, 4, named)
    # hits: q1 [1,0,0,0] of 1; q2 [0,1,0,1] of 2; q4 [0,1,1,1] of 3 (b, b, c); q3 unknown.
    ap = [1.0, (1 / 2 + 2 / 4) / 2, (1 / 2 + 2 / 3 + 3 / 4) / 3]
    assert (m["queries"], m["known_queries"], m["unknown_queries"]) == (4, 3, 1)
    assert m["p_at_1"] == pytest.approx(1 / 3)
    assert m["recall_at_5"] == 1.0  # recall at min(5, 4 references)
    assert "p_at_4" not in m and "recall_at_4" not in m
    assert m["map"] == pytest.approx(sum(ap) / 3)
    # accepted by confidence: q1 right, q4 right, q2 wrong; 3 known queries
    assert m["micro_ap"] == pytest.approx((1 / 1 + 2 / 2) / 3)
    assert (m["far"], m["frr"], m["misidentification"]) == (0.0, 0.0, pytest.approx(1 / 3))
    assert m["auroc_unknown"] == 1.0  # the unknown query is the least confident
    assert m["ms_per_query"] == 25.0
    assert sorted(m["groups"]) == ["s1", "s2"]  # q4 has no query set
    s1, s2 = m["groups"]["s1"], m["groups"]["s2"]
    assert (s1["queries"], s1["p_at_1"], s1["ms_per_query"]) == (2, 0.5, 15.0)
    assert (s2["queries"], s2["ms_per_query"], s2["far"]) == (1, 30.0, 0.0)
    assert math.isnan(s2["p_at_1"])
    kinds = m["kinds"]
    assert sorted(kinds) == ["extra", "multiple", "not_in_collection", "query"]
    assert [kinds[k]["ms_per_query"] for k in ("query", "extra", "not_in_collection")] == [
        10.0, 20.0, 30.0,
    ]  # fmt: skip
    assert list(m["named_groups"]) == ["both"]  # "none" holds no query
    both = m["named_groups"]["both"]
    assert (both["queries"], both["ms_per_query"], both["p_at_1"]) == (3, 20.0, 0.5)


def test_metrics_with_one_reference_rank_one_column() -> None:
    outcome = _outcome(("a",), "a", 0.9, 4.0, _spec("q", ("a",)))
    m = _metrics([outcome], np.array([[0]]), np.array([0]), {"a": 0}, 1, {})
    assert m["p_at_1"] == 1.0 and m["recall_at_5"] == 1.0 and m["map"] == 1.0
    assert m["ms_per_query"] == 4.0 and m["named_groups"] == {} and m["groups"] == {}
    assert list(m["kinds"]) == ["query"]


def test_metrics_with_three_references_recall_at_three() -> None:
    # recall@min(5, 3): q1's reference at rank 3 counts; P@3 is not reported.
    outcome = _outcome(("a",), "c", 0.9, 4.0, _spec("q", ("a",)))
    m = _metrics([outcome], np.array([[1, 2, 0]]), np.array([0, 1, 2]), _CODES, 3, {})
    assert m["recall_at_5"] == 1.0 and m["p_at_1"] == 0.0 and "p_at_3" not in m
    assert m["map"] == pytest.approx(1 / 3)
