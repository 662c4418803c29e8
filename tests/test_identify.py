"""The main job: identify photos against an index, from Python and from the command line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pyinstance.cli import main
from pyinstance.data import Manifest
from pyinstance.data.images import ImageDecodeError
from pyinstance.identification import Identification, Identifier, identify
from pyinstance.index import InstanceIndex


@pytest.fixture(scope="module")
def pairs(shared_data: Path) -> Manifest:
    return Manifest.read(shared_data / "opencv-pairs" / "manifest.csv")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, pairs: Manifest) -> Path:
    """An index of the opencv-pairs references (built once; tests copy it to change it)."""
    path = tmp_path_factory.mktemp("identify") / "index"
    index, report = InstanceIndex.build(path, pairs.root / "manifest.csv", progress=False)
    index.close()
    assert report.added == sum(entry.split == "reference" for entry in pairs)
    return path


@pytest.fixture
def index_copy(built: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "index"
    shutil.copytree(built, copy)
    return copy


def queries(pairs: Manifest) -> list:
    return [entry for entry in pairs if entry.split == "query"]


def test_every_query_photo_is_identified_as_its_instance(built: Path, pairs: Manifest) -> None:
    entries = queries(pairs)
    with InstanceIndex.open(built) as index:
        results = Identifier(index, top_k=3, threshold=0).identify([e.path for e in entries])
    assert [r.instance for r in results] == [e.instance_id for e in entries]
    for entry, result in zip(entries, results, strict=True):
        assert result.image == str(entry.path)
        assert 0.0 <= result.confidence <= 1.0
        best = result.top_k[0]
        assert best.instance == entry.instance_id
        assert Path(best.image_path).parent.name == "reference"
        assert best.image_path.endswith(tuple(p.path.name for p in pairs if p.split == "reference"))
        scores = [match.score for match in result.top_k]
        assert scores == sorted(scores, reverse=True) and len(scores) == 3
        assert len({match.instance for match in result.top_k}) == 3
        assert set(result.ms) == {"decode", "extract", "search", "classify", "total"}
        assert result.ms["total"] >= result.ms["extract"] > 0


def test_the_answer_matches_a_plain_search_over_the_references(
    built: Path, pairs: Manifest
) -> None:
    entry = queries(pairs)[0]
    with InstanceIndex.open(built) as index:
        (result,) = identify(index, [entry.path], threshold=0)
        query = index.describer.queries([Image.open(entry.path).convert("RGB")])[0, 0]
        scores = index.descriptors() @ query
        best = int(np.argmax(scores))
        assert result.instance == index.instances[index.labels()[best]]
        assert result.confidence == pytest.approx(float(scores[best]), abs=5e-3)


def test_a_threshold_above_every_confidence_answers_unknown_but_keeps_the_ranking(
    built: Path, pairs: Manifest
) -> None:
    entry = queries(pairs)[1]
    (result,) = identify(built, [entry.path], threshold=1.0)
    assert result.instance is None
    assert result.top_k[0].instance == entry.instance_id
    record = result.to_dict()
    assert record["instance"] is None
    assert json.loads(json.dumps(record))["top_k"][0]["instance"] == entry.instance_id


def test_a_stored_threshold_and_classifier_become_the_defaults(index_copy: Path) -> None:
    with InstanceIndex.open(index_copy) as index:
        index.set_setting("threshold", 0.99)
        index.set_setting("classifier", "knn_vote")
        identifier = Identifier(index)
        assert identifier.threshold == 0.99
        assert type(identifier.classifier).__name__ == "KnnVote"
        assert Identifier(index, threshold=0.2, classifier="nn").threshold == 0.2


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"threshold": 1.5}, "threshold"),
        ({"threshold": -0.1}, "threshold"),
        ({"top_k": 0}, "top_k"),
        ({"top_k": True}, "top_k"),
        ({"classifier": "no_such_classifier"}, "no_such_classifier"),
    ],
)
def test_bad_options_are_refused_naming_them(built: Path, options: dict, message: str) -> None:
    with (
        InstanceIndex.open(built) as index,
        pytest.raises((ValueError, LookupError), match=message),
    ):
        Identifier(index, **options)


def test_bad_images_are_refused_naming_them(built: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with InstanceIndex.open(built) as index:
        identifier = Identifier(index)
        with pytest.raises(ImageDecodeError, match="broken.jpg"):
            identifier.identify([broken])
        with pytest.raises(FileNotFoundError, match="missing.jpg"):
            identifier.identify([tmp_path / "missing.jpg"])
        with pytest.raises(TypeError, match="images"):
            identifier.identify(str(broken))
        with pytest.raises(ValueError, match="images"):
            identifier.identify([])


def test_an_in_memory_photo_is_identified(built: Path, pairs: Manifest) -> None:
    entry = queries(pairs)[2]
    photo = np.asarray(Image.open(entry.path).convert("RGB"))
    (result,) = identify(built, [photo], threshold=0)
    assert result.instance == entry.instance_id
    assert result.image == "images[0]"


def test_calibration_stores_a_threshold_that_identify_then_uses(
    index_copy: Path, pairs: Manifest, shared_data: Path
) -> None:
    from pyinstance.calibration import calibrate

    with InstanceIndex.open(index_copy) as index:
        fit = calibrate(index, target_far=0.2, views=2)
        assert 0.0 < fit.threshold < 1.0
        assert fit.far <= 0.2
        assert fit.known.get("views", 0) == 2 * len(index)
        assert index.get_setting("threshold") == fit.threshold
        assert index.get_setting("classifier") == "nn"
        assert Identifier(index).threshold == fit.threshold
        with pytest.raises(ValueError, match="views"):
            calibrate(index, views=-1)


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_identify_command_prints_one_json_object_per_photo(
    built: Path, pairs: Manifest, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    entries = queries(pairs)[:2]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"")
    code, out, _ = run_cli(
        capsys, "identify", built, *(e.path for e in entries), broken, "--json", "--top-k", 2,
        "--threshold", 0,
    )  # fmt: skip
    lines = [json.loads(line) for line in out.splitlines()]
    assert code == 1  # one photo could not be read
    assert [line.get("instance") for line in lines[:2]] == [e.instance_id for e in entries]
    for line in lines[:2]:
        assert {"image", "instance", "confidence", "top_k", "ms"} <= set(line)
        assert len(line["top_k"]) == 2
    assert lines[2]["image"] == str(broken) and "broken.png" in lines[2]["error"]


def test_identify_command_table_and_clear_errors(
    built: Path, pairs: Manifest, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    entry = queries(pairs)[0]
    code, out, _ = run_cli(capsys, "identify", built, entry.path)
    assert code == 0 and entry.instance_id in out and "confidence" in out
    code, _, err = run_cli(capsys, "identify", tmp_path / "nowhere", entry.path)
    assert code == 2 and "nowhere" in err and "Traceback" not in err
    code, _, err = run_cli(capsys, "identify", built, entry.path, "--threshold", 3)
    assert code == 2 and "threshold" in err


def test_calibrate_command_stores_the_threshold(
    index_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(capsys, "calibrate", index_copy, "--far", 0.1, "--views", 1, "--json")
    assert code == 0
    fit = json.loads(out)
    with InstanceIndex.open(index_copy) as index:
        assert index.get_setting("threshold") == fit["threshold"]


def test_identification_is_a_plain_record() -> None:
    result = Identification("a.jpg", None, 0.25, (), {"total": 1.0})
    assert result.to_dict() == {
        "image": "a.jpg",
        "instance": None,
        "confidence": 0.25,
        "top_k": [],
        "ms": {"total": 1.0},
    }


def test_the_onnxruntime_engine_gives_the_answers_of_torch(built: Path, pairs: Manifest) -> None:
    pytest.importorskip("onnxruntime")
    paths = [entry.path for entry in queries(pairs)[:3]]
    expected = identify(built, paths, threshold=0)
    with InstanceIndex.open(built, engine="onnxruntime") as index:
        assert index.describer.engine == "onnxruntime"
        answers = Identifier(index, threshold=0).identify(paths)
    assert [a.instance for a in answers] == [e.instance for e in expected]
    for answer, reference in zip(answers, expected, strict=True):
        assert answer.confidence == pytest.approx(reference.confidence, abs=1e-4)
    with InstanceIndex.open(built, engine="torch") as index:
        assert index.describer.engine == "torch"
