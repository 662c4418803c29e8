"""pyinstance.extract and aggregate_scales on real images (shared/data/opencv-pairs)."""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import pyinstance
from pyinstance.data import ImageDecodeError, Manifest, image_tensor, normalize, resize, scaled_size


@pytest.fixture(scope="module")
def pairs(shared_data: Path) -> Manifest:
    return Manifest.read(shared_data / "opencv-pairs" / "manifest.csv")


@pytest.fixture(scope="module")
def small() -> tuple[torch.nn.Module, torch.nn.Module]:
    """A cheap backbone + head for the mechanics (randomly initialised, eval mode)."""
    torch.manual_seed(0)
    backbone = pyinstance.get_backbone("tripletnet_small").eval()
    return backbone, pyinstance.get_head("gem", in_channels=128).eval()


def _manual(
    path: Path, backbone: torch.nn.Module, head: torch.nn.Module, side: int
) -> torch.Tensor:
    image = image_tensor(path)
    image = resize(image, scaled_size(*image.shape[1:], side))
    with torch.no_grad():
        return head(backbone(normalize(image[None], backbone.input_mean, backbone.input_std)))[0]


def test_pretrained_descriptors_match_the_opencv_pairs(pairs: Manifest) -> None:
    backbone = pyinstance.get_backbone("efficientnet_lite0")
    head = pyinstance.get_head("gem", in_channels=backbone.out_channels)
    descriptors = pyinstance.extract(
        pairs.paths, backbone, head, scales=(1.0, 0.75), max_side=128, batch_size=3, progress=False
    )
    assert descriptors.shape == (16, 2, 1280) and descriptors.dtype == torch.float32
    torch.testing.assert_close(descriptors.norm(dim=2), torch.ones(16, 2))
    torch.testing.assert_close(
        descriptors[5, 0], _manual(pairs.paths[5], backbone.eval(), head, 128)
    )
    torch.testing.assert_close(descriptors[5, 1], _manual(pairs.paths[5], backbone, head, 96))
    merged = pyinstance.aggregate_scales(descriptors)
    is_query = np.array([e.split == "query" for e in pairs])
    ids = np.array(pairs.instance_ids)
    nearest = (merged[is_query] @ merged[~is_query].T).argmax(dim=1).numpy()
    correct = (ids[~is_query][nearest] == ids[is_query]).sum()
    assert correct >= 5, f"only {correct}/7 queries find their reference"  # 6/7 measured


def test_order_and_batching_do_not_change_descriptors(pairs: Manifest, small) -> None:  # noqa: ANN001
    backbone, head = small
    paths = pairs.paths[:6]
    kwargs = {"scales": (1.0, 0.5), "max_side": 96, "progress": False}
    one = pyinstance.extract(paths, backbone, head, batch_size=1, **kwargs)
    many = pyinstance.extract(paths[::-1], backbone, head, batch_size=4, **kwargs)
    torch.testing.assert_close(many.flip(0), one, rtol=1e-5, atol=1e-6)


def test_every_input_kind_gives_the_same_descriptor(pairs: Manifest, small) -> None:  # noqa: ANN001
    backbone, head = small
    path = pairs.paths[2]
    with Image.open(path) as opened:
        pil = opened.convert("RGB")
    array = np.asarray(pil)
    as_uint8 = torch.from_numpy(array.copy()).permute(2, 0, 1)
    kinds = [path, str(path), pil, array, as_uint8, as_uint8.float() / 255]
    out = pyinstance.extract(kinds, backbone, head, max_side=64, progress=False)
    for index in range(1, len(kinds)):
        torch.testing.assert_close(out[index], out[0], rtol=1e-5, atol=1e-6)
    batch = torch.stack([as_uint8.float() / 255] * 2)
    torch.testing.assert_close(
        pyinstance.extract(batch, backbone, head, max_side=64, progress=False)[1], out[0]
    )


