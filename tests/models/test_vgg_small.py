"""VGG-16 and AlexNet (models/vgg.py) without building their 138 M / 61 M parameters.

The full networks are built on the ``meta`` device (layers and shapes, no storage, no
initialisation work): their layer tables are compared with torchvision's published
configurations, written out here. The shared loading, initialisation and block naming of
``_TorchvisionLayout`` run on a tiny real subclass with hand-worked answers. Written for
mutation testing: fast, every network built by the test itself.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pyinstance.models import WeightsMismatchError
from pyinstance.models.fcn import PooledDilatedConv
from pyinstance.models.vgg import VGG16, AlexNet, _TorchvisionLayout

META = torch.device("meta")


def _describe(layer: nn.Module) -> tuple:
    """A layer as the facts torchvision's configuration fixes (type first)."""
    if type(layer) is PooledDilatedConv:
        return (
            "fc-conv",
            layer.in_channels,
            layer.out_channels,
            layer.kernel_size,
            layer.dilation,
            layer.pool,
        )
    if type(layer) is nn.Conv2d:
        return (
            "conv",
            layer.in_channels,
            layer.out_channels,
            layer.kernel_size,
            layer.stride,
            layer.padding,
            layer.bias is not None,
        )
    if type(layer) is nn.ReLU:
        return ("relu",)
    if type(layer) is nn.MaxPool2d:
        return ("pool", layer.kernel_size, layer.stride, layer.padding)
    if type(layer) is nn.Dropout:
        return ("dropout", layer.p)
    raise AssertionError(f"unexpected layer {layer!r}")


def _conv(inp: int, out: int, k: int, stride: int = 1, pad: int = 0) -> tuple:
    return ("conv", inp, out, (k, k), (stride, stride), (pad, pad), True)


# torchvision's VGG-16 ("configuration D"), without its final max-pool
_VGG16_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]


def _vgg16_features() -> list[tuple]:
    layers, inp = [], 3
    for entry in _VGG16_CFG:
        if entry == "M":
            layers.append(("pool", 2, 2, 0))
        else:
            layers += [_conv(inp, entry, 3, pad=1), ("relu",)]
            inp = entry
    return layers


def test_vgg16_layers_are_torchvision_s():
    with META:
        net = VGG16(num_classes=7)
    assert [_describe(layer) for layer in net.features] == _vgg16_features()
    assert len(net.features) == 30
    assert net._block_ends == (4, 9, 16, 23, 30)
    assert [_describe(layer) for layer in net.classifier] == [
        ("fc-conv", 512, 4096, (7, 7), (2, 2), 2),
        ("relu",),
        ("dropout", 0.5),
        _conv(4096, 4096, 1),
        ("relu",),
        ("dropout", 0.5),
        _conv(4096, 7, 1),
    ]
    assert net.num_classes == 7
    assert (net.out_channels, net.out_stride, net.min_input_size) == (512, 16, 16)
    assert net._fc_names == ("0", "3", "6") and net._fc6_kernel == 7


def test_vgg16_defaults_and_feature_map():
    with META:
        net = VGG16()
    assert net.num_classes == 1000 and net.classifier[6].out_channels == 1000
    assert all(p.requires_grad for p in net.parameters())
    features = net.forward_features(torch.empty(2, 3, 64, 97, device=META))
    assert features.shape == (2, 512, 4, 6)  # four 2×2 pools: 64 → 4, 97 → 6
    assert net.classifier(features).shape == (2, 1000, 4, 6)  # same size: pooled, dilated


def test_vgg16_blocks_are_its_conv_stages():
    with META:
        net = VGG16()
    blocks = net.blocks()
    assert list(blocks) == ["conv1", "conv2", "conv3", "conv4", "conv5", "classifier"]
    layers = list(net.features)
    assert list(blocks["conv1"]) == layers[0:4]
    assert list(blocks["conv2"]) == layers[4:9]
    assert list(blocks["conv5"]) == layers[23:30]
    assert blocks["classifier"] is net.classifier


def test_vgg16_freezing():
    with META:
        net = VGG16(trainable_from="conv4")
    frozen = {name for name, p in net.named_parameters() if not p.requires_grad}
    # conv1 and conv2 (features 0-8) and conv3 (9-15) frozen: the convolutions 0, 2, 5, 7, 10, 12, 14
    assert frozen == {
        f"features.{i}.{p}" for i in (0, 2, 5, 7, 10, 12, 14) for p in ("weight", "bias")
    }


def _mismatch_file(tmp_path, entries: dict[str, torch.Tensor]):
    path = tmp_path / "w.pth"
    torch.save(entries, path)
    return path


