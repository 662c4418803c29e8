"""The engine interface, the eager torch engine and the traceable "same" padding, on tiny
modules with answers worked out independently (eager torch, ``math.ceil``)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pyinstance.engine import TorchEngine
from pyinstance.engine._traceable import _same_padding, traceable
from pyinstance.engine.base import (
    Engine,
    all_finite,
    check_threads,
    inference_network,
    torch_threads,
)
from pyinstance.models.efficientnet import SameConv2d
from pyinstance.models.pooling import GeM

from .conftest import TinyBackbone


class Doubling(Engine):
    """An engine whose network doubles its input; records the batches it ran."""

    name = "doubling"

    def __init__(self, backbone: nn.Module, device: str = "cpu", threads: int | None = None):
        super().__init__(backbone, "features", threads, torch.device(device))
        self.ran: list[torch.Tensor] = []

    def run(self, images: torch.Tensor) -> torch.Tensor:
        self.ran.append(images)
        return images * 2


class Sized(nn.Module):
    min_input_size = 8


def test_call_checks_then_runs_the_network() -> None:
    engine = Doubling(nn.Identity())
    images = torch.arange(12.0).reshape(1, 3, 2, 2)
    torch.testing.assert_close(engine(images), images * 2, rtol=0, atol=0)
    assert len(engine.ran) == 1 and engine.ran[0] is images
    with pytest.raises(ValueError, match="images: contains NaN"):
        engine(torch.full((1, 3, 2, 2), float("nan")))
    assert len(engine.ran) == 1  # a refused batch never reaches run()


def test_the_minimum_input_size_comes_from_the_backbone() -> None:
    assert Doubling(nn.Identity()).min_input_size == 1  # none declared: any size
    Doubling(nn.Identity())(torch.zeros(1, 3, 1, 1))
    engine = Doubling(Sized())
    assert engine.min_input_size == 8
    engine(torch.zeros(2, 3, 8, 8))  # exactly the minimum is enough
    for height, width in ((7, 8), (8, 7), (7, 30), (30, 7)):
        with pytest.raises(ValueError, match=f"images: {height}×{width} is smaller than .* 8"):
            engine(torch.zeros(1, 3, height, width))


def test_attributes_and_repr() -> None:
    engine = Doubling(nn.Identity(), threads=3)
    assert engine.output == "features" and engine.threads == 3
    assert engine.device == torch.device("cpu")
    assert repr(engine) == "Doubling(output='features', threads=3)"
    assert repr(TorchEngine(TinyBackbone(), GeM(16), threads=2)) == (
        "TorchEngine(output='descriptors', threads=2, channels_last=False)"
    )
    assert repr(TorchEngine(TinyBackbone(), output="features", channels_last=True)) == (
        "TorchEngine(output='features', threads=None, channels_last=True)"
    )


def test_a_batch_on_another_device_is_refused() -> None:
    engine = Doubling(nn.Identity(), device="meta")
    with pytest.raises(ValueError, match="images: the doubling engine runs on meta, got a .* cpu"):
        engine(torch.zeros(1, 3, 4, 4))


@pytest.mark.parametrize(
    ("images", "error", "match"),
    [
        (torch.zeros(3, 3, 3), ValueError, "images: expected a B×3×H×W"),
        (torch.zeros(1, 3, 2, 2, 1), ValueError, "images: expected a B×3×H×W"),
        (torch.zeros(1, 4, 2, 2), ValueError, "images: expected a B×3×H×W"),
        (torch.zeros(1, 3, 2, 2, dtype=torch.float16), TypeError, "images: expected dtype"),
        (torch.zeros(0, 3, 2, 2), ValueError, "images: empty batch"),
        ([[[[0.0]]]], TypeError, "images: expected a torch.Tensor, got list"),
    ],
)
def test_bad_batches_are_named(images, error, match) -> None:  # noqa: ANN001
    with pytest.raises(error, match=match):
        Doubling(nn.Identity())(images)


def test_one_image_of_one_pixel_is_a_batch() -> None:
    images = torch.full((1, 3, 1, 1), -0.5)
    torch.testing.assert_close(Doubling(nn.Identity())(images), images * 2, rtol=0, atol=0)


def test_all_finite() -> None:
    assert all_finite(torch.tensor([1.0, -2.0, 3e38, 3e38]))  # the sum overflows
    assert not all_finite(torch.tensor([1.0, float("nan")]))
    assert not all_finite(torch.tensor([3e38, 3e38, float("inf")]))


@pytest.mark.parametrize("threads", [None, 1, 2, 7])
def test_check_threads_gives_back_a_valid_count(threads) -> None:  # noqa: ANN001
    assert check_threads(threads) == threads


@pytest.mark.parametrize("threads", [0, -1, True, False, 2.0, "2"])
def test_check_threads_refuses_anything_else(threads) -> None:  # noqa: ANN001
    with pytest.raises(ValueError, match="threads: expected a positive int or None"):
        check_threads(threads)


def test_torch_threads_changes_and_restores_the_setting() -> None:
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        with torch_threads(2):
            assert torch.get_num_threads() == 2
        assert torch.get_num_threads() == 1
        with torch_threads(1):
            assert torch.get_num_threads() == 1
        with torch_threads(None):
            torch.set_num_threads(3)  # changed inside the block: restored after it
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_inference_network_is_the_backbone_or_backbone_then_head() -> None:
    backbone, head = TinyBackbone(), GeM(16)
    assert inference_network(backbone, head, "features") is backbone
    assert inference_network(backbone, None, "features") is backbone
    network = inference_network(backbone, head, "descriptors")
    assert isinstance(network, nn.Sequential) and list(network) == [backbone, head]
    with pytest.raises(ValueError, match="output: expected one of descriptors, features"):
        inference_network(backbone, head, "logits")
    with pytest.raises(TypeError, match="backbone: expected a torch.nn.Module, got str"):
        inference_network("tiny", head, "features")
    with pytest.raises(TypeError, match="head: output='descriptors' needs a head module"):
        inference_network(backbone, lambda x: x, "descriptors")


def _eager(backbone: nn.Module, head: nn.Module | None, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        features = backbone.eval()(images)
        return features if head is None else head.eval()(features)


def test_torch_engine_computes_the_modules_in_eval_mode_and_restores_their_modes() -> None:
    torch.manual_seed(3)
    backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Dropout(0.5))
    head = GeM(4)
    images = torch.randn(2, 3, 9, 7)
    expected = _eager(backbone, head, images)
    backbone.train()
    got = TorchEngine(backbone, head, threads=1)(images)  # dropout and batch statistics off
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    assert all(module.training for module in backbone.modules())
    head.eval()
    TorchEngine(backbone, head)(images)
    assert backbone.training and not head.training  # each module's own mode comes back


def test_torch_engine_features_are_contiguous_also_from_a_channels_last_copy() -> None:
    backbone = TinyBackbone()
    images = torch.randn(2, 3, 20, 12)
    engine = TorchEngine(backbone, output="features", channels_last=True)
    got = engine(images)
    assert engine.channels_last and got.is_contiguous()
    torch.testing.assert_close(got, _eager(backbone, None, images), rtol=1e-5, atol=1e-5)
    assert engine.network is not backbone  # a copy: the caller's modules keep their layout
    plain = TorchEngine(backbone, output="features")
    assert not plain.channels_last and plain.network is backbone


def test_torch_engine_follows_later_weight_changes_unless_channels_last() -> None:
    backbone, head = TinyBackbone(), GeM(16)
    images = torch.randn(1, 3, 16, 16)
    live, snapshot = TorchEngine(backbone, head), TorchEngine(backbone, head, channels_last=True)
    before = snapshot(images)
    with torch.no_grad():
        backbone.layers[0].weight.mul_(-1.0)
    torch.testing.assert_close(live(images), _eager(backbone, head, images), rtol=0, atol=0)
    torch.testing.assert_close(snapshot(images), before, rtol=0, atol=0)


def test_torch_engine_device_is_that_of_the_parameters() -> None:
    assert TorchEngine(nn.AvgPool2d(2), output="features").device == torch.device("cpu")
    meta = TorchEngine(nn.Conv2d(3, 2, 1).to("meta"), output="features")
    assert meta.device == torch.device("meta")


def test_torch_engine_runs_on_the_threads_it_was_given() -> None:
    seen: list[int] = []

    class Probe(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(torch.get_num_threads())
            return x

    before = torch.get_num_threads()
    wanted = 2 if before != 2 else 1
    TorchEngine(Probe(), output="features", threads=wanted)(torch.zeros(1, 3, 2, 2))
    TorchEngine(Probe(), output="features")(torch.zeros(1, 3, 2, 2))
    assert seen == [wanted, before] and torch.get_num_threads() == before


@pytest.mark.parametrize("stride", [1, 2, 3])
@pytest.mark.parametrize("kernel", [1, 2, 3, 5])
@pytest.mark.parametrize("size", [1, 2, 5, 6, 7, 17])
def test_same_padding_is_tensorflows(size, kernel, stride) -> None:  # noqa: ANN001
    expected = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    assert _same_padding(size, kernel, stride) == expected
    traced = _same_padding(torch.tensor(size), kernel, stride)
    assert isinstance(traced, torch.Tensor) and int(traced) == expected


def _tf_same_conv(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """TensorFlow "same": output ceil(size / stride), the odd pixel of padding after."""
    pads = []
    for size, kernel, stride in (
        (x.shape[3], conv.kernel_size[1], conv.stride[1]),
        (x.shape[2], conv.kernel_size[0], conv.stride[0]),
    ):
        total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
        pads += [total // 2, total - total // 2]
    return F.conv2d(F.pad(x, pads), conv.weight, conv.bias, conv.stride)


@pytest.mark.parametrize(
    ("kernel", "stride"), [(3, 2), (5, 2), (2, 1), (4, 3), (3, 1), (6, 1), (8, 2)]
)
def test_traceable_forward_computes_the_same_convolution(kernel, stride) -> None:  # noqa: ANN001
    torch.manual_seed(kernel * 10 + stride)
    conv = SameConv2d(3, 4, kernel, stride=stride)
    conv.weight.data = torch.randn_like(conv.weight)
    network = nn.Sequential(conv, nn.ReLU())
    images = [torch.randn(1, 3, 13, 8), torch.randn(2, 3, 6, 11)]
    with torch.no_grad():
        eager = [network(x) for x in images]
        with traceable(network) as patched:
            assert patched is network
            assert "forward" in vars(conv)
            traced = [network(x) for x in images]
        assert "forward" not in vars(conv)  # the class's forward again
        for x, want, got in zip(images, eager, traced, strict=True):
            expected = torch.relu(_tf_same_conv(conv, x))
            assert got.shape == expected.shape
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_traceable_leaves_an_instance_forward_alone() -> None:
    conv = SameConv2d(3, 2, 3, stride=2)

    def own(x: torch.Tensor) -> torch.Tensor:
        return x

    conv.forward = own
    with traceable(conv):
        assert conv.forward is own
    assert conv.forward is own


def test_torch_engine_takes_the_minimum_size_from_its_backbone() -> None:
    engine = TorchEngine(TinyBackbone(), GeM(16))
    assert engine.min_input_size == TinyBackbone.min_input_size == 8
    with pytest.raises(ValueError, match="images: 7×9 is smaller than the backbone's minimum"):
        engine(torch.zeros(1, 3, 7, 9))


def test_torch_engine_channels_last_copy_holds_channels_last_weights() -> None:
    engine = TorchEngine(TinyBackbone(), output="features", channels_last=True)
    weight = engine.network.layers[2].weight
    assert weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
