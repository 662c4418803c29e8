"""ResNets, VGG-16 and AlexNet: torchvision's architecture, key layout and classifier."""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F

from pyinstance.models import VGG16, AlexNet, ResNet, WeightsMismatchError

# Parameter counts of torchvision's models (1000 classes): the architectures must match.
TORCHVISION_PARAMETERS = {
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "resnet152": 60_192_808,
    "vgg16": 138_357_544,
    "alexnet": 61_100_840,
}


def _build(name: str, **kwargs) -> torch.nn.Module:  # noqa: ANN003
    if name.startswith("resnet"):
        return ResNet(int(name[len("resnet") :]), **kwargs)
    return {"vgg16": VGG16, "alexnet": AlexNet}[name](**kwargs)


@functools.cache
def _shared(name: str) -> torch.nn.Module:
    """One default-built model per name, for the tests that only read it (eval mode)."""
    return _build(name).eval()


def _torchvision_state(model: torch.nn.Module, fc_names: list[str]) -> dict[str, torch.Tensor]:
    """The model's state dict with its FC convolutions flattened back to Linear weights."""
    state = {k: v.clone() for k, v in model.state_dict().items()}
    for name in fc_names:
        state[f"{name}.weight"] = state[f"{name}.weight"].flatten(1)
    return state


@pytest.mark.parametrize("name", sorted(TORCHVISION_PARAMETERS))
def test_parameter_count_matches_torchvision(name: str) -> None:
    model = _shared(name)
    assert sum(p.numel() for p in model.parameters()) == TORCHVISION_PARAMETERS[name]


def test_torchvision_key_names() -> None:
    resnet = _shared("resnet50").state_dict()
    for key in [
        "conv1.weight",
        "bn1.running_var",
        "layer1.0.downsample.0.weight",
        "layer2.0.downsample.1.bias",
        "layer4.2.conv3.weight",
        "layer4.2.bn3.num_batches_tracked",
        "fc.weight",
        "fc.bias",
    ]:
        assert key in resnet
    vgg = set(_shared("vgg16").state_dict())
    convs = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
    expected = {f"features.{i}.{p}" for i in convs for p in ("weight", "bias")}
    expected |= {f"classifier.{i}.{p}" for i in (0, 3, 6) for p in ("weight", "bias")}
    assert vgg == expected
    alexnet = set(_shared("alexnet").state_dict())
    expected = {f"features.{i}.{p}" for i in (0, 3, 6, 8, 10) for p in ("weight", "bias")}
    expected |= {f"classifier.{i}.{p}" for i in (1, 4, 6) for p in ("weight", "bias")}
    assert alexnet == expected


@pytest.mark.parametrize(("depth", "channels"), [(18, 512), (34, 512), (50, 2048)])
@pytest.mark.parametrize(("height", "width"), [(32, 32), (129, 70)])
def test_resnet_shapes(depth: int, channels: int, height: int, width: int) -> None:
    model = _shared(f"resnet{depth}")
    with torch.no_grad():
        features, class_map = model.forward_with_class_map(torch.randn(1, 3, height, width))
    cells = (-(-height // 32), -(-width // 32))
    assert model.out_channels == channels
    assert features.shape == (1, channels, *cells)
    assert class_map.shape == (1, 1000, *cells)


def test_resnet_weights_round_trip_and_class_map(tmp_path) -> None:  # noqa: ANN001
    torch.manual_seed(0)
    source = ResNet(18).eval()
    for module in source.modules():  # non-trivial batch-norm statistics
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    state = _torchvision_state(source, ["fc"])
    assert state["fc.weight"].shape == (1000, 512)
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)
    loaded = ResNet(18, weights=path).eval()
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        features, class_map = loaded.forward_with_class_map(x)
        torch.testing.assert_close(features, source(x))
    logits = F.linear(features.mean(dim=(2, 3)), state["fc.weight"], state["fc.bias"])
    torch.testing.assert_close(class_map.mean(dim=(2, 3)), logits, rtol=1e-4, atol=1e-4)
    fresh = ResNet(18, weights=path, num_classes=5)  # transfer learning: fc skipped
    assert fresh.classifier.weight.shape == (5, 512, 1, 1)
    torch.testing.assert_close(fresh.layer3[0].conv1.weight, source.layer3[0].conv1.weight)


def test_mismatched_weights_name_the_keys(tmp_path) -> None:  # noqa: ANN001
    state = _torchvision_state(ResNet(18), ["fc"])
    del state["layer2.1.bn2.weight"]
    state["layer5.0.conv1.weight"] = torch.zeros(3)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(WeightsMismatchError, match=r"missing keys \(1\): layer2\.1\.bn2\.weight"):
        ResNet(18, weights=path)
    with pytest.raises(
        WeightsMismatchError, match=r"unexpected keys \(1\): layer5\.0\.conv1\.weight"
    ):
        ResNet(18, weights=path)
    with pytest.raises(WeightsMismatchError, match="missing keys"):
        ResNet(34, weights=path)  # a resnet18 file for a resnet34


def test_weights_errors_for_bad_files(tmp_path) -> None:  # noqa: ANN001
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        ResNet(18, weights=tmp_path / "nope.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read"):
        ResNet(18, weights=garbage)
    tensor = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), tensor)
    with pytest.raises(ValueError, match="does not hold a state dict"):
        ResNet(18, weights=tensor)
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"state_dict": _torchvision_state(ResNet(18), ["fc"]), "epoch": 3}, wrapped)
    ResNet(18, weights=wrapped)  # checkpoints that wrap the state dict load too