def test_vgg16_reads_a_weights_file_with_its_fc_layout(tmp_path):
    # fc6 and fc7 as torchvision's Linear weights: reshaped with kernel 7 and 1 before the
    # shapes are compared, so the message shows the converted (wrong) shapes
    path = _mismatch_file(
        tmp_path,
        {"classifier.0.weight": torch.zeros(2, 98), "classifier.3.weight": torch.zeros(3, 4)},
    )
    with META, pytest.raises(WeightsMismatchError) as raised:
        VGG16(weights=path)
    message = str(raised.value)
    assert "missing keys (30): " in message and "classifier.6.bias" in message
    assert message.endswith(
        "shape mismatches (2): classifier.0.weight (file (2, 2, 7, 7), model (4096, 512, 7, 7)), "
        "classifier.3.weight (file (3, 4, 1, 1), model (4096, 4096, 1, 1))"
    )
    # another class count: the file's fc8 is skipped on both sides
    with META, pytest.raises(WeightsMismatchError) as raised:
        VGG16(weights=path, num_classes=5)
    assert "missing keys (28): " in str(raised.value)
    assert "classifier.6" not in str(raised.value)


@pytest.mark.parametrize("network", [VGG16, AlexNet])
@pytest.mark.parametrize("num_classes", [0, -2, 3.0, "4"])
def test_bad_class_counts_are_refused(network, num_classes):
    with META, pytest.raises(ValueError) as raised:
        network(num_classes=num_classes)
    assert str(raised.value) == f"num_classes: expected a positive int, got {num_classes!r}"


def test_one_class_is_accepted():
    with META:
        assert VGG16(num_classes=1).classifier[6].out_channels == 1
        assert AlexNet(num_classes=1).classifier[6].out_channels == 1


def test_alexnet_layers_are_torchvision_s():
    with META:
        net = AlexNet(num_classes=3)
    assert [_describe(layer) for layer in net.features] == [
        _conv(3, 64, 11, stride=4, pad=2),
        ("relu",),
        ("pool", 3, 2, 0),
        _conv(64, 192, 5, pad=2),
        ("relu",),
        ("pool", 3, 2, 0),
        _conv(192, 384, 3, pad=1),
        ("relu",),
        _conv(384, 256, 3, pad=1),
        ("relu",),
        _conv(256, 256, 3, pad=1),
        ("relu",),
    ]
    assert [_describe(layer) for layer in net.classifier] == [
        ("dropout", 0.5),
        ("fc-conv", 256, 4096, (6, 6), (2, 2), 3),
        ("relu",),
        ("dropout", 0.5),
        _conv(4096, 4096, 1),
        ("relu",),
        _conv(4096, 3, 1),
    ]
    assert net.num_classes == 3
    assert net._block_ends == (2, 5, 8, 10, 12)
    assert (net.out_channels, net.out_stride, net.min_input_size) == (256, 16, 31)
    assert net._fc_names == ("1", "4", "6") and net._fc6_kernel == 6


def test_alexnet_feature_map_blocks_and_freezing():
    with META:
        net = AlexNet(trainable_from="conv3")
    # 100: conv 11/4 pad 2 -> 24, pool 3/2 -> 11, conv 5 pad 2 -> 11, pool -> 5
    # 90: -> 21, -> 10, -> 10, -> 4
    assert net.forward_features(torch.empty(1, 3, 100, 90, device=META)).shape == (1, 256, 5, 4)
    blocks = net.blocks()
    assert list(blocks) == ["conv1", "conv2", "conv3", "conv4", "conv5", "classifier"]
    assert [len(blocks[f"conv{i}"]) for i in range(1, 6)] == [2, 3, 3, 2, 2]
    assert list(blocks["conv2"]) == list(net.features)[2:5]
    frozen = {name for name, p in net.named_parameters() if not p.requires_grad}
    assert frozen == {f"features.{i}.{p}" for i in (0, 3) for p in ("weight", "bias")}
    assert net.classifier[6].out_channels == 1000


def test_alexnet_reads_a_weights_file_with_its_fc_layout(tmp_path):
    path = _mismatch_file(tmp_path, {"classifier.1.weight": torch.zeros(2, 72)})
    with META, pytest.raises(WeightsMismatchError) as raised:
        AlexNet(weights=path)
    message = str(raised.value)
    assert "missing keys (15): " in message and "classifier.6.weight" in message
    assert message.endswith(
        "shape mismatches (1): classifier.1.weight (file (2, 2, 6, 6), model (4096, 256, 6, 6))"
    )
    with META, pytest.raises(WeightsMismatchError, match=r"missing keys \(13\): "):
        AlexNet(weights=path, num_classes=9)


