"""ResNet's blocks and helpers against their definition, on tiny channel counts.

The whole-network tests (tests/models/test_resnet_small.py) see a block only through its
zero-initialised residual branch, so a wrong branch goes unnoticed there. Here every batch
norm gets non-trivial parameters and running statistics, and each block's output is
compared with the same computation written with ``F.conv2d`` and the batch-norm formula
(float64, eval mode), at odd input sizes that exercise the padding at stride 2.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pyinstance.models.resnet import (
    BasicBlock,
    Bottleneck,
    ResNet,
    _conv1x1,
    _conv3x3,
    _shortcut,
)


def _randomise_norms(module: nn.Module, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    for norm in module.modules():
        if isinstance(norm, nn.BatchNorm2d):
            n = norm.num_features
            with torch.no_grad():
                norm.weight.copy_(0.5 + torch.rand(n, generator=generator))
                norm.bias.copy_(torch.randn(n, generator=generator) * 0.3)
                norm.running_mean.copy_(torch.randn(n, generator=generator) * 0.3)
                norm.running_var.copy_(0.5 + torch.rand(n, generator=generator))


def _norm(x: torch.Tensor, norm: nn.BatchNorm2d) -> torch.Tensor:
    def channel(v: torch.Tensor) -> torch.Tensor:
        return v[None, :, None, None]

    scale = channel(norm.weight) / channel(norm.running_var + 1e-5).sqrt()
    return (x - channel(norm.running_mean)) * scale + channel(norm.bias)


def _conv(x: torch.Tensor, conv: nn.Conv2d, stride: int, padding: int) -> torch.Tensor:
    return F.conv2d(x, conv.weight, None, stride=stride, padding=padding)


def _shortcut_of(block: nn.Module, x: torch.Tensor, stride: int, projected: bool) -> torch.Tensor:
    if not projected:
        return x
    conv, norm = block.downsample
    return _norm(_conv(x, conv, stride, 0), norm)


def _expected_basic(block: BasicBlock, x: torch.Tensor, stride: int, projected: bool):
    y = torch.relu(_norm(_conv(x, block.conv1, stride, 1), block.bn1))
    y = _norm(_conv(y, block.conv2, 1, 1), block.bn2)
    return torch.relu(y + _shortcut_of(block, x, stride, projected))


def _expected_bottleneck(block: Bottleneck, x: torch.Tensor, stride: int, projected: bool):
    y = torch.relu(_norm(_conv(x, block.conv1, 1, 0), block.bn1))
    y = torch.relu(_norm(_conv(y, block.conv2, stride, 1), block.bn2))
    y = _norm(_conv(y, block.conv3, 1, 0), block.bn3)
    return torch.relu(y + _shortcut_of(block, x, stride, projected))


def _shapes(block: nn.Module) -> dict[str, tuple[int, ...]]:
    return {name: tuple(p.shape) for name, p in block.named_parameters()}


def _geometry(conv: nn.Conv2d) -> tuple:
    return (conv.kernel_size, conv.stride, conv.padding, conv.bias is None)


def _shortcut_shapes(block, inp: int, out: int, stride: int, projected: bool) -> dict:
    """The shortcut's parameter shapes (none for the identity), its 1×1 geometry checked."""
    if not projected:
        assert block.downsample is None
        return {}
    assert _geometry(block.downsample[0]) == ((1, 1), (stride, stride), (0, 0), True)
    return {
        "downsample.0.weight": (out, inp, 1, 1),
        "downsample.1.weight": (out,),
        "downsample.1.bias": (out,),
    }


