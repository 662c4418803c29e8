"""pyinstance.extract and aggregate_scales against expectations written here (Pillow, torch).

The expected descriptors never go through pyinstance's own image helpers: decoding is
Pillow, resizing ``torch.nn.functional.interpolate`` with the sizes worked out by hand,
normalisation the ImageNet constants written out, and the network a fixed probe whose
descriptors clearly differ between unrelated images.
"""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

import pyinstance
from pyinstance.data import ImageDecodeError, Manifest
from pyinstance.extraction import MAX_RESIZED_SIDE
from pyinstance.models.pooling import MAC, GeM

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Probe(nn.Module):
    """A fixed two-convolution network (stride 4, 32 signed channels), seeded weights."""

    out_channels = 32
    input_mean = IMAGENET_MEAN
    input_std = IMAGENET_STD
    min_input_size = 8

    def __init__(self) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(1234)
        self.conv1 = nn.Conv2d(3, 16, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, stride=2, padding=1)
        with torch.no_grad():
            for conv in (self.conv1, self.conv2):
                fan_in = conv.weight[0].numel()
                conv.weight.copy_(
                    torch.randn(conv.weight.shape, generator=generator) * (2.0 / fan_in) ** 0.5
                )
                conv.bias.copy_(torch.randn(conv.bias.shape, generator=generator) * 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(torch.relu(self.conv1(x)))


@pytest.fixture
def probe() -> tuple[nn.Module, nn.Module]:
    return Probe().eval(), GeM(32, p=3.0, learn_p=False).eval()


@pytest.fixture(scope="module")
def pairs(shared_data: Path) -> Manifest:
    return Manifest.read(shared_data / "opencv-pairs" / "manifest.csv")


def _expected(
    picture: Image.Image,
    size: tuple[int, int],
    backbone: nn.Module,
    head: nn.Module,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """The descriptor of ``picture`` resized to ``size`` (anti-aliased bilinear, in 8 bits
    like Pillow: 8-bit images are resized without leaving uint8).

    Normalised with the backbone's own constants (ImageNet's for the probe).
    """
    eight_bit = torch.from_numpy(np.array(picture.convert("RGB"))).permute(2, 0, 1)[None]
    pixels = (
        F.interpolate(eight_bit, size=size, mode="bilinear", antialias=True, align_corners=False)
        / 255.0
    )
    mean = torch.tensor(backbone.input_mean).view(1, 3, 1, 1)
    std = torch.tensor(backbone.input_std).view(1, 3, 1, 1)
    with torch.no_grad():
        return head(backbone(((pixels - mean) / std).to(dtype)))[0]


def _open(path: Path) -> Image.Image:
    with Image.open(path) as opened:
        return opened.convert("RGB")


def test_pretrained_descriptors_match_by_hand_and_find_the_opencv_pairs(pairs: Manifest) -> None:
    backbone = pyinstance.get_backbone("efficientnet_lite0").eval()
    head = pyinstance.get_head("gem", in_channels=backbone.out_channels).eval()
    descriptors = pyinstance.extract(
        pairs.paths, backbone, head, scales=(1.0, 0.75), max_side=128, batch_size=3, progress=False
    )
    assert descriptors.shape == (16, 2, 1280) and descriptors.dtype == torch.float32
    torch.testing.assert_close(descriptors.norm(dim=2), torch.ones(16, 2))
    box = _open(pairs.paths[0])  # box.png, 223×324 (PNG: decoded at full size)
    # 128 · 223/324 = 88.10 -> 88; 96 · 223/324 = 66.07 -> 66
    torch.testing.assert_close(descriptors[0, 0], _expected(box, (88, 128), backbone, head))
    torch.testing.assert_close(descriptors[0, 1], _expected(box, (66, 96), backbone, head))
    merged = pyinstance.aggregate_scales(descriptors)
    is_query = np.array([e.split == "query" for e in pairs])
    ids = np.array(pairs.instance_ids)
    nearest = (merged[is_query] @ merged[~is_query].T).argmax(dim=1).numpy()
    correct = (ids[~is_query][nearest] == ids[is_query]).sum()
    assert correct >= 5, f"only {correct}/7 queries find their reference"  # 6/7 measured


def test_probe_descriptors_tell_unrelated_images_apart(pairs: Manifest, probe) -> None:  # noqa: ANN001
    backbone, head = probe
    references = pairs.filter(split="reference").paths  # nine different objects
    out = pyinstance.extract(references, backbone, head, max_side=96, progress=False)[:, 0]
    others = ~torch.eye(len(references), dtype=torch.bool)
    similarity = (out @ out.T)[others]
    largest_entry_gap = (out[:, None] - out[None]).abs().amax(dim=2)[others]
    # measured: cosine at most 0.990 (0.90 on average), entries apart by 0.066 at least
    assert float(similarity.max()) < 0.995 and float(similarity.mean()) < 0.95
    assert float(largest_entry_gap.min()) > 0.05


@pytest.mark.parametrize(
    ("max_side", "scale", "size_multiple", "expected"),
    [
        (100, 1.0, None, (69, 100)),  # 100 · 223/324 = 68.83: to nearest, not down
        (101, 1.0, None, (70, 101)),  # 69.52 -> 70
        (100, 0.75, None, (52, 75)),  # 75 · 223/324 = 51.62 -> 52
        (100, 1.0, 32, (64, 96)),  # 69/32 = 2.16 -> 2; 100/32 = 3.13 -> 3
        (120, 1.0, 32, (96, 128)),  # 82.59 -> 83, 83/32 = 2.59 -> 3; 120/32 = 3.75 -> 4
        (40, 1.0, 32, (32, 32)),  # 27.53 -> 28 -> at least one multiple
    ],
)
def test_resized_sizes_round_to_nearest(
    pairs: Manifest,
    probe,  # noqa: ANN001
    max_side: int,
    scale: float,
    size_multiple: int | None,
    expected: tuple[int, int],
) -> None:
    backbone, head = probe
    path = pairs.paths[0]  # box.png, 223×324
    box = _open(path)
    assert (box.height, box.width) == (223, 324)
    out = pyinstance.extract(
        [path, box],
        backbone,
        head,
        scales=(scale,),
        max_side=max_side,
        size_multiple=size_multiple,
        progress=False,
    )
    want = _expected(box, expected, backbone, head)
    torch.testing.assert_close(out[0, 0], want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out[1, 0], want, rtol=1e-5, atol=1e-6)


def test_jpeg_files_are_decoded_in_draft_mode_at_the_largest_scale(pairs: Manifest, probe) -> None:  # noqa: ANN001
    backbone, head = probe
    path = pairs.paths[8]  # aloeL.jpg, 1110×1282: a 1/2 draft keeps twice 300 px
    assert path.name == "aloeL.jpg"
    out = pyinstance.extract(
        [path], backbone, head, scales=(1.0, 0.5), max_side=300, progress=False
    )
    with Image.open(path) as opened:
        opened.draft("RGB", (600, 520))  # twice 300 × 260 (300 · 1110/1282 = 259.75 -> 260)
        reduced = opened.convert("RGB")
    assert reduced.size == (641, 555)  # ceil(1282/2), ceil(1110/2)
    torch.testing.assert_close(out[0, 0], _expected(reduced, (260, 300), backbone, head))
    torch.testing.assert_close(out[0, 1], _expected(reduced, (130, 150), backbone, head))
    full = _expected(_open(path), (260, 300), backbone, head)
    assert float(out[0, 0] @ full) > 0.999  # draft decoding barely changes the descriptor


def test_order_and_batching_do_not_change_descriptors(pairs: Manifest, probe) -> None:  # noqa: ANN001
    backbone, head = probe
    paths = pairs.paths[:6]
    kwargs = {"scales": (1.0, 0.5), "max_side": 96, "progress": False}
    one = pyinstance.extract(paths, backbone, head, batch_size=1, **kwargs)
    many = pyinstance.extract(paths[::-1], backbone, head, batch_size=np.int64(4), **kwargs)
    torch.testing.assert_close(many.flip(0), one, rtol=1e-5, atol=1e-6)


def test_every_input_kind_gives_the_same_descriptor(pairs: Manifest, probe) -> None:  # noqa: ANN001
    backbone, head = probe
    path = pairs.paths[2]  # graf1.png, 640×800
    pil = _open(path)
    array = np.asarray(pil)
    as_uint8 = torch.from_numpy(array.copy()).permute(2, 0, 1)
    kinds = [path, str(path), pil, array, as_uint8]
    out = pyinstance.extract(kinds, backbone, head, max_side=64, progress=False)
    want = _expected(pil, (51, 64), backbone, head)  # 64 · 640/800 = 51.2 -> 51
    for index in range(len(kinds)):
        torch.testing.assert_close(out[index, 0], want, rtol=1e-5, atol=1e-6)
    # Float images are resized in float: within the 8-bit rounding (1/255 a pixel) of it.
    floats = [[as_uint8.float() / 255], torch.stack([as_uint8.float() / 255] * 2)]
    for images in floats:
        got = pyinstance.extract(images, backbone, head, max_side=64, progress=False)[-1, 0]
        torch.testing.assert_close(got, want, rtol=0, atol=1e-3)
        assert not torch.equal(got, want)  # the float path, not the 8-bit one


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_reduced_precision_is_the_rounded_float32_result(probe, dtype: torch.dtype) -> None:  # noqa: ANN001
    backbone, head = probe
    generator = torch.Generator().manual_seed(5)
    images = [
        torch.rand(3, 50, 80, generator=generator),
        torch.rand(3, 81, 49, generator=generator),
    ]
    full = pyinstance.extract(images, backbone, head, max_side=64, progress=False)
    low = pyinstance.extract(images, backbone, head, max_side=64, dtype=dtype, progress=False)
    assert low.dtype == dtype
    # The network runs in float32 and only the output is rounded: half an ulp, relative.
    unit_roundoff = torch.finfo(dtype).eps / 2
    torch.testing.assert_close(
        low.float(), full, rtol=unit_roundoff, atol=torch.finfo(dtype).smallest_normal
    )
    assert torch.equal(low, full.to(dtype))


def test_float64_network_and_output_on_an_explicit_device(pairs: Manifest, probe) -> None:  # noqa: ANN001
    backbone, head = probe
    backbone, head = backbone.double(), head.double()
    box = _open(pairs.paths[0])
    out = pyinstance.extract(
        [box], backbone, head, max_side=100, dtype=torch.float64, device="cpu", progress=False
    )
    assert out.dtype == torch.float64
    want = _expected(box, (69, 100), backbone, head, dtype=torch.float64)
    # float32 pixels, then float64 arithmetic: agreement to float64 round-off
    torch.testing.assert_close(out[0, 0], want, rtol=1e-12, atol=1e-14)
    assert next(backbone.parameters()).dtype == torch.float64


def test_meta_device_is_refused_before_anything_moves(probe) -> None:  # noqa: ANN001
    backbone, head = probe
    weights = {key: value.clone() for key, value in backbone.state_dict().items()}
    with pytest.raises(ValueError, match="device: 'meta' tensors hold no values"):
        pyinstance.extract([torch.rand(3, 40, 40)], backbone, head, device="meta", progress=False)
    for key, value in backbone.state_dict().items():
        assert value.device.type == "cpu" and torch.equal(value, weights[key])
    assert next(head.parameters(), torch.empty(0)).device.type == "cpu"
    with pytest.raises(ValueError, match="device: expected a torch device, got 'gpu0'"):
        pyinstance.extract([torch.rand(3, 40, 40)], backbone, head, device="gpu0", progress=False)
    on_meta = Probe().to("meta")
    with pytest.raises(ValueError, match="backbone: its parameters are on the 'meta' device"):
        pyinstance.extract([torch.rand(3, 40, 40)], on_meta, head, progress=False)


@pytest.mark.cuda
def test_modules_return_to_their_device_after_an_error(probe, tmp_path: Path) -> None:  # noqa: ANN001
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    backbone, head = probe
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"not a jpeg")
    with pytest.raises(ImageDecodeError, match="corrupt.jpg"):
        pyinstance.extract(
            [torch.rand(3, 40, 40), corrupt], backbone, head, device="cuda", progress=False
        )
    assert next(backbone.parameters()).device.type == "cpu"
    out = pyinstance.extract([torch.rand(3, 40, 40)], backbone, head, device="cuda", progress=False)
    assert next(backbone.parameters()).device.type == "cuda" and out.device.type == "cpu"


def test_modes_are_restored_and_progress_is_shown(probe, capsys) -> None:  # noqa: ANN001
    backbone, head = probe
    backbone.train()
    head.eval()
    out = pyinstance.extract(
        [torch.rand(3, 40, 40)] * 3, backbone, head, max_side=40, progress=True
    )
    assert backbone.training and not head.training
    assert out.shape == (3, 1, 32)
    assert "extract" in capsys.readouterr().err


def test_aggregate_scales() -> None:
    torch.manual_seed(0)
    x = torch.nn.functional.normalize(torch.randn(4, 3, 8), dim=2)
    mean = pyinstance.aggregate_scales(x)
    torch.testing.assert_close(mean, torch.nn.functional.normalize(x.mean(1), dim=1))
    torch.testing.assert_close(pyinstance.aggregate_scales(x, "gem", p=1.0), mean)
    gem = pyinstance.aggregate_scales(x, "gem", p=3.0)
    powered = (x.sign() * x.abs() ** 3).mean(1)
    expected = torch.nn.functional.normalize(powered.sign() * powered.abs() ** (1 / 3), dim=1)
    torch.testing.assert_close(gem, expected)
    torch.testing.assert_close(pyinstance.aggregate_scales(x[:, :1]), x[:, 0])
    half = pyinstance.aggregate_scales(x.half())
    assert half.dtype == torch.float16 and torch.isfinite(half).all()
    with pytest.raises(ValueError, match="method"):
        pyinstance.aggregate_scales(x, "max")
    with pytest.raises(ValueError, match="N×S×D"):
        pyinstance.aggregate_scales(x[0])
    with pytest.raises(ValueError, match="no scales"):
        pyinstance.aggregate_scales(x[:, :0])
    with pytest.raises(ValueError, match="p: expected"):
        pyinstance.aggregate_scales(x, "gem", p=0.0)


def _gem_reference(x: np.ndarray, p: int) -> np.ndarray:
    """Sign-preserving GeM over scales, exact (fractions) up to the final root; normalised."""
    rows = []
    for image in x:
        pooled = []
        for column in image.T:
            powered = sum(
                (Fraction(abs(float(v))) ** p * (1 if v >= 0 else -1) for v in column),
                Fraction(0),
            ) / len(column)
            # |m|^(1/p) from the logs of the exact numerator and denominator: no overflow
            log_root = (math.log(abs(powered.numerator)) - math.log(powered.denominator)) / p
            pooled.append((1.0 if powered > 0 else -1.0) * math.exp(log_root) if powered else 0.0)
        row = np.array(pooled)
        rows.append(row / np.linalg.norm(row))
    return np.stack(rows)


@pytest.mark.parametrize(
    ("magnitude", "p"),
    [(1e30, 3), (1e-30, 3), (1.0, 1000), (3e38, 3), (1e-40, 3), (3e38, 1000)],
)
def test_aggregate_scales_is_stable_at_extreme_magnitudes(magnitude: float, p: int) -> None:
    rng = np.random.default_rng(3)
    unit = rng.uniform(-1.0, 1.0, size=(2, 3, 5))
    unit[:, :, 0] = np.abs(unit[:, :, 0])  # one all-positive dimension per image
    x = torch.from_numpy(unit * magnitude).float()
    assert torch.isfinite(x).all() and (x != 0).all()
    gem = pyinstance.aggregate_scales(x, "gem", p=p)
    mean = pyinstance.aggregate_scales(x, "mean")
    assert gem.dtype == torch.float32 and mean.dtype == torch.float32
    expected_gem = _gem_reference(x.double().numpy(), p)
    means = x.double().numpy().mean(axis=1)
    expected_mean = means / np.linalg.norm(means, axis=1, keepdims=True)
    np.testing.assert_allclose(gem.numpy(), expected_gem, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(mean.numpy(), expected_mean, rtol=1e-5, atol=1e-6)


def test_aggregate_scales_refuses_integers_and_non_finite_values() -> None:
    x = torch.ones(2, 3, 4)
    with pytest.raises(TypeError, match="descriptors: expected a floating-point tensor.*int64"):
        pyinstance.aggregate_scales(x.long())
    for bad in (float("nan"), float("inf"), -float("inf")):
        y = x.clone()
        y[1, 2, 3] = bad
        for method in ("mean", "gem"):
            with pytest.raises(ValueError, match="descriptors: contains NaN or infinite"):
                pyinstance.aggregate_scales(y, method)
    with pytest.raises(TypeError, match="p: expected a finite number > 0, got '3'"):
        pyinstance.aggregate_scales(x, "gem", p="3")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="p: expected"):
        pyinstance.aggregate_scales(x, "gem", p=True)
    with pytest.raises(ValueError, match="p: expected"):
        pyinstance.aggregate_scales(x, "gem", p=float("inf"))
    torch.testing.assert_close(
        pyinstance.aggregate_scales(x, "gem", p=np.float32(3.0)), torch.full((2, 4), 0.5)
    )
    with pytest.raises(ValueError, match="no dimensions"):
        pyinstance.aggregate_scales(x[:, :, :0])
    with pytest.raises(TypeError, match="N×S×D tensor, got list"):
        pyinstance.aggregate_scales([[[1.0]]])  # type: ignore[arg-type]
    zeros = pyinstance.aggregate_scales(torch.zeros(1, 2, 3), "gem")
    assert torch.equal(zeros, torch.zeros(1, 3))


def test_bad_files_name_the_file(tmp_path: Path, probe) -> None:  # noqa: ANN001
    backbone, head = probe
    good = torch.rand(3, 40, 40)
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        pyinstance.extract(
            [good, tmp_path / "missing.jpg"], backbone, head, max_side=40, progress=False
        )
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(ImageDecodeError, match="corrupt.png"):
        pyinstance.extract([corrupt], backbone, head, max_side=40, progress=False)
    whole = tmp_path / "whole.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (600, 800, 3), np.uint8)).save(whole)
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(whole.read_bytes()[:5000])
    with pytest.raises(ImageDecodeError, match="truncated.jpg"):  # decoded in draft mode
        pyinstance.extract([truncated], backbone, head, max_side=100, progress=False)


def test_names_are_refused_with_a_pointer_to_the_factories(probe) -> None:  # noqa: ANN001
    backbone, head = probe
    image = [torch.rand(3, 40, 40)]
    with pytest.raises(TypeError, match=r"backbone: .*name 'resnet7'.*pyinstance\.get_backbone"):
        pyinstance.extract(image, "resnet7", head, progress=False)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"head: .*name 'gem'.*pyinstance\.get_head\('gem', in"):
        pyinstance.extract(image, backbone, "gem", progress=False)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="head: expected an nn.Module, got int"):
        pyinstance.extract(image, backbone, 3, progress=False)  # type: ignore[arg-type]


