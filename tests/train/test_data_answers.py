"""load_training_set on a few tiny PNGs written here: labels from the sorted instance names,
the photos reduced to ``decode_side`` (compared with Pillow's bilinear resize of the file),
what is skipped and why, and the argument checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pyinstance.train.data import TrainingSet, load_training_set


def checkerboard(width: int, height: int, seed: int = 0) -> Image.Image:
    """Random pixels: every resampling filter gives a different result."""
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def folder(root: Path, photos: dict[str, list[Image.Image]]) -> Path:
    for name, images in photos.items():
        (root / name).mkdir(parents=True)
        for i, image in enumerate(images):
            image.save(root / name / f"p{i}.png")
    return root


def test_labels_index_the_sorted_instance_names(tmp_path: Path):
    small = Image.new("RGB", (4, 3), (9, 9, 9))
    root = folder(tmp_path / "set", {"zeta": [small, small], "alpha": [small], "mid": [small]})
    data = load_training_set(root, decode_side=8)
    assert data.instances == ("alpha", "mid", "zeta")
    assert data.num_classes == 3 and len(data) == 4
    named = sorted(
        (p.parent.name, p.name, data.instances[label])
        for p, label in zip(data.paths, data.labels, strict=True)
    )
    assert named == [
        ("alpha", "p0.png", "alpha"),
        ("mid", "p0.png", "mid"),
        ("zeta", "p0.png", "zeta"),
        ("zeta", "p1.png", "zeta"),
    ]
    assert data.skipped == ()
    assert all(isinstance(image, Image.Image) and image.mode == "RGB" for image in data.images)


def test_photos_longer_than_the_decode_side_are_reduced_bilinearly(tmp_path: Path):
    wide, tall = checkerboard(40, 16, seed=1), checkerboard(9, 30, seed=2)
    root = folder(tmp_path / "set", {"a": [wide], "b": [tall]})
    data = load_training_set(root, decode_side=20)
    by_instance = {
        data.instances[label]: image for label, image in zip(data.labels, data.images, strict=True)
    }
    # longest side 20, the aspect ratio kept: 40 × 16 -> 20 × 8; 9 × 30 -> 6 × 20 (6.0)
    assert by_instance["a"].size == (20, 8) and by_instance["b"].size == (6, 20)
    expected = wide.resize((20, 8), Image.Resampling.BILINEAR)
    assert np.array_equal(np.asarray(by_instance["a"]), np.asarray(expected))
    bicubic = wide.resize((20, 8), Image.Resampling.BICUBIC)
    assert not np.array_equal(np.asarray(expected), np.asarray(bicubic))  # the filter shows


def test_photos_within_the_decode_side_keep_their_pixels(tmp_path: Path):
    exact, small = checkerboard(20, 7, seed=3), checkerboard(5, 11, seed=4)
    root = folder(tmp_path / "set", {"a": [exact], "b": [small]})
    data = load_training_set(root, decode_side=20)
    by_instance = {
        data.instances[label]: image for label, image in zip(data.labels, data.images, strict=True)
    }
    assert np.array_equal(np.asarray(by_instance["a"]), np.asarray(exact))
    assert np.array_equal(np.asarray(by_instance["b"]), np.asarray(small))


def test_the_default_decode_side_is_640(tmp_path: Path):
    root = folder(tmp_path / "set", {"a": [checkerboard(700, 10)], "b": [checkerboard(640, 3)]})
    sizes = sorted(image.size for image in load_training_set(root).images)
    assert sizes == [(640, 3), (640, 9)]  # 700 × 10 -> 640 × 9.14


def test_undecodable_files_are_skipped_with_their_reason(tmp_path: Path):
    small = Image.new("RGB", (4, 4))
    root = folder(tmp_path / "set", {"a": [small], "b": [small]})
    (root / "a" / "broken.png").write_bytes(b"not a png")
    data = load_training_set(root, decode_side=4)
    assert len(data) == 2
    (skipped,) = data.skipped
    assert skipped.path == str(root / "a" / "broken.png")
    assert "broken.png" in skipped.reason and skipped.reason != ""


def test_skipping_down_to_one_instance_is_refused_with_the_counts(tmp_path: Path):
    small = Image.new("RGB", (4, 4))
    root = folder(tmp_path / "set", {"a": [small, small]})
    (root / "b").mkdir()
    (root / "b" / "broken.png").write_bytes(b"")
    with pytest.raises(
        ValueError,
        match=r"^source: training needs photos of at least 2 instances, found 1 "
        r"\(2 photo\(s\) decoded, 1 skipped\)",
    ):
        load_training_set(root)


@pytest.mark.parametrize("side", [0, -3, True, 2.0, "8", None])
def test_the_decode_side_must_be_a_positive_int(tmp_path: Path, side):
    with pytest.raises(ValueError, match="^decode_side: expected a positive int"):
        load_training_set(tmp_path, decode_side=side)


def test_a_decode_side_of_one_is_allowed(tmp_path: Path):
    root = folder(tmp_path / "set", {"a": [checkerboard(3, 2)], "b": [checkerboard(2, 2)]})
    assert sorted(image.size for image in load_training_set(root, decode_side=1).images) == [
        (1, 1),
        (1, 1),
    ]


def test_a_training_set_counts_photos_and_classes():
    made = TrainingSet(images=(None, None, None), labels=(0, 1, 1), instances=("a", "b"), paths=())
    assert len(made) == 3 and made.num_classes == 2 and made.skipped == ()


def test_a_large_jpeg_is_decoded_in_draft_mode_before_the_bilinear_reduction(tmp_path: Path):
    # 400 × 320 to a decode side of 40 (40 × 32): libjpeg's draft decodes at the smallest
    # power-of-two reduction still at least twice the target, 1/4 (100 × 80; 1/8 would
    # give 50 × 40 < 80 × 64), then the bilinear resize does the rest.
    smooth = np.asarray(checkerboard(50, 40, seed=5).resize((400, 320), Image.Resampling.BICUBIC))
    noisy = np.clip(smooth + np.random.default_rng(6).integers(-40, 41, smooth.shape), 0, 255)
    root = tmp_path / "set"
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        Image.fromarray(noisy.astype(np.uint8)).save(root / name / "p.jpg", quality=90)
    data = load_training_set(root, decode_side=40)
    with Image.open(root / "a" / "p.jpg") as opened:
        opened.draft("RGB", (80, 64))
        assert opened.size == (100, 80)
        expected = opened.convert("RGB").resize((40, 32), Image.Resampling.BILINEAR)
    with Image.open(root / "a" / "p.jpg") as opened:
        full = opened.convert("RGB").resize((40, 32), Image.Resampling.BILINEAR)
    assert not np.array_equal(np.asarray(expected), np.asarray(full))  # the draft shows
    for image in data.images:
        assert image.size == (40, 32)
        assert np.array_equal(np.asarray(image), np.asarray(expected))
