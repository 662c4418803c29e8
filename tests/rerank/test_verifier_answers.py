"""The verifier's answers on small fixed inputs: its network, its file, its scores, and
how a re-ranker spec resolves and is described (written for mutation testing)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from pyinstance.index import DEFAULT_RECIPE, Recipe
from pyinstance.plugins import UnknownComponentError
from pyinstance.rerank import (
    FILE_RERANKER,
    RecipeMismatchError,
    VerificationNet,
    VerificationReranker,
    VerifierFile,
    check_recipe,
    describe_reranker,
    read_verifier,
    resolve_reranker,
)
from pyinstance.rerank.model import SCALAR_FEATURES
from pyinstance.rerank.verifier import FORMAT, VERSION

RECIPE = DEFAULT_RECIPE.with_(dim=4, query_windows=None, query_max_side=None)


def _net(dim: int = 4, projection: int = 2, hidden: int = 3, seed: int = 0) -> VerificationNet:
    torch.manual_seed(seed)
    return VerificationNet(dim, projection=projection, hidden=hidden)


def _save(path: Path, net: VerificationNet | None = None, k: int = 3, info=None) -> Path:
    net = net or _net()
    return VerifierFile(net.options(), net.state_dict(), k, RECIPE.to_dict(), info or {}).save(path)


def test_the_smallest_network_and_its_layers():
    net = VerificationNet(1, projection=1, hidden=1)
    assert net.options() == {"dim": 1, "projection": 1, "hidden": 1}
    assert net.project.bias is None
    assert (net.project.in_features, net.project.out_features) == (1, 1)
    first, relu, last = net.mlp
    assert (first.in_features, first.out_features) == (SCALAR_FEATURES + 2, 1)
    assert isinstance(relu, torch.nn.ReLU)
    assert (last.in_features, last.out_features) == (1, 1)
    assert SCALAR_FEATURES == 4


def test_default_widths():
    net = VerificationNet(6)
    assert net.options() == {"dim": 6, "projection": 32, "hidden": 32}
    assert net.mlp[0].in_features == 4 + 64


@pytest.mark.parametrize(
    "options",
    [
        {"dim": 0},
        {"dim": 2.0},
        {"dim": True},
        {"dim": 4, "projection": -1},
        {"dim": 4, "hidden": 0},
    ],
)
def test_bad_options_name_the_argument(options):
    name, value = next((k, v) for k, v in reversed(options.items()))
    with pytest.raises(ValueError) as raised:
        VerificationNet(**options)
    assert str(raised.value) == f"{name}: expected an int >= 1, got {value!r}"


def test_features_of_a_hand_worked_pair():
    """Q=1, R=2 windows, k=3 candidates in 2-D, identity projection: every feature by hand."""
    net = VerificationNet(2, projection=2, hidden=1)
    with torch.no_grad():
        net.project.weight.copy_(torch.eye(2))
    queries = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    candidates = torch.tensor([[[0.6, 0.8], [1.0, 0.0], [0.0, -1.0]]])
    features = net.features(queries, candidates)[0]
    # similarities (candidate x window): [0.6, 0.8], [1, 0], [0, -1]
    best = [0.8, 1.0, 0.0]
    mean = [0.7, 0.5, -0.5]
    other = [1.0, 0.8, 1.0]  # the best of the other candidates
    centre = [0.5, 0.4, 0.9]  # the mean best of the other candidates
    expected_scalars = [
        [b, m, b - o, b - c] for b, m, o, c in zip(best, mean, other, centre, strict=True)
    ]
    torch.testing.assert_close(features[:, :4], torch.tensor(expected_scalars))
    # each pair's best window (0: [0, 1]; 1: [1, 0]; 2: [1, 0]) against the candidate
    windows = torch.tensor([[0.0, 1.0], [1.0, 0.0], [1.0, 0.0]])
    torch.testing.assert_close(features[:, 4:6], windows * candidates[0])
    torch.testing.assert_close(features[:, 6:8], (windows - candidates[0]).abs())


def test_two_tied_best_candidates_each_have_the_other_as_best_other():
    net = VerificationNet(2, projection=1, hidden=1)
    queries = torch.tensor([[[1.0, 0.0]]])
    candidates = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]])
    features = net.features(queries, candidates)[0]
    torch.testing.assert_close(features[:, 2], torch.tensor([0.0, 0.0, -1.0]))
    torch.testing.assert_close(features[:, 3], torch.tensor([0.5, 0.5, -1.0]))


def test_forward_is_the_perceptron_of_the_features():
    net = _net(seed=3)
    generator = torch.Generator().manual_seed(4)
    queries = torch.randn(2, 3, 4, generator=generator)
    candidates = torch.randn(2, 5, 4, generator=generator)
    logits = net(queries, candidates)
    assert logits.shape == (2, 5)
    torch.testing.assert_close(logits, net.mlp(net.features(queries, candidates)).squeeze(-1))


def test_a_file_round_trip_keeps_everything(tmp_path):
    net = _net(seed=5)
    path = _save(tmp_path / "sub" / "v.pt", net, k=6, info={"folder": Path("/data"), "n": 2})
    assert path == tmp_path / "sub" / "v.pt"
    saved = read_verifier(str(path))
    assert saved.options == net.options() and saved.k == 6
    assert Recipe.from_dict(saved.recipe) == RECIPE
    assert saved.info == {"folder": "/data", "n": 2}  # not JSON-able: written as text
    assert saved.state.keys() == net.state_dict().keys()
    for key, value in net.state_dict().items():
        assert torch.equal(saved.state[key], value)
    rebuilt = saved.network()
    assert rebuilt.training is False
    x, c = torch.randn(1, 2, 4), torch.randn(1, 3, 4)
    torch.testing.assert_close(rebuilt(x, c), net(x, c))
    payload = torch.load(path, weights_only=True)
    assert (
        (payload["format"], payload["version"])
        == (FORMAT, VERSION)
        == (
            "pyinstance-verifier",
            1,
        )
    )


def test_saved_weights_are_detached_cpu_tensors(tmp_path):
    net = _net()
    state = {key: value.clone().requires_grad_() for key, value in net.state_dict().items()}
    path = VerifierFile(net.options(), state, 2, RECIPE.to_dict()).save(tmp_path / "g.pt")
    payload = torch.load(path, weights_only=True)
    assert not any(value.requires_grad for value in payload["state"].values())


def test_weights_that_do_not_fit_are_refused(tmp_path):
    net = _net()
    state = net.state_dict()
    state.pop("mlp.2.bias")
    with pytest.raises(ValueError, match=r"^verifier: the weights do not fit the network: "):
        VerifierFile(net.options(), state, 2, RECIPE.to_dict()).network()
    extra = {**net.state_dict(), "project.bias": torch.zeros(2)}
    with pytest.raises(ValueError, match=r"^verifier: the weights do not fit the network: "):
        VerifierFile(net.options(), extra, 2, RECIPE.to_dict()).network()


@pytest.mark.parametrize(
    "change",
    [
        {"recipe": "{not json"},
        {"recipe": '{"backbone": 1}'},
        {"options": "[1"},
        {"k": "three"},
        {"info": "{"},
    ],
)
def test_damaged_entries_are_refused_naming_the_file(tmp_path, change):
    path = _save(tmp_path / "v.pt")
    payload = torch.load(path, weights_only=True) | change
    torch.save(payload, path)
    with pytest.raises(ValueError) as raised:
        read_verifier(path)
    assert str(raised.value).startswith(f"verifier: {str(path)!r} is incomplete or damaged: ")


def test_check_recipe_accepts_its_own_and_anything_without_a_recipe():
    check_recipe(object(), RECIPE)
    check_recipe(type("Scorer", (), {"recipe": None})(), RECIPE)
    # only the version differs: the same descriptors
    check_recipe(
        type("S", (), {"recipe": RECIPE.with_(pyinstance_version="0.0").to_dict()})(), RECIPE
    )
    scorer = type("S", (), {"recipe": RECIPE.to_dict()})()
    other = RECIPE.with_(dim=8)
    with pytest.raises(RecipeMismatchError) as raised:
        check_recipe(scorer, other, name="index.reranker")
    assert str(raised.value) == (
        f"index.reranker: trained on the descriptors of recipe [{RECIPE.describe()}], but "
        f"this index's recipe is [{other.describe()}]; train a verifier for this index "
        "(pyinstance train with objective = 'verification')"
    )
    with pytest.raises(RecipeMismatchError, match=r"^reranker: trained on"):
        check_recipe(scorer, other)


def test_the_reranker_takes_the_file_s_k_unless_given(tmp_path):
    path = _save(tmp_path / "v.pt", k=3)
    reranker = VerificationReranker(model=path)
    assert reranker.k == 3 and reranker.threads is None
    assert reranker.path == path.resolve() and Recipe.from_dict(reranker.recipe) == RECIPE
    assert reranker.info == {}
    assert repr(reranker) == f"VerificationReranker(model={str(path.resolve())!r}, k=3)"
    assert VerificationReranker(model=path, k=1).k == 1
    assert VerificationReranker(model=path, threads=1).threads == 1
    with pytest.raises(ValueError, match=r"^threads: expected an integer >= 1, got 0$"):
        VerificationReranker(model=path, threads=0)


def test_scores_are_the_sigmoid_of_the_network(tmp_path):
    net = _net(seed=7)
    reranker = VerificationReranker(model=_save(tmp_path / "v.pt", net))
    generator = torch.Generator().manual_seed(8)
    queries = torch.randn(2, 3, 4, generator=generator)
    candidates = torch.randn(2, 5, 4, generator=generator)
    scores = reranker.score(queries.double().numpy(), candidates.numpy())
    assert scores.shape == (2, 5) and scores.dtype == np.float32
    with torch.no_grad():
        expected = torch.sigmoid(net(queries, candidates)).numpy()
    np.testing.assert_allclose(scores, expected, atol=1e-6)
    # (Q, D) queries are one window each
    one = reranker.score(queries[:, 0].numpy(), candidates.numpy())
    np.testing.assert_allclose(one, reranker.score(queries[:, :1].numpy(), candidates.numpy()))


def test_no_windows_or_no_candidates_score_zeros(tmp_path):
    reranker = VerificationReranker(model=_save(tmp_path / "v.pt"))
    none = reranker.score(np.zeros((2, 0, 4), np.float32), np.ones((2, 3, 4), np.float32))
    assert none.shape == (2, 3) and none.dtype == np.float32 and not none.any()
    empty = reranker.score(np.ones((2, 1, 4), np.float32), np.ones((2, 0, 4), np.float32))
    assert empty.shape == (2, 0) and empty.dtype == np.float32


def test_scoring_with_threads_restores_torch_s_setting(tmp_path, monkeypatch):
    calls: list[int] = []
    real = torch.set_num_threads
    monkeypatch.setattr(torch, "set_num_threads", lambda n: (calls.append(n), real(n)))
    before = torch.get_num_threads()
    path = _save(tmp_path / "v.pt")
    VerificationReranker(model=path, threads=1).score(np.ones((1, 4)), np.ones((1, 2, 4)))
    assert calls == [1, before]
    calls.clear()
    VerificationReranker(model=path).score(np.ones((1, 4)), np.ones((1, 2, 4)))
    assert calls == [before]
    assert torch.get_num_threads() == before


def test_queries_and_candidates_of_different_counts_are_refused(tmp_path):
    reranker = VerificationReranker(model=_save(tmp_path / "v.pt"))
    with pytest.raises(ValueError) as raised:
        reranker.score(np.ones((3, 4)), np.ones((2, 5, 4)))
    assert str(raised.value) == (
        "queries, candidates: expected (Q, R, 4) and (Q, k, 4) arrays, got (3, 1, 4) and (2, 5, 4)"
    )
    with pytest.raises(ValueError, match=r"^candidates: expected a \(Q, k, D\) array with D=4"):
        reranker.score(np.ones((2, 4)), np.ones((2, 4)))


def test_resolve_a_file_by_path_or_existing_name(tmp_path, monkeypatch):
    path = _save(tmp_path / "v.pt", k=3)
    by_path = resolve_reranker(path, RECIPE, k=2)
    assert isinstance(by_path, VerificationReranker) and by_path.k == 2
    monkeypatch.chdir(tmp_path)
    by_name = resolve_reranker("v.pt", RECIPE)  # a bare file name of an existing file
    assert by_name.path == path.resolve() and by_name.k == 3
    assert FILE_RERANKER == "verification"


@pytest.mark.parametrize("spec", ["model.pt", "model.pth", "sub/verifier", f"a{os.sep}b"])
def test_a_missing_file_is_not_taken_for_a_name(tmp_path, monkeypatch, spec):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as raised:
        resolve_reranker(spec, RECIPE)
    assert str(raised.value) == f"reranker: no such file {spec!r}"


@pytest.mark.parametrize("spec", ["cosine", "model.onnx", "v2.1"])
def test_other_words_are_reranker_names(tmp_path, monkeypatch, spec):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UnknownComponentError, match=rf"^unknown reranker {spec!r}"):
        resolve_reranker(spec, RECIPE)


def test_a_registered_name_is_built_with_the_options(tmp_path):
    path = _save(tmp_path / "v.pt", k=3)
    scorer = resolve_reranker("verification", RECIPE, model=path, k=1)
    assert isinstance(scorer, VerificationReranker) and scorer.k == 1


def test_an_empty_name_and_options_for_an_object_are_refused(tmp_path):
    with pytest.raises(ValueError) as raised:
        resolve_reranker("", RECIPE)
    assert str(raised.value) == "reranker: expected a verifier file or a re-ranker name, got ''"
    scorer = type("Scorer", (), {"recipe": RECIPE.to_dict()})()
    assert resolve_reranker(scorer, RECIPE) is scorer
    with pytest.raises(ValueError) as raised:
        resolve_reranker(scorer, RECIPE, k=1)
    assert str(raised.value) == "reranker_options: only for a re-ranker given by name or file"
    with pytest.raises(RecipeMismatchError):
        resolve_reranker(scorer, RECIPE.with_(dim=8))


def test_describe_reranker(tmp_path, monkeypatch):
    path = _save(tmp_path / "v.pt")
    monkeypatch.chdir(tmp_path)
    assert describe_reranker(None) is None
    assert describe_reranker("v.pt") == str(path.resolve())
    assert describe_reranker(Path("v.pt")) == str(path.resolve())
    assert describe_reranker("verification") == "verification"
    assert describe_reranker("missing.pt") == "missing.pt"
    assert describe_reranker(VerificationReranker(model=path)) == str(path.resolve())
    assert describe_reranker(type("Scorer", (), {})()) == "Scorer"
    assert describe_reranker(type("Pathless", (), {"path": None})()) == "Pathless"


def test_a_single_candidate_is_scored(tmp_path):
    net = _net(seed=9)
    reranker = VerificationReranker(model=_save(tmp_path / "v.pt", net))
    queries, candidates = torch.randn(3, 2, 4), torch.randn(3, 1, 4)
    with torch.no_grad():
        expected = torch.sigmoid(net(queries, candidates)).numpy()
    scores = reranker.score(queries.numpy(), candidates.numpy())
    assert scores.shape == (3, 1)
    np.testing.assert_allclose(scores, expected, atol=1e-6)
    assert (scores > 0).all()


def test_a_foreign_file_names_what_makes_verifiers(tmp_path):
    path = tmp_path / "model.pt"
    torch.save({"format": "pyinstance-model", "version": 1}, path)
    with pytest.raises(ValueError) as raised:
        read_verifier(path)
    assert str(raised.value) == (
        f"verifier: {str(path)!r} is not a pyinstance verifier file (made by `pyinstance "
        "train` with objective = 'verification')"
    )


def test_the_same_contents_give_the_same_file_entries(tmp_path):
    net = _net()
    recipe = RECIPE.to_dict()
    shuffled_recipe = dict(reversed(list(recipe.items())))
    options = net.options()
    shuffled_options = dict(reversed(list(options.items())))
    first = VerifierFile(options, net.state_dict(), 2, recipe, {"a": 1, "b": 2})
    second = VerifierFile(shuffled_options, net.state_dict(), 2, shuffled_recipe, {"b": 2, "a": 1})
    one = torch.load(first.save(tmp_path / "1.pt"), weights_only=True)
    two = torch.load(second.save(tmp_path / "2.pt"), weights_only=True)
    for key in ("options", "recipe", "info"):
        assert one[key] == two[key], key
    assert one["options"] == '{"dim": 4, "hidden": 3, "projection": 2}'


def test_two_candidates_each_see_the_other_as_context():
    net = VerificationNet(2, projection=1, hidden=1)
    queries = torch.tensor([[[1.0, 0.0]]])
    candidates = torch.tensor([[[0.6, 0.8], [0.0, 1.0]]])
    features = net.features(queries, candidates)[0]
    # best similarities 0.6 and 0.0: each minus the other's, and minus the others' mean
    torch.testing.assert_close(features[:, 2], torch.tensor([0.6, -0.6]))
    torch.testing.assert_close(features[:, 3], torch.tensor([0.6, -0.6]))
