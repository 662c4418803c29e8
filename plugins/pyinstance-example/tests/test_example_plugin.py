"""The example plugin is discovered through its entry point and honours the contracts."""

import pytest
import torch

import pyinstance
from pyinstance.testing import check_backbone, check_classifier, check_miner, check_reranker


def test_components_are_discovered_with_their_distribution():
    found = {(c.kind, c.name): c for c in pyinstance.list_plugins()}
    assert found[("backbone", "example_tiny")].distribution == "pyinstance-example"
    assert found[("miner", "example_centroid")].plugin == "example"
    assert found[("classifier", "example_local_centroid")].plugin == "example"
    assert found[("reranker", "example_cosine")].plugin == "example"


def test_backbone_contract():
    check_backbone(pyinstance.get_backbone("example_tiny"))


def test_miner_contract():
    check_miner(pyinstance.get_miner("example_centroid"))


def test_classifier_contract():
    check_classifier(pyinstance.get_classifier("example_local_centroid"))
    check_classifier(pyinstance.get_classifier("example_local_centroid", k=1))


def test_classifier_rejects_a_bad_k():
    with pytest.raises(ValueError, match="k: expected an integer >= 1"):
        pyinstance.get_classifier("example_local_centroid", k=0)


def test_backbone_is_usable_with_a_builtin_loss():
    backbone = pyinstance.get_backbone("example_tiny", width=16)
    features = backbone(torch.rand(6, 3, 32, 32)).mean(dim=(2, 3))
    embeddings = torch.nn.functional.normalize(features, dim=1)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    triplets = pyinstance.get_miner("example_centroid")(embeddings.detach(), labels)
    loss = pyinstance.get_loss("triplet_margin", margin=0.2)(embeddings, labels, triplets)
    loss.backward()
    assert torch.isfinite(loss)


def test_reranker_contract():
    check_reranker(pyinstance.get_reranker("example_cosine"))
    check_reranker(pyinstance.get_reranker("example_cosine", k=1), dim=7)
    with pytest.raises(ValueError, match="k: expected an integer >= 1"):
        pyinstance.get_reranker("example_cosine", k=0)
