"""jitter_colour and its hue rotation against the definitions written out step by step in
float64 (mutation survivors): the W3C hue-rotate matrix, then brightness, contrast,
saturation and hue applied one after another to each pixel."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from pyinstance.data.augment import _hue_rotation, jitter_colour

#: The feColorMatrix hueRotate matrix of the W3C Filter Effects spec:
#: LUMA + cos(angle) · COS + sin(angle) · SIN.
LUMA = np.array([[0.213, 0.715, 0.072]] * 3)
COS = np.array([[0.787, -0.715, -0.072], [-0.213, 0.285, -0.072], [-0.213, -0.715, 0.928]])
SIN = np.array([[-0.213, -0.715, 0.928], [0.143, 0.140, -0.283], [-0.787, 0.715, 0.072]])

#: ITU-R 601 luma, the grey level of the contrast and saturation steps.
GREY = np.array([0.299, 0.587, 0.114])


@pytest.mark.parametrize("turns", [0.0, 0.1, 0.25, -0.3, 0.5])
def test_hue_rotation_is_the_w3c_hue_rotate_matrix(turns):
    angle = 2 * math.pi * turns
    expected = LUMA + math.cos(angle) * COS + math.sin(angle) * SIN
    assert np.allclose(_hue_rotation(turns), expected, atol=1e-12)


def jittered(pixels: np.ndarray, brightness, contrast, saturation, hue) -> np.ndarray:
    """The four steps one after another, per pixel, in float64; rounded and clipped."""
    out = pixels.astype(np.float64) * brightness
    mean_grey = float(out.reshape(-1, 3).mean(axis=0) @ GREY)
    out = contrast * out + (1 - contrast) * mean_grey
    grey = out @ GREY
    out = saturation * out + (1 - saturation) * grey[..., None]
    angle = 2 * math.pi * hue
    rotate = LUMA + math.cos(angle) * COS + math.sin(angle) * SIN
    out = out @ rotate.T
    return np.clip(np.rint(out), 0, 255)


PIXELS = np.array(
    [[[200, 40, 30], [20, 150, 60], [90, 90, 220]], [[250, 250, 240], [10, 10, 10], [120, 60, 0]]],
    dtype=np.uint8,
)


@pytest.mark.parametrize(
    ("brightness", "contrast", "saturation", "hue"),
    [
        (1.3, 1.0, 1.0, 0.0),
        (1.0, 0.6, 1.0, 0.0),
        (1.0, 1.4, 1.0, 0.0),
        (1.0, 1.0, 0.5, 0.0),
        (1.0, 1.0, 1.6, 0.0),
        (1.0, 1.0, 1.0, 0.15),
        (1.0, 1.0, 1.0, -0.4),
        (0.8, 1.2, 0.7, 0.05),
        (1.1, 0.9, 1.3, -0.1),
    ],
)
def test_jitter_colour_applies_the_steps_in_order(brightness, contrast, saturation, hue):
    image = Image.fromarray(PIXELS, "RGB")
    found = np.asarray(jitter_colour(image, brightness, contrast, saturation, hue)).astype(int)
    expected = jittered(PIXELS, brightness, contrast, saturation, hue)
    assert np.abs(found - expected).max() <= 1


def test_jitter_colour_uses_the_mean_grey_of_the_whole_image():
    # contrast 0: every pixel becomes the mean grey level, brightness included
    image = Image.fromarray(PIXELS, "RGB")
    mean_grey = float(PIXELS.reshape(-1, 3).mean(axis=0) @ GREY)
    flat = np.asarray(jitter_colour(image, brightness=0.5, contrast=0.0)).astype(int)
    assert np.abs(flat - round(0.5 * mean_grey)).max() <= 1


def test_jitter_colour_returns_a_new_image_even_unchanged():
    image = Image.fromarray(PIXELS, "RGB")
    same = jitter_colour(image)
    assert same is not image and same.tobytes() == image.tobytes()
