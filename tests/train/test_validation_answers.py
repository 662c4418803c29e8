"""ValidationSet from a manifest, and precision_at_1 over a fake extractor whose descriptor of
each file is set here: the nearest reference and the per-query-set shares by hand."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pyinstance.train import validation
from pyinstance.train.validation import ValidationSet, precision_at_1


def manifest(tmp_path: Path, rows: list[str]) -> Path:
    for row in rows:
        (tmp_path / row.split(",")[0]).touch()
    path = tmp_path / "m.csv"
    path.write_text("path,instance_id,split,query_set\n" + "\n".join(rows) + "\n")
    return path


def test_the_query_rows_of_a_manifest_in_order(tmp_path: Path):
    path = manifest(
        tmp_path,
        ["r.png,a,reference,", "q1.png,b,query,night", "q2.png,a,query,", "q3.png,c,query,-"],
    )
    queries = ValidationSet.from_manifest(path)
    assert queries.paths == (tmp_path / "q1.png", tmp_path / "q2.png", tmp_path / "q3.png")
    assert queries.instances == ("b", "a", "c")
    assert queries.query_sets == ("night", "-", "-")
    assert isinstance(queries.paths, tuple) and isinstance(queries.query_sets, tuple)


def test_a_manifest_without_queries_is_refused(tmp_path: Path):
    path = manifest(tmp_path, ["r.png,a,reference,"])
    with pytest.raises(ValueError, match=r"^data.validation: '.*m.csv' has no split=query rows"):
        ValidationSet.from_manifest(path)


DESCRIPTORS = {
    "ra": [1.0, 0.0],
    "rb": [0.0, 1.0],
    "rc": [-1.0, 0.0],
    "q_a": [0.9, 0.1],  # nearest ra: right
    "q_b": [0.6, 0.4],  # nearest ra, is b: wrong
    "q_c": [-0.8, 0.3],  # nearest rc: right
    "q_x": [0.1, 0.9],  # nearest rb, is c: wrong
    "q_b2": [0.1, 0.8],  # nearest rb: right
}


def fake_extract(calls):
    def extract(paths, backbone, head, *, max_side, progress):
        calls.append(([Path(p).name for p in paths], backbone, head, max_side, progress))
        rows = [DESCRIPTORS[Path(p).name] for p in paths]
        return torch.tensor(rows)[:, None, :]  # (N, 1 scale, D)

    return extract


def test_precision_at_1_overall_and_per_query_set(monkeypatch):
    calls = []
    monkeypatch.setattr(validation, "extract", fake_extract(calls))
    queries = ValidationSet(
        paths=tuple(Path(n) for n in ("q_a", "q_b", "q_c", "q_x", "q_b2")),
        instances=("a", "b", "c", "c", "b"),
        query_sets=("day", "night", "day", "-", "night"),
    )
    backbone, head = torch.nn.Identity(), torch.nn.Identity()
    result = precision_at_1(
        backbone, head, [Path("ra"), Path("rb"), Path("rc")], ("a", "b", "c"), queries, max_side=77
    )
    assert result.pop("p_at_1") == pytest.approx(3 / 5, abs=1e-6)  # a float32 mean
    assert result == {
        "p_at_1/-": 0.0,
        "p_at_1/day": 1.0,
        "p_at_1/night": 0.5,
    }
    assert list(result) == ["p_at_1/-", "p_at_1/day", "p_at_1/night"]  # sorted after p_at_1
    assert calls == [
        (["ra", "rb", "rc"], backbone, head, 77, False),
        (["q_a", "q_b", "q_c", "q_x", "q_b2"], backbone, head, 77, False),
    ]


def test_only_the_first_scale_is_compared(monkeypatch):
    def extract(paths, backbone, head, *, max_side, progress):
        first = torch.tensor([DESCRIPTORS[Path(p).name] for p in paths])
        return torch.stack([first, -first], dim=1)  # a second scale pointing the other way

    monkeypatch.setattr(validation, "extract", extract)
    queries = ValidationSet((Path("q_a"), Path("q_c")), ("a", "c"), ("-", "-"))
    refs = [Path("ra"), Path("rc")]
    assert precision_at_1(None, None, refs, ("a", "c"), queries, max_side=1)["p_at_1"] == 1.0


@pytest.mark.parametrize(
    "fields",
    [
        ((Path("a"), Path("b")), ("x",), ("-", "-")),
        ((Path("a"),), ("x", "y"), ("-",)),
        ((Path("a"),), ("x",), ("-", "-")),
    ],
)
def test_a_validation_set_of_unequal_fields_is_refused(fields) -> None:  # noqa: ANN001
    with pytest.raises(
        ValueError,
        match=r"^ValidationSet: expected one instance and one query set per path, got \d paths, \d instances, \d query sets$",
    ):
        ValidationSet(*fields)


def test_reference_instances_must_match_the_references() -> None:
    queries = ValidationSet((Path("q"),), ("x",), ("-",))
    with pytest.raises(
        ValueError, match=r"^reference_instances: expected one per reference \(2\), got 1$"
    ):
        precision_at_1(None, None, [Path("r1"), Path("r2")], ("x",), queries, max_side=64)
