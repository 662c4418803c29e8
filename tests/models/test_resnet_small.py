"""ResNet built fresh in each test (no cache): geometry, initialisation, blocks, arguments.

tests/models/test_torchvision_layout.py shares one model per depth between its tests; here
every answer comes from a model built by the test itself, so that a change in the
construction is seen (mutation testing forks from a process whose caches are filled).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from pyinstance.models.resnet import ARCHITECTURES, BasicBlock, Bottleneck, ResNet


def test_architectures_are_he_et_al():
    assert {
        18: (BasicBlock, (2, 2, 2, 2)),
        34: (BasicBlock, (3, 4, 6, 3)),
        50: (Bottleneck, (3, 4, 6, 3)),
        101: (Bottleneck, (3, 4, 23, 3)),
        152: (Bottleneck, (3, 8, 36, 3)),
    } == ARCHITECTURES
    assert (BasicBlock.expansion, Bottleneck.expansion) == (1, 4)


def test_resnet18_geometry_and_parameters():
    model = ResNet(18, num_classes=7).eval()
    # torchvision's resnet18 has 11_689_512 parameters with 1000 classes: fc 513_000.
    assert sum(p.numel() for p in model.parameters()) == 11_689_512 - 513_000 + 512 * 7 + 7
    assert (model.out_channels, model.out_stride, model.min_input_size) == (512, 32, 32)
    assert model.num_classes == 7 and model.depth == 18
    with torch.no_grad():
        features, class_map = model.forward_with_class_map(torch.rand(2, 3, 64, 97))
    assert features.shape == (2, 512, 2, 4)  # ceil(64 / 32), ceil(97 / 32)
    assert class_map.shape == (2, 7, 2, 4)
    assert model.conv1.stride == (2, 2) and model.maxpool.stride == 2
    strides = [(layer[0].conv1.stride, layer[0].downsample is None) for layer in _layers(model)]
    assert strides == [((1, 1), True), ((2, 2), False), ((2, 2), False), ((2, 2), False)]
    assert [len(layer) for layer in _layers(model)] == [2, 2, 2, 2]
    assert all(block.downsample is None for layer in _layers(model) for block in layer[1:])


def test_resnet50_bottlenecks_stride_in_the_three_by_three():
    model = ResNet(50)
    assert sum(p.numel() for p in model.parameters()) == 25_557_032  # torchvision's
    assert model.out_channels == 2048
    first = model.layer2[0]
    assert (first.conv1.stride, first.conv2.stride, first.conv3.stride) == ((1, 1), (2, 2), (1, 1))
    assert first.downsample[0].stride == (2, 2)
    assert model.layer1[0].downsample is not None  # 64 -> 256 channels at stride 1
    assert model.layer1[0].downsample[0].stride == (1, 1)
    assert [len(layer) for layer in _layers(model)] == [3, 4, 6, 3]


def _layers(model: ResNet) -> list[nn.Sequential]:
    return [model.layer1, model.layer2, model.layer3, model.layer4]


def test_initialisation():
    torch.manual_seed(0)
    model = ResNet(18)
    # Kaiming normal, fan_out, ReLU gain: std sqrt(2 / (out_channels · k²)).
    for conv, fan_out in ((model.conv1, 64 * 49), (model.layer4[1].conv1, 512 * 9)):
        assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / fan_out), rel=0.05)
    assert model.layer2[0].downsample[0].weight.std().item() == pytest.approx(
        math.sqrt(2 / 128), rel=0.05
    )
    # The classifier keeps PyTorch's default: uniform within 1/sqrt(fan_in).
    assert model.fc.weight.abs().max().item() <= 1 / math.sqrt(512)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    last = {id(block.bn2) for layer in _layers(model) for block in layer}
    for norm in norms:
        assert bool((norm.bias == 0).all())
        assert bool((norm.weight == (0 if id(norm) in last else 1)).all())


def test_zero_initialised_residuals_make_each_block_its_shortcut():
    model = ResNet(18).eval()
    x = torch.rand(1, 64, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(model.layer1(x), x)  # identity shortcuts, x >= 0
        block = model.layer2[0]
        shortcut = block.downsample[1](block.downsample[0](x))
        torch.testing.assert_close(block(x), torch.relu(shortcut))
    resnet50 = ResNet(50).eval()
    bottleneck = resnet50.layer1[1]
    y = torch.rand(1, 256, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(bottleneck(y), y)
        first = resnet50.layer1[0]  # 64 -> 256 channels: a projected shortcut
        projected = first.downsample[1](first.downsample[0](x))
        torch.testing.assert_close(first(x), torch.relu(projected))


def test_blocks_and_freezing():
    model = ResNet(18, trainable_from="layer3")
    blocks = model.blocks()
    assert list(blocks) == ["stem", "layer1", "layer2", "layer3", "layer4", "classifier"]
    assert list(blocks["stem"]) == [model.conv1, model.bn1]
    assert blocks["layer2"] is model.layer2 and blocks["classifier"] is model.fc
    assert model.classifier is model.fc
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {
        name
        for name, _ in model.named_parameters()
        if name.split(".")[0] in ("conv1", "bn1", "layer1", "layer2")
    }


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(depth=19), r"^depth: expected one of \[18, 34, 50, 101, 152\], got 19$"),
        (dict(depth=18, num_classes=0), r"^num_classes: expected a positive int, got 0$"),
        (dict(depth=18, num_classes=2.0), r"^num_classes: expected a positive int, got 2.0$"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ResNet(**kwargs)


def test_one_class_is_accepted():
    assert ResNet(18, num_classes=1).fc.out_channels == 1


def test_blocks_default_to_stride_one_with_an_identity_shortcut():
    basic, bottleneck = BasicBlock(64, 64), Bottleneck(256, 64)
    assert basic.downsample is None and bottleneck.downsample is None
    with torch.no_grad():
        assert basic(torch.rand(1, 64, 6, 6)).shape == (1, 64, 6, 6)
        assert bottleneck(torch.rand(1, 256, 6, 6)).shape == (1, 256, 6, 6)


def test_the_default_depth_is_50():
    with torch.device("meta"):  # layers and shapes only: no storage, no initialisation work
        net = ResNet()
    assert net.depth == 50 and net.out_channels == 2048
    assert [len(getattr(net, f"layer{i}")) for i in range(1, 5)] == [3, 4, 6, 3]


def test_a_weights_file_reaches_the_loader(tmp_path):
    path = tmp_path / "w.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, path)
    with torch.device("meta"), pytest.raises(ValueError, match=r"does not match ResNet"):
        ResNet(18, weights=path)
