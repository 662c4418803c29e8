"""The model file (models/trained.py) and the small triplet network (models/tripletnet.py):
exact round trips, refusals by name, and the network's layers against their definition
(written for mutation testing; every network here is built by the test itself)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pyinstance.models.trained import FORMAT, VERSION, TrainedModel, read_model
from pyinstance.models.tripletnet import TripletNetSmall


def _model(**change) -> TrainedModel:
    torch.manual_seed(0)
    fields = {
        "backbone": "tiny",
        "head": "gem",
        "backbone_state": {"w": torch.randn(2, 3)},
        "head_state": {"p": torch.tensor([3.0])},
    } | change
    return TrainedModel(**fields)


def test_defaults_of_a_model_file():
    model = _model()
    assert (model.backbone_params, model.head_params, model.max_side, model.info) == (
        {},
        {},
        448,
        {},
    )


def test_a_model_file_round_trip(tmp_path):
    model = _model(
        backbone_params={"depth": 2, "pretrained": False},
        head_params={"p": 3.0},
        max_side=320,
        info={"epochs": 2, "data": Path("/d")},
    )
    path = model.save(str(tmp_path / "sub" / "m.pt"))
    assert path == tmp_path / "sub" / "m.pt"
    read = read_model(path)
    assert (read.backbone, read.head) == ("tiny", "gem")
    assert read.backbone_params == {"depth": 2, "pretrained": False}
    assert read.head_params == {"p": 3.0}
    assert read.max_side == 320 and type(read.max_side) is int
    assert read.info == {"epochs": 2, "data": "/d"}
    assert torch.equal(read.backbone_state["w"], model.backbone_state["w"])
    assert torch.equal(read.head_state["p"], torch.tensor([3.0]))
    payload = torch.load(path, weights_only=True)
    assert (payload["format"], payload["version"]) == (FORMAT, VERSION) == ("pyinstance-model", 1)


def test_saved_states_are_detached(tmp_path):
    model = _model(
        backbone_state={"w": torch.ones(2, requires_grad=True)},
        head_state={"p": torch.ones(1, requires_grad=True)},
    )
    payload = torch.load(model.save(tmp_path / "m.pt"), weights_only=True)
    assert not payload["backbone_state"]["w"].requires_grad
    assert not payload["head_state"]["p"].requires_grad


@pytest.mark.parametrize(
    "change",
    [
        {"backbone_params": "{"},
        {"head_params": "[1"},
        {"max_side": "big"},
        {"info": "{x"},
        {"head_state": 3},
    ],
)
def test_damaged_model_files_are_refused_naming_the_file(tmp_path, change):
    path = _model().save(tmp_path / "m.pt")
    torch.save(torch.load(path, weights_only=True) | change, path)
    with pytest.raises(ValueError) as raised:
        read_model(path)
    assert str(raised.value).startswith(f"model: {str(path)!r} is incomplete or damaged: ")


def test_a_model_file_without_an_entry_is_refused(tmp_path):
    path = _model().save(tmp_path / "m.pt")
    payload = torch.load(path, weights_only=True)
    del payload["head"]
    torch.save(payload, path)
    with pytest.raises(ValueError, match=r"is incomplete or damaged: 'head'$"):
        read_model(path)


def test_a_foreign_file_is_refused(tmp_path):
    path = tmp_path / "v.pt"
    torch.save({"format": "pyinstance-verifier", "version": 1}, path)
    with pytest.raises(ValueError) as raised:
        read_model(path)
    assert str(raised.value) == (
        f"model: {str(path)!r} is not a pyinstance model file (made by `pyinstance train`)"
    )


def test_load_into_loads_both_strictly_and_names_the_part():
    backbone, head = nn.Linear(3, 2, bias=False), nn.Linear(1, 1)
    model = _model(
        backbone_state={"weight": torch.full((2, 3), 0.5)},
        head_state={"weight": torch.tensor([[2.0]]), "bias": torch.tensor([1.0])},
    )
    model.load_into(backbone, head)
    assert torch.equal(backbone.weight, torch.full((2, 3), 0.5))
    assert torch.equal(head.weight, torch.tensor([[2.0]])) and torch.equal(head.bias, torch.ones(1))
    with pytest.raises(ValueError, match=r"^model: the backbone weights do not fit Linear: "):
        _model(backbone_state={}).load_into(nn.Linear(3, 2), head)
    extra = {"weight": torch.ones(1, 1), "bias": torch.ones(1), "scale": torch.ones(1)}
    with pytest.raises(ValueError, match=r"^model: the head weights do not fit Linear: "):
        _model(backbone_state={"weight": torch.ones(2, 3)}, head_state=extra).load_into(
            nn.Linear(3, 2, bias=False), nn.Linear(1, 1)
        )


def _reference_features(net: TripletNetSmall, images: torch.Tensor) -> torch.Tensor:
    """The module doc's definition, written out with torch.nn.functional (no dropout)."""
    x = F.max_pool2d(F.relu(F.conv2d(images, net.conv1.weight, net.conv1.bias)), 2, 2)
    x = F.max_pool2d(F.relu(F.conv2d(x, net.conv2.weight, net.conv2.bias)), 2, 2)
    x = F.max_pool2d(F.relu(F.conv2d(x, net.conv3.weight, net.conv3.bias)), 2, 2)
    return torch.sigmoid(F.conv2d(x, net.conv4.weight, net.conv4.bias))


