"""The built-in backbones through the plugin registry: names, contract, bad input."""

from __future__ import annotations

import math

import pytest
import torch

import pyinstance
from pyinstance.builtin.backbones import DEFAULT_BACKBONE

NAMES = [
    "efficientnet_lite0",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "alexnet",
    "vgg16",
    "tripletnet_small",
]
# the cheap ones are built for the contract checks; every name is checked to be registered
CONTRACT = ["efficientnet_lite0", "resnet18", "alexnet", "tripletnet_small"]


def test_every_backbone_is_registered() -> None:
    registered = {c.name for c in pyinstance.list_plugins("backbone")}
    assert set(NAMES) <= registered
    assert DEFAULT_BACKBONE == "efficientnet_lite0"
    component = pyinstance.plugins.registry.component("backbone", "resnet50")
    assert component.plugin == "pyinstance.builtin.backbones"


def test_resnet_factories_build_their_depth() -> None:
    assert pyinstance.get_backbone("resnet34").depth == 34
    assert pyinstance.get_backbone("resnet18", num_classes=3).classifier.out_channels == 3


def test_unknown_backbone_name() -> None:
    with pytest.raises(ValueError, match=r"unknown backbone 'resnet51'.*Did you mean"):
        pyinstance.get_backbone("resnet51")


@pytest.fixture(scope="module", params=CONTRACT)
def backbone(request) -> torch.nn.Module:  # noqa: ANN001
    return pyinstance.get_backbone(request.param).eval()


def test_contract(backbone: torch.nn.Module) -> None:
    assert isinstance(backbone.out_channels, int) and isinstance(backbone.out_stride, int)
    assert len(backbone.input_mean) == 3 and len(backbone.input_std) == 3
    assert all(s > 0 for s in backbone.input_std)
    side = max(backbone.min_input_size, 48)
    for height, width in [(side, side), (side + 37, side + 11)]:
        with torch.no_grad():
            features = backbone(torch.randn(2, 3, height, width))
            class_map = backbone.class_map(features)
        assert features.shape[:2] == (2, backbone.out_channels)
        # nominal stride: at most size / stride cells; valid convolutions lose a border
        stride = backbone.out_stride
        for size, cells in zip((height, width), features.shape[2:], strict=True):
            assert (
                (size - backbone.min_input_size) // stride + 1 <= cells <= math.ceil(size / stride)
            )
        assert class_map.shape == (2, backbone.num_classes, *features.shape[2:])


def test_bad_images(backbone: torch.nn.Module) -> None:
    side = max(backbone.min_input_size, 32)
    with pytest.raises(ValueError, match="expected 3 \\(RGB\\) channels, got 1"):
        backbone(torch.randn(1, 1, side, side))
    with pytest.raises(ValueError, match="expected 3 \\(RGB\\) channels, got 4"):
        backbone(torch.randn(1, 4, side, side))
    with pytest.raises(ValueError, match="B×3×H×W"):
        backbone(torch.randn(3, side, side))
    with pytest.raises(ValueError, match="too small"):
        backbone(torch.randn(1, 3, backbone.min_input_size - 1, side))
    nan = torch.randn(1, 3, side, side)
    nan[0, 1, 2, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        backbone(nan)
    with pytest.raises(TypeError, match="floating-point"):
        backbone(torch.zeros(1, 3, side, side, dtype=torch.uint8))
    with pytest.raises(TypeError, match="torch.Tensor"):
        backbone([[0.0]])
    with pytest.raises(ValueError, match="empty batch"):
        backbone(torch.randn(0, 3, side, side))
    with pytest.raises(ValueError, match=f"expected {backbone.out_channels} channels"):
        backbone.class_map(torch.randn(1, backbone.out_channels + 1, 2, 2))


def test_trainable_from_every_block_name(backbone: torch.nn.Module) -> None:
    names = list(backbone.blocks())
    assert names[-1] == "classifier"
    parameters = {id(p) for p in backbone.parameters()}
    in_blocks = {id(p) for block in backbone.blocks().values() for p in block.parameters()}
    assert in_blocks == parameters  # every parameter belongs to a named block
    try:
        for index, name in enumerate(names):
            backbone.set_trainable_from(name)
            frozen = {id(p) for b in names[:index] for p in backbone.blocks()[b].parameters()}
            assert all(p.requires_grad == (id(p) not in frozen) for p in backbone.parameters())
    finally:
        backbone.set_trainable_from(None)
        backbone.eval()