def test_integer_arguments_follow_one_convention(probe) -> None:  # noqa: ANN001
    backbone, head = probe
    image = [torch.rand(3, 40, 40)]
    out = pyinstance.extract(
        image,
        backbone,
        head,
        max_side=np.int64(40),
        batch_size=np.int32(2),
        size_multiple=np.uint8(8),
        scales=np.array([1.0, 0.5]),
        progress=False,
    )
    assert out.shape == (1, 2, 32)
    for name in ("max_side", "batch_size", "size_multiple"):
        for bad in (True, np.bool_(True), 2.0, "4"):
            with pytest.raises(TypeError, match=f"{name}: expected a positive integer"):
                pyinstance.extract(image, backbone, head, progress=False, **{name: bad})
        with pytest.raises(ValueError, match=f"{name}: expected a positive integer"):
            pyinstance.extract(image, backbone, head, progress=False, **{name: 0})


def test_bad_arguments(probe) -> None:  # noqa: ANN001
    backbone, head = probe
    image = [torch.rand(3, 40, 40)]
    call = pyinstance.extract
    with pytest.raises(ValueError, match="empty"):
        call([], backbone, head, progress=False)
    with pytest.raises(TypeError, match="sequence of images"):
        call("a.jpg", backbone, head, progress=False)
    with pytest.raises(ValueError, match="N×3×H×W"):
        call(torch.rand(3, 40, 40), backbone, head, progress=False)
    for scales in [(), (0.0,), (-1.0,), (float("nan"),), ("1",), (True,)]:
        with pytest.raises(ValueError, match="scales: expected a non-empty sequence"):
            call(image, backbone, head, scales=scales, progress=False)
    for scales in [None, "1.0", {1.0}]:
        with pytest.raises(TypeError, match="scales: expected a non-empty sequence"):
            call(image, backbone, head, scales=scales, progress=False)
    with pytest.raises(
        ValueError, match=rf"scales: scale 1e\+06 .* above the limit of {MAX_RESIZED_SIDE}"
    ):
        call(image, backbone, head, scales=[1e6], progress=False)
    with pytest.raises(ValueError, match="max_side: expected a positive integer <= 16384"):
        call(image, backbone, head, max_side=10**9, progress=False)
    with pytest.raises(ValueError, match="minimum input size 8"):
        call(image, backbone, head, scales=(1.0, 0.1), max_side=64, progress=False)
    with pytest.raises(ValueError, match="dtype"):
        call(image, backbone, head, dtype=torch.int8, progress=False)
    with pytest.raises(ValueError, match="built for 64 input channels but the backbone gives 32"):
        call(image, backbone, GeM(64), progress=False)
    with pytest.raises(ValueError, match=r"images\[1\].*smaller than the backbone's minimum"):
        call(
            [torch.rand(3, 40, 40), torch.rand(3, 4, 400)],
            backbone,
            head,
            max_side=64,
            progress=False,
        )
    with pytest.raises(ValueError, match=r"images\[0\]: contains NaN"):
        call([torch.full((3, 40, 40), float("nan"))], backbone, head, max_side=40, progress=False)
    with pytest.raises(ValueError, match=r"images\[0\]: a float image must lie in \[0, 1\]"):
        call([torch.full((3, 40, 40), 200.0)], backbone, head, max_side=40, progress=False)


