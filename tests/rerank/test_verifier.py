"""The verification network, its file and the ``verification`` re-ranker."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pyinstance import testing
from pyinstance.index import DEFAULT_RECIPE, Recipe
from pyinstance.plugins import get_reranker
from pyinstance.rerank import (
    RecipeMismatchError,
    VerificationNet,
    VerificationReranker,
    VerifierFile,
    check_recipe,
    read_verifier,
    resolve_reranker,
)

RECIPE = DEFAULT_RECIPE.with_(dim=16, query_windows=None, query_max_side=None)


def unit(generator: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.randn(*shape, generator=generator), dim=-1)


def save_verifier(path, recipe=RECIPE, k=4, seed=0):
    torch.manual_seed(seed)
    net = VerificationNet(recipe.dim, projection=6, hidden=5)
    return VerifierFile(
        net.options(), net.state_dict(), k, recipe.to_dict(), {"note": "test"}
    ).save(path)


def test_features_match_a_pair_by_pair_computation():
    generator = torch.Generator().manual_seed(1)
    net = VerificationNet(16, projection=6, hidden=5)
    queries, candidates = unit(generator, 3, 4, 16), unit(generator, 3, 5, 16)
    features = net.features(queries, candidates)
    assert features.shape == (3, 5, 4 + 2 * 6)
    weight = net.project.weight.detach().numpy()
    q_np, c_np = queries.numpy().astype(np.float64), candidates.numpy().astype(np.float64)
    for q in range(3):
        best = [max(float(w @ c) for w in q_np[q]) for c in c_np[q]]
        for i, c in enumerate(c_np[q]):
            sims = [float(w @ c) for w in q_np[q]]
            others = [b for j, b in enumerate(best) if j != i]
            window = q_np[q][int(np.argmax(sims))]
            zq = weight @ window
            zc = weight @ c
            zq, zc = zq / np.linalg.norm(zq), zc / np.linalg.norm(zc)
            expected = [max(sims), np.mean(sims), best[i] - max(others), best[i] - np.mean(others)]
            expected += list(zq * zc) + list(np.abs(zq - zc))
            assert features[q, i].tolist() == pytest.approx(expected, abs=1e-5)


def test_a_single_candidate_has_no_context():
    generator = torch.Generator().manual_seed(2)
    net = VerificationNet(16)
    features = net.features(unit(generator, 2, 3, 16), unit(generator, 2, 1, 16))
    assert features[..., 2:4].abs().max() == 0


def test_bad_network_options_are_refused():
    for options in ({"dim": 0}, {"dim": 8, "projection": 0}, {"dim": 8, "hidden": True}):
        with pytest.raises(ValueError, match="expected an int >= 1"):
            VerificationNet(**options)


def test_file_round_trip_and_the_plugin(tmp_path):
    path = save_verifier(tmp_path / "v.pt")
    saved = read_verifier(path)
    assert saved.k == 4 and saved.info == {"note": "test"}
    assert Recipe.from_dict(saved.recipe) == RECIPE
    reranker = get_reranker("verification", model=path)
    assert isinstance(reranker, VerificationReranker) and reranker.k == 4
    assert get_reranker("verification", model=path, k=7).k == 7
    testing.check_reranker(reranker)
    generator = torch.Generator().manual_seed(3)
    queries, candidates = unit(generator, 2, 3, 16), unit(generator, 2, 4, 16)
    expected = torch.sigmoid(saved.network()(queries, candidates)).detach().numpy()
    assert reranker.score(queries.numpy(), candidates.numpy()) == pytest.approx(expected, abs=1e-6)


def test_foreign_or_damaged_files_are_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="verifier: no such file"):
        read_verifier(tmp_path / "absent.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="verifier: cannot read"):
        read_verifier(tmp_path / "junk.pt")
    torch.save({"format": "pyinstance-model"}, tmp_path / "model.pt")
    with pytest.raises(ValueError, match="is not a pyinstance verifier file"):
        read_verifier(tmp_path / "model.pt")
    torch.save({"format": "pyinstance-verifier", "version": 99}, tmp_path / "future.pt")
    with pytest.raises(ValueError, match="layout version 99"):
        read_verifier(tmp_path / "future.pt")
    torch.save({"format": "pyinstance-verifier", "version": 1}, tmp_path / "cut.pt")
    with pytest.raises(ValueError, match="incomplete or damaged"):
        read_verifier(tmp_path / "cut.pt")
    with pytest.raises(ValueError, match="k: expected an integer >= 1"):
        VerificationReranker(model=save_verifier(tmp_path / "v.pt"), k=0)


def test_a_verifier_of_another_recipe_is_refused_naming_both(tmp_path):
    path = save_verifier(tmp_path / "v.pt")
    other = RECIPE.with_(max_side=512)
    with pytest.raises(RecipeMismatchError) as error:
        resolve_reranker(str(path), other)
    message = str(error.value)
    assert RECIPE.describe() in message and other.describe() in message
    check_recipe(get_reranker("verification", model=path), RECIPE)  # its own: accepted
    assert resolve_reranker(path, RECIPE).k == 4


def test_resolution_of_names_files_and_objects(tmp_path):
    with pytest.raises(ValueError, match="unknown reranker 'cosine'"):
        resolve_reranker("cosine", RECIPE)
    with pytest.raises(FileNotFoundError, match="reranker: no such file"):
        resolve_reranker(str(tmp_path / "missing.pt"), RECIPE)
    with pytest.raises(ValueError, match="got ''"):
        resolve_reranker("", RECIPE)
    scorer = get_reranker("verification", model=save_verifier(tmp_path / "v.pt"))
    assert resolve_reranker(scorer, RECIPE) is scorer
    with pytest.raises(ValueError, match="reranker_options: only for"):
        resolve_reranker(scorer, RECIPE, k=3)


def test_scoring_refuses_bad_input(tmp_path):
    reranker = get_reranker("verification", model=save_verifier(tmp_path / "v.pt"))
    good = np.ones((2, 3, 16), np.float32) / 4
    bad = good.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="queries: NaN"):
        reranker.score(bad, good)
    with pytest.raises(ValueError, match="candidates: NaN"):
        reranker.score(good, bad)
    with pytest.raises(
        ValueError, match=r"queries: expected a \(Q, D\) or \(Q, R, D\) array with D=16"
    ):
        reranker.score(good[..., :8], good[..., :8])
    with pytest.raises(ValueError, match="floating-point"):
        reranker.score(good.astype(np.int64), good)
    with pytest.raises(ValueError, match="expected \\(Q, R, 16\\) and \\(Q, k, 16\\)"):
        reranker.score(good, good[:1])
    assert reranker.score(good, good[:, :0]).shape == (2, 0)