class _Tiny(_TorchvisionLayout):
    """Three small conv blocks and an fc6-fc8 classifier (fc6 over a 3×3 grid)."""

    out_channels = 8
    out_stride = 2
    min_input_size = 2
    _fc_names = ("0", "2", "4")
    _fc6_kernel = 3

    def __init__(self, *, weights=None, num_classes=1000, trainable_from=None):
        super().__init__()
        self.num_classes = num_classes
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 64, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2, 2),
            nn.Conv2d(64, 8, 1),
            nn.ReLU(),
        )
        self._block_ends = (2, 5, 7)
        self.classifier = nn.Sequential(
            PooledDilatedConv(8, 6, 3, pool=2),
            nn.ReLU(),
            nn.Conv2d(6, 6, 1),
            nn.ReLU(),
            nn.Conv2d(6, num_classes, 1),
        )
        self._finish(weights, trainable_from)


def test_convolutions_are_kaiming_fan_out_with_zero_bias():
    torch.manual_seed(0)
    net = _Tiny()
    wide = net.features[2].weight  # 64 × 16 × 3 × 3: fan_out 576, fan_in 144
    assert abs(float(wide.detach().std()) / (2 / 576) ** 0.5 - 1) < 0.05
    assert abs(float(wide.detach().mean())) < 0.005
    small = net.features[5].weight  # 8 × 64 × 1 × 1: fan_out 8, std 0.5
    assert abs(float(small.detach().std()) / 0.5 - 1) < 0.15
    for index in (0, 2, 5):
        assert torch.equal(net.features[index].bias, torch.zeros_like(net.features[index].bias))
    # the classifier keeps PyTorch's default initialisation (biases drawn, not zero)
    assert all(bool(net.classifier[i].bias.abs().sum() > 0) for i in (0, 2, 4))
    assert float(net.classifier[2].weight.detach().abs().max()) <= 1 / 6**0.5


def _torchvision_state(net: _Tiny) -> dict[str, torch.Tensor]:
    state = {key: value.clone() for key, value in net.state_dict().items()}
    for index in ("0", "2", "4"):
        key = f"classifier.{index}.weight"
        state[key] = state[key].flatten(1)  # torchvision's Linear layout
    return state


def test_weights_load_with_linear_fc_layers(tmp_path):
    torch.manual_seed(1)
    source = _Tiny()
    for parameter in source.parameters():  # non-zero biases everywhere
        parameter.data.uniform_(-1, 1)
    path = tmp_path / "tiny.pth"
    torch.save(_torchvision_state(source), path)
    assert torch.load(path)["classifier.0.weight"].shape == (6, 72)
    torch.manual_seed(2)
    loaded = _Tiny(weights=path)
    for key, value in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    x = torch.randn(1, 3, 6, 8)
    torch.testing.assert_close(loaded.forward_features(x), source.features(x))
    fresh = _Tiny(weights=path, num_classes=4)  # transfer learning: fc8 skipped
    assert fresh.classifier[4].weight.shape == (4, 6, 1, 1)
    assert torch.equal(fresh.classifier[0].weight, source.classifier[0].weight)
    assert torch.equal(fresh.features[5].bias, source.features[5].bias)


def test_weights_without_the_fc8_of_another_class_count_still_load(tmp_path):
    # num_classes 1000: nothing is skipped, so a file without fc8 is refused
    torch.manual_seed(3)
    state = _torchvision_state(_Tiny())
    del state["classifier.4.weight"], state["classifier.4.bias"]
    path = tmp_path / "no-fc8.pth"
    torch.save(state, path)
    with pytest.raises(WeightsMismatchError, match=r"missing keys \(2\): classifier\.4\.bias"):
        _Tiny(weights=path)
    assert _Tiny(weights=path, num_classes=2).classifier[4].out_channels == 2


def test_blocks_forward_and_freezing_of_the_shared_layout():
    torch.manual_seed(4)
    net = _Tiny(num_classes=2, trainable_from="conv3")
    blocks = net.blocks()
    assert list(blocks) == ["conv1", "conv2", "conv3", "classifier"]
    layers = list(net.features)
    assert [list(blocks[name]) for name in ("conv1", "conv2", "conv3")] == [
        layers[0:2],
        layers[2:5],
        layers[5:7],
    ]
    assert blocks["classifier"] is net.classifier
    trainable = {name for name, p in net.named_parameters() if p.requires_grad}
    assert trainable == {
        f"{part}.{p}"
        for part in ("features.5", "classifier.0", "classifier.2", "classifier.4")
        for p in ("weight", "bias")
    }
    x = torch.randn(2, 3, 6, 4)
    features = net.forward_features(x)
    assert features.shape == (2, 8, 3, 2)
    torch.testing.assert_close(features, net.features(x))