def test_aggregate_scales_scales_each_image_on_its_own() -> None:
    """Images of magnitudes 1e300 and 1e-300 in one float64 batch: each keeps its own
    direction (a batch-wide scaling would flush the small one to zero), for both methods;
    GeM's default exponent is 3."""
    big = torch.tensor([[3.0, 4.0], [3.0, 4.0]], dtype=torch.float64) * 1e300
    small = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64) * 1e-300
    x = torch.stack([big, small])
    expected = torch.tensor([[0.6, 0.8], [0.5**0.5, 0.5**0.5]], dtype=torch.float64)
    for method in ("mean", "gem"):
        torch.testing.assert_close(pyinstance.aggregate_scales(x, method), expected)
    # three scales; GeM p=3 per dimension: (mean of cubes)^(1/3) = (1/3)^(1/3), (2/3)^(1/3)
    y = torch.tensor([[[1.0, 1.0], [0.0, 1.0], [0.0, 0.0]]], dtype=torch.float64)
    cubes = torch.tensor([[(1 / 3) ** (1 / 3), (2 / 3) ** (1 / 3)]], dtype=torch.float64)
    torch.testing.assert_close(pyinstance.aggregate_scales(y, "gem"), cubes / cubes.norm())


class _Pixels(nn.Module):
    """A backbone without parameters: the normalised pixels are the feature map."""

    out_channels = 3
    out_stride = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def test_networks_without_parameters_run_in_float32() -> None:
    """Pure red through the identity and MAC: the channels' ImageNet-normalised values."""
    red = np.zeros((10, 10, 3), np.uint8)
    red[..., 0] = 255
    out = pyinstance.extract([red], _Pixels(), MAC(3), max_side=10, progress=False)
    values = torch.tensor([(1 - 0.485) / 0.229, (0 - 0.456) / 0.224, (0 - 0.406) / 0.225])
    assert out.dtype == torch.float32
    torch.testing.assert_close(out[0, 0], values / values.norm())


