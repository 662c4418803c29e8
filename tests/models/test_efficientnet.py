"""EfficientNet-Lite0/1/2: really pretrained, TF "same" padding, FCN classifier, weight loading."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import pyinstance
from pyinstance.data import image_tensor, normalize, resize, scaled_size
from pyinstance.models import EfficientNetLite0, WeightsMismatchError
from pyinstance.models.efficientnet import (
    LITE_VARIANTS,
    EfficientNetLite,
    EfficientNetLite1,
    EfficientNetLite2,
    SameConv2d,
    pretrained_weights_path,
)

CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
ESPRESSO, CUP = 967, 968


@pytest.fixture(scope="module")
def pretrained() -> EfficientNetLite0:
    return EfficientNetLite0().eval()


def _classify(model: EfficientNetLite, photo) -> torch.Tensor:  # noqa: ANN001
    image = image_tensor(photo)
    image = resize(image, scaled_size(*image.shape[1:], model.variant.resolution))
    batch = normalize(image[None], model.input_mean, model.input_std)
    with torch.no_grad():
        _, class_map = model.forward_with_class_map(batch)
    return class_map.mean(dim=(2, 3))[0].softmax(0)


def test_real_photos_get_their_imagenet_class(pretrained: EfficientNetLite0) -> None:
    data = pytest.importorskip("skimage.data", reason="scikit-image ships the CC0 sample photos")
    cat = _classify(pretrained, data.chelsea())  # Chelsea the cat, CC0
    coffee = _classify(pretrained, data.coffee())  # an espresso cup, CC0
    assert int(cat.argmax()) in CAT_CLASSES
    assert float(cat[list(CAT_CLASSES)].sum()) > 0.5
    assert int(coffee.argmax()) in (ESPRESSO, CUP)


def test_random_init_is_not_pretrained(pretrained: EfficientNetLite0) -> None:
    random = EfficientNetLite0(pretrained=False)
    assert not torch.equal(random._conv_stem.weight, pretrained._conv_stem.weight)


def test_features_and_class_map_shapes_for_any_size(pretrained: EfficientNetLite0) -> None:
    for height, width in [(32, 32), (65, 97), (130, 100)]:
        with torch.no_grad():
            features, class_map = pretrained.forward_with_class_map(
                torch.randn(1, 3, height, width)
            )
        expected = (math.ceil(height / 32), math.ceil(width / 32))
        assert features.shape == (1, 1280, *expected)
        assert class_map.shape == (1, 1000, *expected)
        # the class map is the FC applied at every location: its mean is the classic logits
        logits = F.linear(
            features.mean(dim=(2, 3)), pretrained._fc.weight.flatten(1), pretrained._fc.bias
        )
        torch.testing.assert_close(class_map.mean(dim=(2, 3)), logits, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    ("size", "kernel", "stride"), [(7, 3, 2), (8, 3, 2), (9, 5, 2), (10, 5, 1)]
)
def test_same_conv_matches_tensorflow_same_padding(size: int, kernel: int, stride: int) -> None:
    torch.manual_seed(0)
    conv = SameConv2d(2, 3, kernel, stride=stride)
    x = torch.randn(1, 2, size, size + 1)
    out = conv(x)
    assert out.shape[-2:] == (math.ceil(size / stride), math.ceil((size + 1) / stride))
    pads = []
    for n in (size + 1, size):  # TF: total pad split floor before, rest after
        total = max((math.ceil(n / stride) - 1) * stride + kernel - n, 0)
        pads += [total // 2, total - total // 2]
    expected = F.conv2d(F.pad(x, pads), conv.weight, stride=stride)
    torch.testing.assert_close(out, expected)


def test_other_num_classes_keeps_backbone_weights(pretrained: EfficientNetLite0) -> None:
    model = EfficientNetLite0(num_classes=7)
    assert model.classifier.weight.shape == (7, 1280, 1, 1)
    torch.testing.assert_close(model._conv_head.weight, pretrained._conv_head.weight)


def test_weights_file_must_match(tmp_path, pretrained: EfficientNetLite0) -> None:  # noqa: ANN001
    state = torch.load(pretrained_weights_path(), map_location="cpu", weights_only=True)
    del state["_blocks.3._bn1.running_var"]
    state["_blocks.99._depthwise_conv.weight"] = torch.zeros(1)
    state["_conv_stem.weight"] = torch.zeros(16, 3, 3, 3)
    path = tmp_path / "broken.pth"
    torch.save(state, path)
    with pytest.raises(WeightsMismatchError) as info:
        EfficientNetLite0(weights=path)
    message = str(info.value)
    assert "_blocks.3._bn1.running_var" in message
    assert "_blocks.99._depthwise_conv.weight" in message
    assert "_conv_stem.weight (file (16, 3, 3, 3), model (32, 3, 3, 3))" in message


def test_trainable_from_freezes_lower_stages() -> None:
    model = EfficientNetLite0(pretrained=False, trainable_from="stage6")
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    stage6_first = sum((1, 2, 2, 3, 3))  # index of the first block of stage 6
    assert "_conv_stem.weight" in frozen
    assert f"_blocks.{stage6_first - 1}._project_conv.weight" in frozen
    assert f"_blocks.{stage6_first}._expand_conv.weight" not in frozen
    assert "_conv_head.weight" not in frozen and "_fc.weight" not in frozen
    model.train()
    assert not model._bn0.training and not model._blocks[0]._bn1.training
    assert model._blocks[stage6_first]._bn1.training


@pytest.fixture(scope="module", params=[EfficientNetLite1, EfficientNetLite2])
def larger(request) -> EfficientNetLite:  # noqa: ANN001
    return request.param().eval()


def test_larger_variants_recognise_real_photos(larger: EfficientNetLite) -> None:
    data = pytest.importorskip("skimage.data", reason="scikit-image ships the CC0 sample photos")
    cat = _classify(larger, data.chelsea())
    coffee = _classify(larger, data.coffee())
    assert int(cat.argmax()) in CAT_CLASSES
    assert float(cat[list(CAT_CLASSES)].sum()) > 0.5
    assert int(coffee.argmax()) in (ESPRESSO, CUP)


def test_larger_variants_shapes_and_stride(larger: EfficientNetLite) -> None:
    for height, width in [(32, 32), (97, 65)]:
        with torch.no_grad():
            features, class_map = larger.forward_with_class_map(torch.randn(1, 3, height, width))
        expected = (math.ceil(height / 32), math.ceil(width / 32))
        assert features.shape == (1, 1280, *expected)
        assert class_map.shape == (1, 1000, *expected)
    assert list(larger.blocks())[1:8] == [f"stage{n}" for n in range(1, 8)]


@pytest.mark.parametrize(
    ("variant", "repeats", "widths"),
    [
        ("lite0", (1, 2, 2, 3, 3, 4, 1), (16, 24, 40, 80, 112, 192, 320)),
        ("lite1", (1, 3, 3, 4, 4, 5, 1), (16, 24, 40, 80, 112, 192, 320)),
        ("lite2", (1, 3, 3, 4, 4, 5, 1), (16, 24, 48, 88, 120, 208, 352)),
    ],
)
def test_stage_tables_scale_like_tensorflow(variant: str, repeats: tuple, widths: tuple) -> None:
    stages = LITE_VARIANTS[variant].stages()
    assert tuple(s[0] for s in stages) == repeats
    assert tuple(s[5] for s in stages) == widths
    assert stages[0][4] == 32  # the stem stays 32 wide
    assert all(s[4] == previous[5] for previous, s in zip(stages, stages[1:], strict=False))


def test_each_variant_reads_its_own_weights() -> None:
    paths = {name: pretrained_weights_path(name) for name in LITE_VARIANTS}
    assert all(path.is_file() for path in paths.values())
    assert len(set(paths.values())) == 3
    # Lite1's file does not fit Lite2's architecture: the error names the mismatch
    with pytest.raises(WeightsMismatchError, match="does not match EfficientNetLite2"):
        EfficientNetLite2(weights=paths["lite1"])


def test_unknown_variant_is_refused() -> None:
    with pytest.raises(
        ValueError, match="variant: expected one of lite0, lite1, lite2, got 'lite3'"
    ):
        EfficientNetLite("lite3")
    with pytest.raises(ValueError, match="variant"):
        pretrained_weights_path("b0")


def test_registered_as_backbones() -> None:
    for name, cls in [
        ("efficientnet_lite0", EfficientNetLite0),
        ("efficientnet_lite1", EfficientNetLite1),
        ("efficientnet_lite2", EfficientNetLite2),
    ]:
        component = pyinstance.plugins.registry.component("backbone", name)
        assert component.plugin == "pyinstance.builtin.backbones"
        assert component.factory is cls
    model = pyinstance.get_backbone("efficientnet_lite2", pretrained=False, num_classes=5)
    assert isinstance(model, EfficientNetLite2) and model.classifier.out_channels == 5
