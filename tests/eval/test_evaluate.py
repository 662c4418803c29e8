"""``evaluate``: metrics of labelled queries against a real index, and its bad input."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from pyinstance.cli import main
from pyinstance.eval.evaluate import SUMMARY_KEYS, EvaluationResult, evaluate, read_queries
from pyinstance.index import InstanceIndex

KNOWN_RIGHT = ("box.png", "graf1.png", "rubberwhale1.png", "basketball1.png", "graf_copy.png")


def _outcome(result: EvaluationResult, name: str):
    (outcome,) = [o for o in result.outcomes if o.spec.path.name == name]
    return outcome


def _rank_of(index: InstanceIndex, query: Path, instance: str) -> int:
    """1-based rank of ``instance``'s only reference for ``query``, by plain numpy."""
    descriptor = index.describe_queries([query])[0, 0]
    scores = index.descriptors() @ descriptor
    target = index.instances.index(instance)
    (row,) = np.flatnonzero(index.labels() == target)
    return int((scores > scores[row]).sum()) + 1


def test_answers_of_each_kind_of_query(evaluation: EvaluationResult) -> None:
    for name in KNOWN_RIGHT:
        assert _outcome(evaluation, name).verdict == "right", name
    wrong = _outcome(evaluation, "box_copy.png")
    assert (wrong.truth, wrong.answer, wrong.verdict) == (("graf",), "box", "wrong")
    unknown = _outcome(evaluation, "rubber_copy.png")
    assert (unknown.known, unknown.answer, unknown.verdict) == (False, "rubberwhale", "wrong")
    no_such = _outcome(evaluation, "basket_copy.png")
    assert (no_such.truth, no_such.known) == ((), False)
    multiple = _outcome(evaluation, "graf_copy.png")
    assert multiple.truth == ("box", "graf") and multiple.spec.kind == "multiple_paintings"
    absent = _outcome(evaluation, "leuvenB.jpg")
    assert (absent.truth, absent.spec.kind) == ((), "not_in_collection")


def test_metrics_match_hand_computed_values(
    evaluation: EvaluationResult, pairs_index: InstanceIndex, labelled: dict[str, Path]
) -> None:
    m = evaluation.metrics
    # 9 queries evaluated: 6 known (5 right, box_copy wrong), 3 unknown.
    assert (m["queries"], m["known_queries"], m["unknown_queries"]) == (9, 6, 3)
    assert m["p_at_1"] == pytest.approx(5 / 6)
    rank = _rank_of(pairs_index, labelled["folder"] / "box_copy.png", "graf")
    assert rank > 1
    # single-reference instances: AP = 1 / rank; graf_copy's two relevant references
    # (box and graf) are at ranks 1 and 2 only if box is graf's nearest other reference.
    graf_copy_box = _rank_of(pairs_index, labelled["folder"] / "graf_copy.png", "box")
    ap_multiple = (1 + 2 / graf_copy_box) / 2
    assert m["map"] == pytest.approx((4 + 1 / rank + ap_multiple) / 6)
    assert m["recall_at_5"] == pytest.approx((5 + (rank <= 5)) / 6)
    assert m["frr"] == 0.0
    leuven_accepted = _outcome(evaluation, "leuvenB.jpg").answer is not None
    assert m["far"] == pytest.approx((2 + leuven_accepted) / 3)
    assert m["misidentification"] == pytest.approx(1 / 6)


def test_micro_ap_and_auroc_from_the_recorded_confidences(evaluation: EvaluationResult) -> None:
    outcomes = evaluation.outcomes
    # GAP by its definition: accepted answers by confidence (wrong first among ties).
    accepted = sorted(
        (o for o in outcomes if o.answer is not None), key=lambda o: (-o.confidence, o.correct)
    )
    right = 0
    total = 0.0
    for i, outcome in enumerate(accepted, start=1):
        if outcome.known and outcome.correct:
            right += 1
            total += right / i
    assert evaluation.metrics["micro_ap"] == pytest.approx(total / 6)
    known = [o.confidence for o in outcomes if o.known]
    unknown = [o.confidence for o in outcomes if not o.known]
    pairs = [(k > u) + 0.5 * (k == u) for k in known for u in unknown]
    assert evaluation.metrics["auroc_unknown"] == pytest.approx(sum(pairs) / len(pairs))