def test_decoded_images_are_taken_as_they_are(probe, tmp_path: Path) -> None:  # noqa: ANN001
    """A :class:`DecodedImage` (what the index's reader hands over) is not decoded again and
    describes like its file."""
    path = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (30, 40, 3), np.uint8)).save(path)
    decoded = pyinstance.data.decode_image(path)
    from_file = pyinstance.extract([path], *probe, max_side=32, progress=False)
    from_decoded = pyinstance.extract([decoded], *probe, max_side=32, progress=False)
    torch.testing.assert_close(from_decoded, from_file, rtol=0, atol=0)


def test_limits_are_inclusive(probe) -> None:  # noqa: ANN001
    """A short side of exactly the backbone's minimum, a longest side of exactly
    MAX_RESIZED_SIDE (a 1×128 strip) and a single number as ``scales`` are accepted."""
    strip = torch.full((3, 1, 128), 128, dtype=torch.uint8)
    out = pyinstance.extract([strip], *probe, max_side=MAX_RESIZED_SIDE, scales=1.0, progress=False)
    assert out.shape == (1, 1, 32) and torch.isfinite(out).all()
    out = pyinstance.extract(
        [strip], *probe, max_side=32, scales=(MAX_RESIZED_SIDE / 32,), progress=False
    )
    assert out.shape == (1, 1, 32)
    small = torch.full((3, 8, 16), 200, dtype=torch.uint8)  # resized to 8×16 at max_side 16
    assert pyinstance.extract([small], *probe, max_side=16, progress=False).shape == (1, 1, 32)


