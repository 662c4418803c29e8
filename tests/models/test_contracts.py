"""Component contracts as Protocols, and the one default for ``min_input_size``."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import pyinstance
from pyinstance import testing
from pyinstance.models.contracts import (
    BackboneContract,
    HeadContract,
    LossContract,
    MinerContract,
    min_input_size,
)


class _PaddedBackbone(nn.Module):
    """Stride-16 average pooling, padded (ceil): declares no ``min_input_size``."""

    out_channels = 3
    out_stride = 16

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return nn.functional.avg_pool2d(images, 16, ceil_mode=True)


def test_builtins_satisfy_the_protocols():
    for component in pyinstance.list_plugins("backbone"):
        if component.name == "tripletnet_small":
            assert isinstance(pyinstance.get_backbone(component.name), BackboneContract)
    for component in pyinstance.list_plugins("head"):
        assert isinstance(pyinstance.get_head(component.name, in_channels=8), HeadContract)
    for component in pyinstance.list_plugins("loss"):
        assert isinstance(pyinstance.get_loss(component.name), LossContract)
    for name in ("batch_hard", "random"):
        assert isinstance(pyinstance.get_miner(name), MinerContract)
    assert not isinstance(nn.Identity(), BackboneContract)  # no out_channels / out_stride
    assert not isinstance(nn.Identity(), HeadContract)


def test_min_input_size_is_declared_or_the_stride():
    assert min_input_size(pyinstance.get_backbone("tripletnet_small")) == 32
    assert min_input_size(_PaddedBackbone()) == 16

    class Bad(_PaddedBackbone):
        min_input_size = 0

    with pytest.raises(ValueError, match=r"backbone.min_input_size: expected an integer >= 1"):
        min_input_size(Bad())
    with pytest.raises(TypeError, match=r"backbone.out_stride: expected an integer >= 1"):
        min_input_size(nn.Identity())


def test_extraction_and_the_contract_check_share_the_default():
    backbone, head = _PaddedBackbone(), pyinstance.get_head("mac", in_channels=3)
    testing.check_backbone(backbone)  # checked from 16 px up
    image = torch.rand(3, 24, 24)
    out = pyinstance.extract([image], backbone, head, max_side=16, progress=False)
    assert out.shape == (1, 1, 3)
    with pytest.raises(ValueError, match="minimum input size 16"):
        pyinstance.extract([image], backbone, head, max_side=15, progress=False)

    class Bad(_PaddedBackbone):
        min_input_size = "16"

    with pytest.raises(testing.ContractError, match="backbone.min_input_size"):
        testing.check_backbone(Bad())