def _check_output(block, inp: int, out: int, stride: int, expected_of) -> None:
    """The block's output on a 7×9 float64 input equals the test's own formula."""
    x = torch.randn(2, inp, 7, 9, dtype=torch.float64)
    with torch.no_grad():
        output = block(x)
        expected = expected_of(x)
    assert output.shape == (2, out, -(-7 // stride), -(-9 // stride))
    torch.testing.assert_close(output, expected)
    assert float((output == 0).double().mean()) > 0.1  # the final ReLU cut something


@pytest.mark.parametrize(
    ("inp", "width", "stride", "projected"),
    [(3, 3, 1, False), (2, 3, 1, True), (3, 3, 2, True), (2, 4, 2, True)],
)
def test_a_basic_block_is_two_three_by_threes_and_a_shortcut(inp, width, stride, projected):
    torch.manual_seed(inp * 10 + width + stride)
    block = BasicBlock(inp, width, stride).double().eval()
    _randomise_norms(block, seed=width + stride)
    assert _geometry(block.conv1) == ((3, 3), (stride, stride), (1, 1), True)
    assert _geometry(block.conv2) == ((3, 3), (1, 1), (1, 1), True)
    expected_shapes = {
        "conv1.weight": (width, inp, 3, 3),
        "bn1.weight": (width,),
        "bn1.bias": (width,),
        "conv2.weight": (width, width, 3, 3),
        "bn2.weight": (width,),
        "bn2.bias": (width,),
    }
    expected_shapes |= _shortcut_shapes(block, inp, width, stride, projected)
    assert _shapes(block) == expected_shapes
    _check_output(block, inp, width, stride, lambda x: _expected_basic(block, x, stride, projected))


@pytest.mark.parametrize(
    ("inp", "width", "stride", "projected"),
    [(8, 2, 1, False), (3, 2, 1, True), (8, 2, 2, True), (5, 3, 2, True)],
)
def test_a_bottleneck_reduces_convolves_and_expands_by_four(inp, width, stride, projected):
    torch.manual_seed(inp * 10 + width + stride)
    block = Bottleneck(inp, width, stride).double().eval()
    _randomise_norms(block, seed=inp + stride)
    out_channels = 4 * width
    assert _geometry(block.conv1) == ((1, 1), (1, 1), (0, 0), True)
    assert _geometry(block.conv2) == ((3, 3), (stride, stride), (1, 1), True)
    assert _geometry(block.conv3) == ((1, 1), (1, 1), (0, 0), True)
    expected_shapes = {
        "conv1.weight": (width, inp, 1, 1),
        "bn1.weight": (width,),
        "bn1.bias": (width,),
        "conv2.weight": (width, width, 3, 3),
        "bn2.weight": (width,),
        "bn2.bias": (width,),
        "conv3.weight": (out_channels, width, 1, 1),
        "bn3.weight": (out_channels,),
        "bn3.bias": (out_channels,),
    }
    expected_shapes |= _shortcut_shapes(block, inp, out_channels, stride, projected)
    assert _shapes(block) == expected_shapes
    _check_output(
        block,
        inp,
        out_channels,
        stride,
        lambda x: _expected_bottleneck(block, x, stride, projected),
    )


def test_blocks_leave_their_input_alone():
    # The in-place ReLUs act on fresh tensors only: the caller's input is never changed.
    for block in (BasicBlock(3, 3).eval(), Bottleneck(8, 2).eval()):
        _randomise_norms(block, seed=1)
        x = torch.randn(1, block.conv1.in_channels, 5, 5)
        before = x.clone()
        with torch.no_grad():
            block(x)
        torch.testing.assert_close(x, before, rtol=0, atol=0)


def test_convolution_helpers():
    assert _geometry(_conv3x3(2, 5)) == ((3, 3), (1, 1), (1, 1), True)
    assert _geometry(_conv3x3(2, 5, 2)) == ((3, 3), (2, 2), (1, 1), True)
    assert (_conv3x3(2, 5).in_channels, _conv3x3(2, 5).out_channels) == (2, 5)
    assert _geometry(_conv1x1(2, 5)) == ((1, 1), (1, 1), (0, 0), True)
    assert _geometry(_conv1x1(2, 5, 2)) == ((1, 1), (2, 2), (0, 0), True)
    assert (_conv1x1(2, 5).in_channels, _conv1x1(2, 5).out_channels) == (2, 5)


@pytest.mark.parametrize(
    ("inp", "out", "stride", "projected"),
    [(4, 4, 1, False), (4, 4, 2, True), (4, 6, 1, True), (4, 6, 2, True), (6, 4, 1, True)],
)
def test_a_shortcut_is_projected_when_the_shape_changes(inp, out, stride, projected):
    shortcut = _shortcut(inp, out, stride)
    if not projected:
        assert shortcut is None
        return
    conv, norm = shortcut
    assert len(shortcut) == 2
    assert _geometry(conv) == ((1, 1), (stride, stride), (0, 0), True)
    assert (conv.in_channels, conv.out_channels) == (inp, out)
    assert isinstance(norm, nn.BatchNorm2d) and norm.num_features == out


def _fc_free_state(model: ResNet) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict().items() if not k.startswith("fc.")}


def test_torchvision_weights_load_with_the_classifier_reshaped(tmp_path):
    torch.manual_seed(0)
    source = ResNet(18, num_classes=1000)
    state = _fc_free_state(source)
    generator = torch.Generator().manual_seed(1)
    linear = torch.randn(1000, 512, generator=generator)  # torchvision's Linear fc layout
    state |= {"fc.weight": linear, "fc.bias": torch.randn(1000, generator=generator)}
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)
    torch.manual_seed(2)
    loaded = ResNet(18, weights=path)
    for key, value in _fc_free_state(loaded).items():
        torch.testing.assert_close(value, state[key], rtol=0, atol=0)
    torch.testing.assert_close(loaded.fc.weight, linear[:, :, None, None], rtol=0, atol=0)
    torch.testing.assert_close(loaded.fc.bias, state["fc.bias"], rtol=0, atol=0)


def test_another_class_count_skips_the_file_s_classifier(tmp_path):
    torch.manual_seed(0)
    source = ResNet(18, num_classes=1000)
    path = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), path)  # with its 1000-class fc
    torch.manual_seed(3)
    fresh = ResNet(18, num_classes=5)
    torch.manual_seed(3)
    loaded = ResNet(18, weights=path, num_classes=5)
    for key, value in _fc_free_state(loaded).items():
        torch.testing.assert_close(value, source.state_dict()[key], rtol=0, atol=0)
    # the classifier is the fresh one a model without weights gets from the same seed
    assert loaded.fc.weight.shape == (5, 512, 1, 1)
    torch.testing.assert_close(loaded.fc.weight, fresh.fc.weight, rtol=0, atol=0)
    torch.testing.assert_close(loaded.fc.bias, fresh.fc.bias, rtol=0, atol=0)


def test_a_file_without_the_classifier_is_refused_for_a_thousand_classes(tmp_path):
    with torch.device("meta"):
        source = ResNet(18, num_classes=7)
    path = tmp_path / "no_fc.pth"
    state = {k: torch.zeros(v.shape) for k, v in _fc_free_state(source).items()}
    torch.save(state, path)
    with torch.device("meta"), pytest.raises(ValueError, match=r"fc\.bias, fc\.weight"):
        ResNet(18, weights=path)