def test_integer_arguments_say_what_they_expect(probe) -> None:  # noqa: ANN001
    image = torch.zeros(3, 16, 16, dtype=torch.uint8)
    with pytest.raises(ValueError, match=r"^batch_size: expected a positive integer, got 0$"):
        pyinstance.extract([image], *probe, batch_size=0, progress=False)
    with pytest.raises(
        ValueError, match=rf"^max_side: expected a positive integer <= {MAX_RESIZED_SIDE}, got"
    ):
        pyinstance.extract([image], *probe, max_side=MAX_RESIZED_SIDE + 1, progress=False)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_an_absent_device_is_refused_before_anything_moves(probe) -> None:  # noqa: ANN001
    image = torch.zeros(3, 16, 16, dtype=torch.uint8)
    with pytest.raises(ValueError, match=r"^device: 'cuda' is not available here"):
        pyinstance.extract([image], *probe, device="cuda", progress=False)
    assert all(p.device.type == "cpu" for p in probe[0].parameters())


def test_a_backbone_without_out_channels_is_named(probe) -> None:  # noqa: ANN001
    image = torch.zeros(3, 16, 16, dtype=torch.uint8)
    with pytest.raises(
        TypeError, match=r"^backbone: Sequential has no int attribute 'out_channels'"
    ):
        pyinstance.extract([image], nn.Sequential(nn.Identity()), probe[1], progress=False)


