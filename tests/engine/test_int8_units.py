"""The parts of int8 that need neither OpenVINO nor nncf: the cosine of the check, the
sample photos and the cache file's place."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pyinstance.engine import int8, sample_photos
from pyinstance.engine.export import ExportError

MEAN, STD = (0.5, 0.25, 0.75), (0.5, 0.25, 0.125)


def test_min_cosine_against_hand_computed_values() -> None:
    got = np.array([[1.0, 0.0], [3.0, 4.0], [0.0, 0.0], [0.0, 2.0]])
    expected = np.array([[1.0, 1.0], [3.0, 4.0], [0.0, 0.0], [0.0, 0.0]])
    # rows: cos 45° = 0.7071, 1, both zero -> 1, one zero -> 0
    assert int8.min_cosine(got[:3], expected[:3]) == pytest.approx(2**-0.5)
    assert int8.min_cosine(got[1:3], expected[1:3]) == pytest.approx(1.0)
    assert int8.min_cosine(got, expected) == 0.0


def test_min_cosine_flattens_each_image() -> None:
    got = np.zeros((2, 2, 3, 3))
    got[0, 0, 0, 0] = got[1, 1, 2, 2] = 1.0
    expected = got.copy()
    expected[1, 1, 2, 1] = 1.0  # second image: (1, 0) against (1, 1) after flattening
    assert int8.min_cosine(got, expected) == pytest.approx(2**-0.5)
    assert int8.min_cosine(-got, expected) == pytest.approx(-1.0)


def _photo_array(path: Path, size: tuple[int, int]) -> np.ndarray:
    """Pillow's own decode and resize: an oracle independent of pyinstance's images."""
    with Image.open(path) as image:
        resized = image.convert("RGB").resize((size[1], size[0]), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.float64) / 255.0


def test_sample_photos_are_the_eight_bundled_jpegs() -> None:
    photos = sample_photos.sample_photos()
    assert [p.parent.name for p in photos] == [
        "astronaut", "camera", "chelsea", "coffee", "coins", "hubble_deep_field", "retina",
        "rocket",
    ]  # fmt: skip
    assert all(
        p.suffix == ".jpg" and p.parent.parent == sample_photos.SAMPLE_FOLDER for p in photos
    )


def test_missing_sample_photos_are_a_clear_error(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setattr(sample_photos, "SAMPLE_FOLDER", tmp_path)
    with pytest.raises(FileNotFoundError, match="no sample photos in .*installation is incomplete"):
        sample_photos.calibration_batches(MEAN, STD)


def test_calibration_batches_sides_mirrors_and_normalisation() -> None:
    batches = sample_photos.calibration_batches(MEAN, STD, sides=(64, 96))
    photos = sample_photos.sample_photos()
    assert len(batches) == len(photos) * 2 * 2
    for number, path in enumerate(photos):
        with Image.open(path) as image:
            width, height = image.size
        for offset, side in ((0, 64), (2, 96)):
            plain, mirrored = batches[4 * number + offset], batches[4 * number + offset + 1]
            assert plain.dtype == np.float32 and plain.shape[:2] == (1, 3)
            assert max(plain.shape[2:]) == side
            assert plain.shape[2] == max(1, round(height * side / max(height, width)))
            np.testing.assert_array_equal(mirrored, plain[..., ::-1])
            pixels = plain[0].transpose(1, 2, 0) * np.array(STD) + np.array(MEAN)
            oracle = _photo_array(path, plain.shape[2:])
            assert pixels.min() >= -1e-6 and pixels.max() <= 1 + 1e-6
            assert np.abs(pixels.mean((0, 1)) - oracle.mean((0, 1))).max() < 0.02


def test_probe_batches_shapes_and_photos() -> None:
    probes = sample_photos.probe_batches(MEAN, STD)
    assert [tuple(p.shape) for p in probes] == [
        (count, 3, height, width) for count, height, width in sample_photos.PROBE_SHAPES
    ]
    photos = sample_photos.sample_photos()
    used = [photos[i] for i in range(5)]  # 2 + 1 + 2 consecutive photos
    images = [image for batch in probes for image in batch]
    for image, path in zip(images, used, strict=True):
        pixels = image.numpy().transpose(1, 2, 0) * np.array(STD) + np.array(MEAN)
        oracle = _photo_array(path, tuple(image.shape[1:]))
        assert np.abs(pixels.mean((0, 1)) - oracle.mean((0, 1))).max() < 0.02
    assert torch.isfinite(torch.cat([p.flatten() for p in probes])).all()


def test_check_refuses_a_low_cosine_and_reports_the_smallest() -> None:
    network = torch.nn.Identity()
    probes = [torch.tensor([[3.0, 4.0]]), torch.tensor([[1.0, 0.0], [0.0, 1.0]])]
    scaled = int8.check_against_torch(network, lambda b: b * 1.1, "descriptors", probes)
    assert scaled == pytest.approx(1.0)  # a scaled output points the same way
    swapped = [np.array([[4.0, 3.0]], np.float32), np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)]
    answers = iter(swapped)
    assert int8.check_against_torch(
        network, lambda b: next(answers), "descriptors", probes
    ) == pytest.approx(24 / 25)  # (3, 4)·(4, 3) / 25
    with pytest.raises(ExportError, match=r"probe photo batch of shape \(2, 2\): cosine 0.000"):
        int8.check_against_torch(network, lambda b: b[:, ::-1].copy(), "descriptors", probes)
    with pytest.raises(ExportError, match=r"gives shape \(1, 1\)"):
        int8.check_against_torch(network, lambda b: b[:, :1], "descriptors", probes)
    with pytest.raises(ExportError, match=r"openvino int8 failed.*RuntimeError: boom"):
        int8.check_against_torch(
            network, lambda b: (_ for _ in ()).throw(RuntimeError("boom")), "features", probes
        )


def test_feature_maps_get_their_own_lower_cosine() -> None:
    network = torch.nn.Identity()
    # cosine 0.9: refused for descriptors (0.93), accepted for feature maps (0.85)
    angle = np.arccos(0.9)
    probes = [torch.tensor([[1.0, 0.0]])]
    turned = np.array([[np.cos(angle), np.sin(angle)]], np.float32)
    with pytest.raises(ExportError, match="cosine 0.900 < 0.93"):
        int8.check_against_torch(network, lambda b: turned, "descriptors", probes)
    assert int8.check_against_torch(network, lambda b: turned, "features", probes) > 0


def test_cache_path_sits_beside_the_graph() -> None:
    graph = Path("/cache/onnx/TinyBackbone-GeM-descriptors-fp32-abc.onnx")
    assert int8.cache_path(graph) == Path(
        "/cache/onnx/TinyBackbone-GeM-descriptors-fp32-abc-openvino-int8.zip"
    )


def test_quantize_refuses_an_empty_calibration() -> None:
    pytest.importorskip("nncf")
    with pytest.raises(ValueError, match="calibration: expected at least one image batch"):
        int8.quantize(object(), [])


def test_each_output_kind_has_its_minimum_cosine() -> None:
    assert int8.min_cosine_for("descriptors") == int8.DESCRIPTOR_MIN_COSINE == 0.93
    assert int8.min_cosine_for("features") == int8.FEATURE_MIN_COSINE == 0.85


def test_min_cosine_divides_by_the_norms_whatever_their_size() -> None:
    small = np.array([[0.3, 0.4], [0.03, 0.0]])  # norms 0.5 and 0.03
    same_direction = np.array([[0.6, 0.8], [0.5, 0.0]])
    assert int8.min_cosine(small, same_direction) == pytest.approx(1.0)
    big = np.array([[30.0, 40.0]])
    assert int8.min_cosine(big, np.array([[40.0, 30.0]])) == pytest.approx(0.96)


def test_min_cosine_of_all_zero_outputs_is_one() -> None:
    assert int8.min_cosine(np.zeros((3, 4)), np.zeros((3, 4))) == 1.0
    assert int8.min_cosine(np.zeros((1, 4)), np.ones((1, 4))) == 0.0
    assert int8.min_cosine(np.ones((1, 4)), np.zeros((1, 4))) == 0.0


def test_a_cosine_exactly_at_the_minimum_passes(monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setattr(int8, "DESCRIPTOR_MIN_COSINE", 0.96)
    probes = [torch.tensor([[3.0, 4.0]])]
    turned = np.array([[4.0, 3.0]], np.float32)  # cosine 24 / 25 = 0.96
    assert (
        int8.check_against_torch(torch.nn.Identity(), lambda b: turned, "descriptors", probes)
        == 0.96
    )
    monkeypatch.setattr(int8, "DESCRIPTOR_MIN_COSINE", 0.9600001)
    with pytest.raises(ExportError, match="cosine 0.960 < 0.9600001"):
        int8.check_against_torch(torch.nn.Identity(), lambda b: turned, "descriptors", probes)