def _torchvision_classifier(
    name: str, state: dict[str, torch.Tensor], features: torch.Tensor
) -> torch.Tensor:
    """torchvision's last max-pool, average pool, flatten and fc6-fc8 (eval mode)."""
    if name == "vgg16":
        x = F.adaptive_avg_pool2d(F.max_pool2d(features, 2, 2), 7)
        fc = (0, 3, 6)
    else:
        x = F.adaptive_avg_pool2d(F.max_pool2d(features, 3, 2), 6)
        fc = (1, 4, 6)
    x = x.flatten(1)
    for position, i in enumerate(fc):
        x = F.linear(x, state[f"classifier.{i}.weight"], state[f"classifier.{i}.bias"])
        if position < 2:
            x = F.relu(x)
    return x


@pytest.mark.parametrize(("name", "cells"), [("vgg16", 14), ("alexnet", 13)])
def test_fcn_class_map_holds_the_original_classifier_output(name: str, cells: int) -> None:
    torch.manual_seed(0)
    model = _build(name).eval()
    fc = (
        ["classifier.0", "classifier.3", "classifier.6"]
        if name == "vgg16"
        else ["classifier.1", "classifier.4", "classifier.6"]
    )
    state = _torchvision_state(model, fc)
    for key in state:  # small weights keep 16 layers of random ReLU nets well scaled
        if key.startswith("classifier") and key.endswith("weight"):
            state[key] = state[key] * 0.1
    model.load_state_dict({k: v.reshape(model.state_dict()[k].shape) for k, v in state.items()})
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        features, class_map = model.forward_with_class_map(x)
        expected = _torchvision_classifier(name, state, features)
    assert features.shape[-2:] == (cells, cells) and class_map.shape == (1, 1000, cells, cells)
    torch.testing.assert_close(class_map[:, :, 6, 6], expected, rtol=1e-3, atol=1e-4)


def test_alexnet_weights_round_trip(tmp_path) -> None:  # noqa: ANN001
    source = AlexNet().eval()
    path = tmp_path / "alexnet.pth"
    torch.save(_torchvision_state(source, ["classifier.1", "classifier.4", "classifier.6"]), path)
    loaded = AlexNet(weights=path).eval()
    for (key, a), b in zip(source.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), key


@pytest.mark.parametrize(
    ("name", "block", "frozen", "trainable"),
    [
        (
            "resnet18",
            "layer3",
            ["conv1.weight", "bn1.bias", "layer2.1.conv2.weight"],
            ["layer3.0.conv1.weight", "layer4.1.bn2.weight", "fc.weight"],
        ),
        (
            "vgg16",
            "conv4",
            ["features.0.weight", "features.14.bias"],
            ["features.17.weight", "features.28.bias", "classifier.0.weight"],
        ),
        (
            "alexnet",
            "classifier",
            ["features.10.weight"],
            ["classifier.1.weight", "classifier.6.bias"],
        ),
    ],
)
def test_trainable_from(name: str, block: str, frozen: list[str], trainable: list[str]) -> None:
    model = _build(name, trainable_from=block)
    grad = {key: p.requires_grad for key, p in model.named_parameters()}
    assert all(not grad[key] for key in frozen)
    assert all(grad[key] for key in trainable)
    # exactly the blocks below are frozen: nothing else anywhere
    names = list(model.blocks())
    below = names[: names.index(block)]
    frozen_ids = {id(p) for b in below for p in model.blocks()[b].parameters()}
    assert all(p.requires_grad == (id(p) not in frozen_ids) for p in model.parameters())


def test_frozen_batch_norm_stays_in_eval_mode() -> None:
    model = ResNet(18, trainable_from="layer4")
    model.train()
    assert not model.bn1.training and not model.layer3[1].bn2.training
    assert model.layer4[0].bn1.training
    before = model.layer2[0].bn1.running_mean.clone()
    model(torch.randn(2, 3, 64, 64))
    assert torch.equal(model.layer2[0].bn1.running_mean, before)
    model.set_trainable_from(None)
    assert all(p.requires_grad for p in model.parameters()) and model.bn1.training


def test_unknown_block_and_bad_constructor_arguments() -> None:
    with pytest.raises(ValueError, match=r"trainable_from: unknown block 'layer9'.*layer4"):
        ResNet(18, trainable_from="layer9")
    with pytest.raises(ValueError, match="depth"):
        ResNet(20)
    with pytest.raises(ValueError, match="num_classes"):
        VGG16(num_classes=0)
    with pytest.raises(ValueError, match="num_classes"):
        AlexNet(num_classes=-1)


@pytest.mark.parametrize(("name", "minimum"), [("alexnet", 31), ("vgg16", 16), ("resnet18", 32)])
def test_minimum_input_size(name: str, minimum: int) -> None:
    model = _shared(name)
    assert model.min_input_size == minimum
    with torch.no_grad():
        features, class_map = model.forward_with_class_map(torch.randn(1, 3, minimum, minimum + 5))
    assert features.shape[-2] >= 1 and class_map.shape[-2:] == features.shape[-2:]
    with pytest.raises(ValueError, match=f"at least {minimum} pixels"):
        model(torch.randn(1, 3, minimum - 1, 64))