def test_defaults_show_progress_over_every_image_at_448(probe, capsys) -> None:  # noqa: ANN001
    """By default: a progress bar counting images (3/3) and a longest side of 448."""
    images = [torch.rand(3, 30, 40)] * 3
    out = pyinstance.extract(images, *probe)
    assert "extract" in capsys.readouterr().err.split("3/3")[-2]
    explicit = pyinstance.extract(images, *probe, max_side=448, progress=False)
    torch.testing.assert_close(out, explicit, rtol=0, atol=0)


class _Flatten(nn.Module):
    """A head with only ``out_dim``: the channel means, normalised."""

    out_dim = 32

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(features.mean(dim=(2, 3)), dim=1)


def test_heads_need_out_dim_but_not_in_channels(probe) -> None:  # noqa: ANN001
    image = torch.rand(3, 16, 16)
    backbone = probe[0]
    out = pyinstance.extract([image], backbone, _Flatten(), max_side=16, progress=False)
    expected = F.normalize(backbone(_normalized(image)).mean(dim=(2, 3)), dim=1)
    torch.testing.assert_close(out[0], expected)
    with pytest.raises(TypeError, match=r"^head: Identity has no int attribute 'out_dim'"):
        pyinstance.extract([image], backbone, nn.Identity(), progress=False)