def test_tripletnet_layers():
    net = TripletNetSmall()
    shapes = [tuple(conv.weight.shape) for conv in (net.conv1, net.conv2, net.conv3, net.conv4)]
    assert shapes == [(64, 3, 5, 5), (128, 64, 3, 3), (256, 128, 3, 3), (128, 256, 2, 2)]
    assert tuple(net.fc.weight.shape) == (10, 128, 1, 1) and net.num_classes == 10
    assert net.classifier is net.fc
    assert net.dropout.p == 0.5
    assert list(net.blocks()) == ["conv1", "conv2", "conv3", "conv4", "classifier"]
    assert list(net.blocks().values()) == [net.conv1, net.conv2, net.conv3, net.conv4, net.fc]
    assert (net.out_channels, net.out_stride, net.min_input_size) == (128, 8, 32)
    assert net.input_mean == net.input_std == (0.5, 0.5, 0.5)


def test_tripletnet_features_follow_the_definition():
    torch.manual_seed(1)
    net = TripletNetSmall(num_classes=3).eval()
    images = torch.randn(2, 3, 40, 48)
    features = net(images)
    assert features.shape == (2, 128, 2, 3)  # (40 - 24) / 8, (48 - 24) / 8
    torch.testing.assert_close(features, _reference_features(net, images))
    assert net.class_map(features).shape == (2, 3, 2, 3)
    one = net(torch.randn(1, 3, 32, 32))
    assert one.shape == (1, 128, 1, 1) and bool(((one > 0) & (one < 1)).all())


def test_tripletnet_dropout_acts_between_the_convolutions_in_training():
    torch.manual_seed(2)
    images = torch.randn(1, 3, 32, 32)
    still = TripletNetSmall(dropout=0.0).train()
    torch.testing.assert_close(still(images), _reference_features(still, images))
    noisy = TripletNetSmall(dropout=0.9).train()
    assert noisy.dropout.p == 0.9
    assert not torch.allclose(noisy(images), _reference_features(noisy, images))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"num_classes": 0}, "num_classes: expected a positive int, got 0"),
        ({"num_classes": 2.0}, "num_classes: expected a positive int, got 2.0"),
        ({"dropout": 1.0}, "dropout: expected a probability in [0, 1), got 1.0"),
        ({"dropout": -0.01}, "dropout: expected a probability in [0, 1), got -0.01"),
    ],
)
def test_tripletnet_refuses_bad_options(options, message):
    with pytest.raises(ValueError) as raised:
        TripletNetSmall(**options)
    assert str(raised.value) == message


def test_tripletnet_accepts_the_bounds():
    assert TripletNetSmall(num_classes=1).fc.out_channels == 1
    assert TripletNetSmall(dropout=0.0).dropout.p == 0.0


def test_tripletnet_weights_and_freezing(tmp_path):
    torch.manual_seed(3)
    source = TripletNetSmall()
    torch.save(source.state_dict(), tmp_path / "w.pt")
    loaded = TripletNetSmall(weights=tmp_path / "w.pt", trainable_from="conv3")
    for key, value in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    trainable = {name for name, p in loaded.named_parameters() if p.requires_grad}
    assert trainable == {
        f"{block}.{kind}" for block in ("conv3", "conv4", "fc") for kind in ("weight", "bias")
    }
    assert all(p.requires_grad for p in TripletNetSmall().parameters())
