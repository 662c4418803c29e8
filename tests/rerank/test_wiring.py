"""The re-ranker everywhere the answer goes: Identifier, threshold fitting, calibrate,
evaluate, the command line and the service."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from pyinstance.calibration import calibrate
from pyinstance.classify import NearestNeighbour, fit_threshold, threshold_for_far
from pyinstance.cli import main
from pyinstance.eval.evaluate import evaluate
from pyinstance.identification import Identifier, ThresholdMismatchError
from pyinstance.index import InstanceIndex
from pyinstance.plugins import get_reranker
from pyinstance.rerank import RecipeMismatchError
from pyinstance.serve import create_app

from .conftest import RECIPE, write_verifier


class Constant:
    """Every pair gets the same probability."""

    recipe = None

    def __init__(self, value: float, k: int = 3):
        self.value, self.k = value, k

    def score(self, queries, candidates):
        return np.full(np.shape(candidates)[:2], self.value, np.float32)


def test_identifier_answers_with_the_verifier_s_probability(built_index, verifier, query_photos):
    photos = sorted(query_photos)
    reranker = get_reranker("verification", model=verifier)
    with InstanceIndex.open(built_index) as index:
        identifier = Identifier(index, reranker=str(verifier), threshold=0, top_k=3)
        assert identifier.reranker_name == str(verifier.resolve())
        answers = identifier.identify_described(photos)
        references, rows, codes = index.descriptors(), index.rows(), index.labels()
        for answer, described in answers:
            queries = described[None]
            neighbours = index.search(queries, identifier._k)
            picked = neighbours.rows[0, : reranker.k]
            positions = [int(np.flatnonzero(rows == row)[0]) for row in picked]
            p = reranker.score(queries, references[positions][None])[0]
            best = int(np.argmax(p))
            assert answer.confidence == pytest.approx(float(p[best]), abs=1e-6)
            assert answer.instance == index.instances[codes[positions[best]]]
            assert answer.top_k[0].instance == answer.instance


def test_a_verifier_of_another_recipe_is_refused_by_the_identifier(built_index, tmp_path):
    foreign = write_verifier(tmp_path / "foreign.pt", RECIPE.with_(max_side=224))
    with InstanceIndex.open(built_index) as index:
        with pytest.raises(RecipeMismatchError, match="trained on the descriptors of recipe"):
            Identifier(index, reranker=foreign, threshold=0)
        with pytest.raises(ValueError, match="reranker_options: given without a reranker"):
            Identifier(index, reranker_options={"k": 3}, threshold=0)


def test_threshold_fitting_uses_the_reranked_confidence(built_index):
    with InstanceIndex.open(built_index) as index:
        descriptors, labels = index.descriptors(), index.labels()
    plain = fit_threshold(NearestNeighbour(), descriptors, labels, target_far=0.0)
    reranked = fit_threshold(
        NearestNeighbour(), descriptors, labels, target_far=0.0, reranker=Constant(0.3)
    )
    # every unknown query's confidence is the constant: the threshold lies just above it
    assert reranked.threshold == threshold_for_far(np.array([0.3], np.float32), 0.0)
    assert reranked.threshold != plain.threshold


def test_calibrate_stores_the_reranker_with_its_threshold(index_copy, verifier, query_photos):
    with InstanceIndex.open(index_copy) as index:
        fit = calibrate(index, reranker=str(verifier), views=1, target_far=0.1)
        assert index.get_setting("reranker") == str(verifier.resolve())
        assert index.get_setting("threshold") == fit.threshold
        default = Identifier(index)
        assert default.reranker_name == str(verifier.resolve())
        assert default.threshold == fit.threshold
        with pytest.raises(ThresholdMismatchError, match="fitted with re-ranker"):
            Identifier(index, reranker=False)
        assert Identifier(index, reranker=False, threshold=0).reranking is None
        calibrate(index, views=0)  # without: the setting goes
        assert index.get_setting("reranker") is None
        with pytest.raises(ThresholdMismatchError, match="fitted without a re-ranker"):
            Identifier(index, reranker=verifier)


def test_evaluate_ranks_with_the_reranker(built_index, verifier, pairs):
    with InstanceIndex.open(built_index) as index:
        plain = evaluate(index, pairs / "manifest.csv", threshold=0)
        reranked = evaluate(index, pairs / "manifest.csv", threshold=0, reranker=verifier)
    assert plain.reranker is None and reranked.reranker == str(verifier.resolve())
    assert reranked.to_dict()["reranker"] == str(verifier.resolve())
    for outcome in reranked.outcomes:
        assert 0.0 <= outcome.confidence <= 1.0
    # P@1 is the re-ranked first reference: it agrees with the answers' first match
    agree = np.mean([o.top_k[0].instance in o.truth for o in reranked.outcomes])
    assert reranked.metrics["p_at_1"] == pytest.approx(agree)


def test_command_line_identify_and_evaluate(
    built_index, verifier, query_photos, pairs, tmp_path, capsys
):
    photo = sorted(query_photos)[0]
    code = main(["identify", str(built_index), str(photo), "--rerank", str(verifier),
                 "--threshold", "0", "--json", "--engine", "torch"])  # fmt: skip
    assert code == 0
    answer = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    with InstanceIndex.open(built_index) as index:
        (expected,) = Identifier(index, reranker=verifier, threshold=0).identify([photo])
    assert answer["confidence"] == pytest.approx(expected.confidence, abs=1e-6)
    assert answer["instance"] == expected.instance

    out = tmp_path / "metrics.json"
    code = main(["evaluate", str(built_index), "--manifest", str(pairs / "manifest.csv"),
                 "--rerank", str(verifier), "--threshold", "0", "--json", str(out),
                 "--engine", "torch"])  # fmt: skip
    assert code == 0
    assert "re-ranker" in capsys.readouterr().out
    assert json.loads(out.read_text())["reranker"] == str(verifier.resolve())


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("missing/verifier.pt", "reranker: no such file 'missing/verifier.pt'"),
        ("cosine", "unknown reranker 'cosine'"),
    ],
)
def test_command_line_refuses_bad_rerankers(built_index, query_photos, value, message, capsys):
    photo = sorted(query_photos)[0]
    code = main(["identify", str(built_index), str(photo), "--rerank", value, "--threshold", "0"])
    assert code == 2  # bad input: EXIT_ERROR
    assert message in capsys.readouterr().err


def test_command_line_rerank_none_disables_the_stored_one(
    index_copy, verifier, query_photos, capsys
):
    main(["calibrate", str(index_copy), "--rerank", str(verifier), "--views", "0", "--json"])
    assert json.loads(capsys.readouterr().out)["threshold"] > 0
    photo = str(sorted(query_photos)[0])
    assert main(["identify", str(index_copy), photo, "--json", "--rerank", "none"]) == 2
    assert "fitted with re-ranker" in capsys.readouterr().err
    assert main(["identify", str(index_copy), photo, "--json"]) == 0
    capsys.readouterr()
    assert main(["identify", str(index_copy), photo]) == 0
    assert f"re-ranker {verifier.resolve()}" in capsys.readouterr().out.replace("\n", "")


def _identify(client: TestClient, photo: Path, **params: object):
    return client.post(
        "/v1/identify", params=params, files={"file": (photo.name, photo.read_bytes(), "image/png")}
    )


def test_the_service_reranks_and_refuses_bad_values(built_index, verifier, query_photos, tmp_path):
    photo = sorted(query_photos)[0]
    with TestClient(create_app(built_index, reranker=verifier)) as client:
        answer = _identify(client, photo, threshold=0).json()
        assert answer["reranker"] == str(verifier.resolve())
        assert _identify(client, photo, threshold=0, rerank="false").json()["reranker"] is None
        assert _identify(client, photo, threshold=0, rerank="maybe").status_code == 422
    for default in (None, False):
        with TestClient(create_app(built_index, reranker=default)) as client:
            refused = _identify(client, photo, threshold=0, rerank="true")
            assert refused.status_code == 409
            assert refused.json()["error"]["code"] == "no_reranker"
            assert _identify(client, photo, threshold=0).json()["reranker"] is None
    foreign = write_verifier(tmp_path / "foreign.pt", RECIPE.with_(max_side=224))
    with pytest.raises(RecipeMismatchError, match="this index's recipe is"):
        create_app(built_index, reranker=foreign)