def _normalized(image: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN)[:, None, None]
    std = torch.tensor(IMAGENET_STD)[:, None, None]
    return ((image - mean) / std)[None]


def test_size_multiple_and_the_smallest_scale_are_bounded(probe) -> None:  # noqa: ANN001
    image = torch.rand(3, 8, 8)
    assert pyinstance.extract([image], *probe, max_side=8, progress=False).shape == (1, 1, 32)
    with pytest.raises(
        ValueError, match=rf"^size_multiple: expected a positive integer <= {MAX_RESIZED_SIDE}"
    ):
        pyinstance.extract([image], *probe, size_multiple=MAX_RESIZED_SIDE + 1, progress=False)


class _Counting(nn.Module):
    """The probe, counting the images it describes."""

    out_channels = 32
    min_input_size = 8

    def __init__(self) -> None:
        super().__init__()
        self.probe = Probe()
        self.images = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.images += x.shape[0]
        return self.probe(x)


def test_each_image_is_described_once_across_chunks(probe) -> None:  # noqa: ANN001
    """Nine images with batch_size=1 make two chunks of eight: nine forward images."""
    backbone = _Counting()
    images = [torch.rand(3, 8, 8) for _ in range(9)]
    pyinstance.extract(images, backbone, probe[1], max_side=8, batch_size=1, progress=False)
    assert backbone.images == 9


def test_too_small_files_are_named_with_their_path(probe, tmp_path: Path) -> None:  # noqa: ANN001
    path = tmp_path / "tiny.png"
    Image.new("RGB", (64, 4)).save(path)
    with pytest.raises(ValueError, match=r"^images\[0\] \(.*tiny\.png\): 4×64 resized to 1×16"):
        pyinstance.extract([path], *probe, max_side=16, progress=False)