def test_mixed_sizes_names_and_reduced_precision(pairs: Manifest, small) -> None:  # noqa: ANN001
    backbone, head = small
    images = [torch.rand(3, 50, 80), torch.rand(3, 80, 50), torch.rand(3, 64, 64)]
    full = pyinstance.extract(images, backbone, head, max_side=64, progress=False)
    for dtype in (torch.float16, torch.bfloat16):
        low = pyinstance.extract(images, backbone, head, max_side=64, dtype=dtype, progress=False)
        assert low.dtype == dtype
        torch.testing.assert_close(low.float(), full, rtol=0, atol=2e-2)
    by_name = pyinstance.extract(
        pairs.paths[:2], "tripletnet_small", "mac", max_side=48, progress=False
    )
    assert by_name.shape == (2, 1, 128)


def test_size_multiple_snaps_sizes(pairs: Manifest, small) -> None:  # noqa: ANN001
    backbone, head = small
    path = pairs.paths[0]  # box.png, 223×324
    out = pyinstance.extract([path], backbone, head, max_side=100, size_multiple=32, progress=False)
    image = image_tensor(path)
    assert tuple(image.shape[1:]) == (223, 324)
    image = resize(image, (64, 96))  # 69×100 snapped to multiples of 32
    with torch.no_grad():
        expected = head(backbone(normalize(image[None], backbone.input_mean, backbone.input_std)))
    torch.testing.assert_close(out[0], expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="size_multiple"):
        pyinstance.extract([path], backbone, head, size_multiple=0, progress=False)


def test_modes_are_restored_and_progress_is_shown(small, capsys) -> None:  # noqa: ANN001
    backbone, head = small
    backbone.train()
    head.eval()
    out = pyinstance.extract(
        [torch.rand(3, 40, 40)] * 3, backbone, head, max_side=40, progress=True
    )
    assert backbone.training and not head.training
    assert out.shape == (3, 1, 128)
    assert "extract" in capsys.readouterr().err
    backbone.eval()


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


def test_bad_files_name_the_file(tmp_path: Path, small) -> None:  # noqa: ANN001
    backbone, head = small
    good = torch.rand(3, 40, 40)
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        pyinstance.extract(
            [good, tmp_path / "missing.jpg"], backbone, head, max_side=40, progress=False
        )
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(ImageDecodeError, match="corrupt.png"):
        pyinstance.extract([corrupt], backbone, head, max_side=40, progress=False)


def test_bad_arguments(small) -> None:  # noqa: ANN001
    backbone, head = small
    image = [torch.rand(3, 40, 40)]
    call = pyinstance.extract
    with pytest.raises(ValueError, match="empty"):
        call([], backbone, head, progress=False)
    with pytest.raises(TypeError, match="sequence of images"):
        call("a.jpg", backbone, head, progress=False)
    with pytest.raises(ValueError, match="N×3×H×W"):
        call(torch.rand(3, 40, 40), backbone, head, progress=False)
    for scales in [(), (0.0,), (-1.0,), (float("nan"),), ("1",)]:
        with pytest.raises(ValueError, match="scales"):
            call(image, backbone, head, scales=scales, progress=False)
    with pytest.raises(ValueError, match="minimum input size 32"):
        call(image, backbone, head, scales=(1.0, 0.25), max_side=64, progress=False)
    with pytest.raises(ValueError, match="max_side"):
        call(image, backbone, head, max_side=0, progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        call(image, backbone, head, batch_size=0, progress=False)
    with pytest.raises(ValueError, match="dtype"):
        call(image, backbone, head, dtype=torch.int8, progress=False)
    with pytest.raises(ValueError, match="built for 64 input channels but the backbone gives 128"):
        call(image, backbone, pyinstance.get_head("mac", in_channels=64), progress=False)
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
    with pytest.raises(ValueError, match="unknown backbone"):
        call(image, "resnet7", head, progress=False)
