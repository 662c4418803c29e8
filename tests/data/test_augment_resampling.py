"""A view's pixels against a plain Pillow resize of the picture (mutation survivors): an
axis that shrinks is resized with anti-aliasing (bicubic) straight to its output scale, an
axis that grows is enlarged by the bilinear affine transform."""

from __future__ import annotations

import numpy as np
from PIL import Image

from pyinstance.data.augment import Augmentation, ViewParams


def noise(width: int, height: int) -> Image.Image:
    pixels = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels, "RGB")


def view(size: int) -> ViewParams:
    return ViewParams(flip=False, angle=0.0, scale_x=1.0, scale_y=1.0, size=size, crop=0.0)


def test_a_reduction_is_one_bicubic_resize():
    image = noise(100, 80)
    out = Augmentation().apply(image, view(40))  # half size on both axes
    expected = image.resize((50, 40), Image.Resampling.BICUBIC)
    assert out.size == (50, 40)
    assert np.abs(np.asarray(out).astype(int) - np.asarray(expected)).max() <= 1


def test_an_enlargement_is_bilinear():
    image = noise(10, 8)
    out = np.asarray(Augmentation().apply(image, view(16))).astype(int)  # twice the size
    bilinear = np.asarray(image.resize((20, 16), Image.Resampling.BILINEAR)).astype(int)
    bicubic = np.asarray(image.resize((20, 16), Image.Resampling.BICUBIC)).astype(int)
    assert out.shape == (16, 20, 3)
    inner = (slice(2, -2), slice(2, -2))
    assert np.abs(out - bilinear)[inner].max() <= 1
    assert np.abs(out - bicubic)[inner].max() > 5


def test_a_side_reduced_to_one_pixel_is_one_bicubic_resize():
    # 40×4 with a bright first row, the view's smaller side 1: the four rows become one in
    # a single bicubic reduction (about 55); through two rows and the affine transform they
    # would give about 58.
    pixels = np.zeros((4, 40, 3), np.uint8)
    pixels[0] = 255
    image = Image.fromarray(pixels, "RGB")
    out = np.asarray(Augmentation().apply(image, view(1))).astype(int)
    expected = np.asarray(image.resize((10, 1), Image.Resampling.BICUBIC)).astype(int)
    assert out.shape == (1, 2, 3)
    assert np.abs(out - expected[:, :2]).max() <= 1
    turned = Image.fromarray(np.ascontiguousarray(pixels.transpose(1, 0, 2)), "RGB")
    out = np.asarray(Augmentation().apply(turned, view(1))).astype(int)
    expected = np.asarray(turned.resize((1, 10), Image.Resampling.BICUBIC)).astype(int)
    assert out.shape == (2, 1, 3)
    assert np.abs(out - expected[:2]).max() <= 1
