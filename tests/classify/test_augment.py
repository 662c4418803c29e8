"""augment_views: reproducible crops, rotations, downscales, lighting and perspective views."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pyinstance.classify import augment_views


def _photo(width=96, height=64):
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 255 // width, y * 255 // height, (x + y) % 256], axis=-1)
    return Image.fromarray(rgb.astype(np.uint8))


def test_views_are_rgb_images_different_from_the_original():
    image = _photo()
    views = augment_views(image, count=10)
    assert len(views) == 10
    original = np.asarray(image, dtype=np.int16)
    for view in views:
        assert isinstance(view, Image.Image) and view.mode == "RGB"
        same_size = view.size == image.size
        assert not same_size or np.abs(np.asarray(view, dtype=np.int16) - original).mean() > 1
    crop, _, scaled, _, _ = views[:5]
    assert crop.size[0] * crop.size[1] < 0.9 * image.size[0] * image.size[1]
    assert scaled.size[0] < image.size[0] and scaled.size[1] < image.size[1]


def test_views_are_reproducible_from_the_seed():
    image = _photo()
    first = [np.asarray(v) for v in augment_views(image, count=5, seed=3)]
    again = [np.asarray(v) for v in augment_views(image, count=5, seed=3)]
    other = [np.asarray(v) for v in augment_views(image, count=5, seed=4)]
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(
        a.shape == b.shape and np.array_equal(a, b) for a, b in zip(first, other, strict=True)
    )


def test_grey_and_alpha_images_give_rgb_views():
    assert {v.mode for v in augment_views(_photo().convert("L"), count=5)} == {"RGB"}
    assert {v.mode for v in augment_views(_photo().convert("RGBA"), count=5)} == {"RGB"}


def test_bad_input_is_refused():
    with pytest.raises(TypeError, match="image: expected a PIL.Image.Image, got ndarray"):
        augment_views(np.zeros((32, 32, 3), np.uint8))
    with pytest.raises(ValueError, match="image: expected sides of at least 16 px"):
        augment_views(_photo(8, 40))
    with pytest.raises(ValueError, match="count"):
        augment_views(_photo(), count=0)
    with pytest.raises(ValueError, match="seed"):
        augment_views(_photo(), seed=-1)