def test_groups_hold_the_same_keys(evaluation: EvaluationResult) -> None:
    groups = evaluation.metrics["groups"]
    assert sorted(groups) == ["a", "b"]  # basket_copy has no query set: only overall
    for values in (evaluation.metrics, *groups.values()):
        assert set(SUMMARY_KEYS) <= set(values)
    # a: box, graf1, rubber_copy (unknown), graf_copy; b: rubberwhale1, basketball1,
    # box_copy (wrong), leuvenB (unknown)
    assert (groups["a"]["queries"], groups["a"]["p_at_1"]) == (4, 1.0)
    assert (groups["b"]["queries"], groups["b"]["p_at_1"]) == (4, pytest.approx(2 / 3))
    assert groups["a"]["far"] == 1.0


def test_bad_rows_are_reported_and_the_rest_evaluated(evaluation: EvaluationResult) -> None:
    messages = [str(p) for p in evaluation.problems]
    assert evaluation.failed_queries == 1
    assert len(messages) == 4
    assert any(":10: duplicate: q/box.png is listed first at " in m for m in messages)
    assert any(
        ":9: instance id(s) nosuch not in the index; counted as unknown" in m for m in messages
    )
    assert any(":11: not evaluated: cannot decode" in m and "broken.jpg" in m for m in messages)
    assert any(":12: split must be one of reference, query, got 'train'" in m for m in messages)


def test_json_is_strict_and_undefined_metrics_are_null(evaluation: EvaluationResult) -> None:
    data = evaluation.to_dict()
    text = json.dumps(data, allow_nan=False)
    assert json.loads(text)["queries"] == 9
    assert data["threshold"] == 0.5 and data["recipe"]["max_side"] == 160
    assert data["classifier"] == "nn"
    assert len(data["per_query"]) == 9
    assert evaluation.metrics["groups"]["a"]["frr"] == 0.0


