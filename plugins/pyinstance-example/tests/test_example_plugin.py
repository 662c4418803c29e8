"""The example plugin is discovered through its entry point and honours the contracts."""

import torch

import pyinstance
from pyinstance.testing import check_backbone, check_miner


def test_components_are_discovered_with_their_distribution():
    found = {(c.kind, c.name): c for c in pyinstance.list_plugins()}
    assert found[("backbone", "example_tiny")].distribution == "pyinstance-example"
    assert found[("miner", "example_centroid")].plugin == "example"


def test_backbone_contract():
    check_backbone(pyinstance.get_backbone("example_tiny"))


def test_miner_contract():
    check_miner(pyinstance.get_miner("example_centroid"))


def test_backbone_is_usable_with_a_builtin_loss():
    backbone = pyinstance.get_backbone("example_tiny", width=16)
    features = backbone(torch.rand(6, 3, 32, 32)).mean(dim=(2, 3))
    embeddings = torch.nn.functional.normalize(features, dim=1)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    triplets = pyinstance.get_miner("example_centroid")(embeddings.detach(), labels)
    loss = pyinstance.get_loss("triplet_margin", margin=0.2)(embeddings, labels, triplets)
    loss.backward()
    assert torch.isfinite(loss)
