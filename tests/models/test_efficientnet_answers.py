"""EfficientNet-Lite (models/efficientnet.py): the answers test_efficientnet_units.py left
open, found by mutation testing (every network built here, no photo, no pretrained run)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from pyinstance.models.efficientnet import (
    EfficientNetLite,
    EfficientNetLite1,
    SameConv2d,
    _round_filters,
)


def test_the_variant_classes_pass_their_options_on():
    net = EfficientNetLite1(pretrained=False, num_classes=2, trainable_from="head")
    assert (net.variant.name, net.num_classes) == ("lite1", 2)
    assert tuple(net._fc.weight.shape) == (2, 1280, 1, 1)
    trainable = {name.split(".")[0] for name, p in net.named_parameters() if p.requires_grad}
    assert trainable == {"_conv_head", "_bn1", "_fc"}


def test_every_stage_holds_its_own_blocks_in_order():
    net = EfficientNetLite(pretrained=False, num_classes=1)
    blocks = net.blocks()
    stages = [list(blocks[f"stage{i}"]) for i in range(1, 8)]
    assert [len(stage) for stage in stages] == [1, 2, 2, 3, 3, 4, 1]
    assert [block for stage in stages for block in stage] == list(net._blocks)
    # each stage starts where the width changes: its first block takes the new input width
    assert [stage[0]._project_conv.out_channels for stage in stages] == [
        16,
        24,
        40,
        80,
        112,
        192,
        320,
    ]
    assert all(
        block._project_conv.out_channels == stage[0]._project_conv.out_channels
        for stage in stages
        for block in stage
    )


def test_a_rounding_that_loses_exactly_ten_percent_is_kept():
    """TensorFlow's rule adds a divisor only when the rounding lost *more* than 10 %
    (``if new_filters < 0.9 * filters``): 40 × 0.5 = 20 rounds to 18 = 0.9 × 20, kept."""
    assert _round_filters(40, 0.5, divisor=18) == 18
    assert _round_filters(20, 0.5, divisor=9) == 9
    assert _round_filters(41, 0.5, divisor=18) == 36  # 20.5: 18 is 87.8 %, one divisor more


def test_same_padding_gives_ceil_size_over_stride_for_every_size():
    """TensorFlow's "same": ``ceil(size / stride)`` outputs along each side, whatever the
    kernel, including where the kernel is shorter than the stride (no padding at all)."""
    for kernel in (1, 2, 3, 4, 5, 6):
        for stride in (1, 2, 3):
            conv = SameConv2d(1, 1, kernel, stride=stride)
            for height, width in ((1, 9), (4, 6), (5, 7), (8, 3)):
                out = conv(torch.zeros(1, 1, height, width))
                expected = (math.ceil(height / stride), math.ceil(width / stride))
                assert tuple(out.shape[2:]) == expected, (kernel, stride, height, width)


def test_a_one_by_one_kernel_at_stride_two_samples_every_other_pixel_unpadded():
    conv = SameConv2d(1, 1, 1, stride=2)
    with torch.no_grad():
        conv.weight.fill_(1.0)
    x = torch.arange(24.0).reshape(1, 1, 4, 6)
    torch.testing.assert_close(conv(x), x[:, :, ::2, ::2])


def test_a_stride_per_side_pads_each_side_for_its_own_stride():
    """A (rows, columns) stride, as nn.Conv2d takes it: rows at stride 1 (total padding
    2: one before, one after), columns at stride 2 (total 1: none before, one after)."""
    conv = SameConv2d(1, 1, 3, stride=(1, 2))
    with torch.no_grad():
        conv.weight.copy_(torch.arange(9.0).reshape(1, 1, 3, 3))
    x = torch.arange(30.0).reshape(1, 1, 5, 6)
    out = conv(x)
    assert tuple(out.shape) == (1, 1, 5, 3)
    expected = F.conv2d(F.pad(x, [0, 1, 1, 1]), conv.weight, stride=(1, 2))
    torch.testing.assert_close(out, expected)


def test_an_unbatched_picture_is_refused_not_padded_on_one_side():
    conv = SameConv2d(1, 1, 3, stride=2)
    with pytest.raises(ValueError):
        conv(torch.zeros(1, 5, 6))  # (C, H, W): one size for two strides