def test_undefined_metrics_become_null(pairs_index: InstanceIndex, tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    shutil.copyfile(pairs_index.images()[0]["source"], tmp_path / "photo.png")
    manifest.write_text("path,instance_id,split\nphoto.png,,query\n")
    result = evaluate(pairs_index, manifest, threshold=0.5)
    data = result.to_dict()
    assert data["queries"] == 1 and data["p_at_1"] is None and data["frr"] is None
    assert math.isnan(result.metrics["map"])


def test_missing_columns_and_no_queries(tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,split\na.jpg,query\n")
    with pytest.raises(ValueError, match="missing column.*instance_id"):
        read_queries(manifest)
    manifest.write_text("path,instance_id,split\na.jpg,a,reference\n")
    with pytest.raises(ValueError, match="no query rows"):
        read_queries(manifest)
    extra = tmp_path / "e.csv"
    extra.write_text("path,instance_id\nb.jpg,b\n")
    manifest.write_text("path,instance_id,split\na.jpg,a,query\n")
    with pytest.raises(ValueError, match="missing column.*instance_ids, kind"):
        read_queries(manifest, extra)
    with pytest.raises(FileNotFoundError, match="^manifest: no such file"):
        read_queries(tmp_path / "absent.csv")
    with pytest.raises(FileNotFoundError, match="^extra: no such file"):
        read_queries(manifest, tmp_path / "absent.csv")


def test_extra_is_read_like_a_manifest(tmp_path: Path) -> None:
    """One CSV reader: the extra file's errors name it, its line, and the encoding problem."""
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,instance_id,split\na.jpg,a,query\n")
    extra = tmp_path / "e.csv"
    extra.write_bytes("path,instance_ids,kind\nb.jpg,café,\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"^extra '.*e\.csv': not UTF-8 text"):
        read_queries(manifest, extra)
    extra.write_text("path,instance_ids,kind\nb.jpg,b,\nc.jpg," + "y" * 200_000 + ",\n")
    with pytest.raises(ValueError, match=r"^extra '.*e\.csv': malformed CSV after line 2"):
        read_queries(manifest, extra)
    extra.write_bytes("\ufeffpath,instance_ids,kind\n b.jpg , b ; c ,\n".encode())
    specs, problems = read_queries(manifest, extra)
    assert problems == [] and [(s.path.name, s.instance_ids) for s in specs] == [
        ("a.jpg", ("a",)),
        ("b.jpg", ("b", "c")),
    ]


def test_every_query_failing_is_an_error(pairs_index: InstanceIndex, tmp_path: Path) -> None:
    (tmp_path / "bad.png").write_bytes(b"\x89PNG broken")
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,instance_id,split\nbad.png,box,query\n")
    with pytest.raises(ValueError, match="none of the 1 queries could be evaluated"):
        evaluate(pairs_index, manifest)
    with pytest.raises(TypeError, match="index: expected an InstanceIndex"):
        evaluate(str(pairs_index.path), manifest)


def test_command_prints_table_writes_json_and_report(
    pairs_index: InstanceIndex,
    labelled: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    out, report = tmp_path / "eval.json", tmp_path / "report"
    manifest = labelled["folder"] / "command.csv"
    manifest.write_text(
        "path,instance_id,split,query_set\n"
        "box_copy.png,box,query,a\n"
        "broken.jpg,box,query,a\n"
        "q/graf1.png,graf,query,c\n"
    )
    args = ["evaluate", str(pairs_index.path), "--manifest", str(manifest), "--threshold", "0.5"]
    options = ["--top-k", "2", "--group", "ac=a,c", "--group", "only_c=c"]
    assert main([*args, *options, "--json", str(out), "--report", str(report)]) == 0
    captured = capsys.readouterr()
    assert "P@1" in captured.out and "µAP" in captured.out and "broken.jpg" in captured.err
    assert "only_c" in captured.out and "kind query" in captured.out
    data = json.loads(out.read_text())
    assert (data["queries"], data["p_at_1"], data["failed_queries"]) == (2, 1.0, 1)
    assert set(data["groups"]) == {"a", "c"}
    assert data["named_groups"]["ac"]["queries"] == 2
    assert data["named_groups"]["only_c"]["queries"] == 1
    assert all(len(query["top_k"]) == 2 for query in data["per_query"])
    assert (report / "index.html").is_file()
    # an existing report is not overwritten without --force, before any work is done
    assert main([*args, "--report", str(report)]) == 2
    assert "--force" in capsys.readouterr().err


def test_kinds_and_named_groups(
    pairs_index: InstanceIndex, labelled: dict[str, Path], evaluation: EvaluationResult
) -> None:
    kinds = evaluation.metrics["kinds"]
    assert sorted(kinds) == ["multiple_paintings", "not_in_collection", "query"]
    assert (kinds["query"]["queries"], kinds["not_in_collection"]["queries"]) == (7, 1)
    assert kinds["multiple_paintings"]["p_at_1"] == 1.0
    assert evaluation.metrics["named_groups"] == {}
    named = evaluate(
        pairs_index,
        labelled["manifest"],
        labelled["extra"],
        classifier="nn",
        threshold=0.5,
        groups={"both": ["a", "b"], "only_b": ["b"], "none": ["z"]},
    ).metrics["named_groups"]
    assert sorted(named) == ["both", "only_b"]  # a group with no query is left out
    b = evaluation.metrics["groups"]["b"]
    assert named["both"]["queries"] == 8
    assert [named["only_b"][key] for key in ("queries", "p_at_1", "map")] == [
        b[key] for key in ("queries", "p_at_1", "map")
    ]
    for groups, message in (
        ({"x": "a"}, "list of query set names"),
        ({"": ["a"]}, "non-empty str names"),
        (["a"], "expected a dict"),
    ):
        with pytest.raises((TypeError, ValueError), match=message):
            evaluate(pairs_index, labelled["manifest"], groups=groups)


@pytest.mark.parametrize("value", ["0", "x"])
def test_top_k_option_rejects_bad_values(value: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["evaluate", "ix", "--manifest", "m.csv", "--top-k", value])
    assert "expected an integer >= 1" in capsys.readouterr().err
