"""The shared ``Backbone`` behaviour on a tiny subclass: checks, class map, freezing.

A two-block backbone with fixed weights (stride 2, a 1×1 classifier) whose answers are
worked out by hand, so that every input check, the class map and partial freezing are
tested without building a real network.
"""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torch import nn

from pyinstance.models.backbone import IMAGENET_MEAN, IMAGENET_STD, Backbone


class _Tiny(Backbone):
    """features = 2×2 average pool of the RGB sum, scaled per block; class map = 1×1 conv."""

    out_channels = 2
    out_stride = 2
    min_input_size = 4
    num_classes = 3

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 2, 2, stride=2, bias=False)
        self.norm = nn.BatchNorm2d(2)
        self.head = nn.Conv2d(2, 3, 1)
        with torch.no_grad():
            self.stem.weight.fill_(0.25)  # channel c: mean of the 2×2 cell's RGB sum
            self.head.weight.copy_(
                torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, -1.0]])[..., None, None]
            )
            self.head.bias.copy_(torch.tensor([0.0, 1.0, 2.0]))
        self.set_trainable_from(None)

    @property
    def classifier(self) -> nn.Module:
        return self.head

    def blocks(self) -> OrderedDict[str, nn.Module]:
        return OrderedDict(stem=self.stem, norm=self.norm, classifier=self.head)

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        return self.norm(self.stem(images))


def _images(batch: int = 2, height: int = 4, width: int = 6) -> torch.Tensor:
    return (
        torch.arange(batch * 3 * height * width, dtype=torch.float32).reshape(
            batch, 3, height, width
        )
        / 100
    )


def test_defaults_are_imagenet_statistics():
    assert _Tiny.input_mean == IMAGENET_MEAN == (0.485, 0.456, 0.406)
    assert _Tiny.input_std == IMAGENET_STD == (0.229, 0.224, 0.225)


def test_forward_and_class_map_by_hand():
    backbone = _Tiny().eval()
    images = _images()
    features, class_map = backbone.forward_with_class_map(images)
    # eval BatchNorm with fresh statistics: y = x / sqrt(1 + 1e-5)
    cells = images.sum(dim=1, keepdim=True).unfold(2, 2, 2).unfold(3, 2, 2).sum(dim=(-1, -2))
    expected = (cells * 0.25).expand(2, 2, 2, 3) / (1 + 1e-5) ** 0.5
    torch.testing.assert_close(features, expected)
    torch.testing.assert_close(backbone(images), expected)
    torch.testing.assert_close(
        class_map,
        torch.cat([expected[:, :1], expected[:, 1:] + 1, torch.full_like(expected[:, :1], 2.0)], 1),
    )
    torch.testing.assert_close(backbone.class_map(features), class_map)


@pytest.mark.parametrize(
    ("features", "message"),
    [
        (torch.zeros(2, 2, 3), r"^features: expected a B×2×H×W tensor, got shape \(2, 2, 3\)$"),
        ([[0.0]], r"^features: expected a B×2×H×W tensor, got list$"),
        (torch.zeros(1, 3, 2, 2), r"^features: expected 2 channels, got 3$"),
    ],
)
def test_class_map_refuses_other_features(features, message):
    with pytest.raises(ValueError, match=message):
        _Tiny().class_map(features)


@pytest.mark.parametrize(
    ("images", "error", "message"),
    [
        ([[0.0]], TypeError, r"^images: expected a torch.Tensor, got list$"),
        (torch.zeros(3, 4, 4), ValueError, r"^images: expected B×3×H×W, got shape \(3, 4, 4\)$"),
        (torch.zeros(1, 1, 4, 4), ValueError, r"^images: expected 3 \(RGB\) channels, got 1 "),
        (torch.zeros(1, 4, 4, 4), ValueError, r"^images: expected 3 \(RGB\) channels, got 4 "),
        (torch.zeros(1, 3, 4, 4, dtype=torch.uint8), TypeError, r"^images: expected a floating"),
        (torch.zeros(1, 3, 3, 8), ValueError, r"^images: 3×8 is too small for _Tiny \(output "),
        (torch.zeros(1, 3, 8, 3), ValueError, r"^images: 8×3 is too small .* at least 4 pixels"),
        (torch.zeros(0, 3, 4, 4), ValueError, r"^images: empty batch$"),
        (torch.full((1, 3, 4, 4), float("nan")), ValueError, r"^images: contains NaN"),
        (torch.full((1, 3, 4, 4), float("-inf")), ValueError, r"^images: contains NaN"),
    ],
)
def test_bad_images_are_refused_by_name(images, error, message):
    with pytest.raises(error, match=message):
        _Tiny()(images)


def test_the_smallest_accepted_size_is_inclusive():
    assert _Tiny()(torch.zeros(1, 3, 4, 4)).shape == (1, 2, 2, 2)
    assert _Tiny()(torch.zeros(1, 3, 5, 4)).shape == (1, 2, 2, 2)


def test_freezing_below_a_block_and_keeping_its_statistics():
    backbone = _Tiny()
    backbone.set_trainable_from("classifier")
    assert [p.requires_grad for p in backbone.stem.parameters()] == [False]
    assert [p.requires_grad for p in backbone.norm.parameters()] == [False, False]
    assert all(p.requires_grad for p in backbone.head.parameters())
    backbone.train()
    assert backbone.training and backbone.head.training
    assert not backbone.stem.training and not backbone.norm.training
    before = backbone.norm.running_mean.clone()
    backbone(_images())
    torch.testing.assert_close(backbone.norm.running_mean, before)  # frozen: eval mode

    backbone.set_trainable_from("norm")
    assert [p.requires_grad for p in backbone.stem.parameters()] == [False]
    assert all(p.requires_grad for p in backbone.norm.parameters())
    assert backbone.norm.training and not backbone.stem.training
    backbone(_images())
    assert not torch.equal(backbone.norm.running_mean, before)  # trainable: statistics move

    backbone.set_trainable_from("stem")  # the first block: nothing frozen
    assert all(p.requires_grad for p in backbone.parameters())
    backbone.set_trainable_from(None)
    assert all(p.requires_grad for p in backbone.parameters())
    assert all(module.training for module in backbone.modules())


def test_eval_mode_is_kept_when_freezing():
    backbone = _Tiny().eval()
    backbone.set_trainable_from("norm")
    assert not any(module.training for module in backbone.modules())


def test_an_unknown_block_is_named_with_the_choices():
    with pytest.raises(
        ValueError,
        match=r"^trainable_from: unknown block 'layer9' of _Tiny; expected one of stem, norm, classifier$",
    ):
        _Tiny().set_trainable_from("layer9")


def test_the_base_class_leaves_blocks_and_features_to_subclasses():
    with pytest.raises(NotImplementedError):
        Backbone().blocks()
    with pytest.raises(NotImplementedError):
        Backbone().forward_features(torch.zeros(1, 3, 4, 4))


class _NeverFrozen(Backbone):
    """A subclass that never calls ``set_trainable_from`` (a plugin may not)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.BatchNorm2d(3)

    def blocks(self) -> OrderedDict[str, nn.Module]:
        return OrderedDict(stem=self.stem)


def test_train_and_eval_without_any_freezing():
    backbone = _NeverFrozen()
    assert backbone.eval() is backbone
    assert not backbone.training and not backbone.stem.training
    backbone.train()
    assert backbone.training and backbone.stem.training
