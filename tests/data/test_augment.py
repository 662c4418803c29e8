"""Augmentation: determinism, sizes and aspect, flip rate, rotation, axis scales, colour jitter,
argument and image checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from pyinstance.data.augment import Augmentation, ViewParams, jitter_colour

#: No randomness but the one a test turns on.
STILL = {
    "rotation": 0.0,
    "axis_scale": (1.0, 1.0),
    "flip": 0.0,
    "brightness": 0.0,
    "contrast": 0.0,
    "saturation": 0.0,
    "hue": 0.0,
}


def pattern(width: int = 40, height: int = 24, seed: int = 0) -> Image.Image:
    """An asymmetric random RGB image."""
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels, "RGB")


def marker_image(width: int, height: int, box: tuple[int, int, int, int]) -> Image.Image:
    """Black image with a white rectangle ``box`` (x0, y0, x1, y1 exclusive)."""
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    x0, y0, x1, y1 = box
    pixels[y0:y1, x0:x1] = 255
    return Image.fromarray(pixels, "RGB")


def bright(image: Image.Image, threshold: int = 128) -> np.ndarray:
    return np.asarray(image)[..., 0] >= threshold


def centroid(mask: np.ndarray) -> np.ndarray:
    """(x, y) of a mask's centre in continuous pixel coordinates (pixel centres at i + 0.5)."""
    ys, xs = np.nonzero(mask)
    return np.array([xs.mean() + 0.5, ys.mean() + 0.5])


def params(**changes) -> ViewParams:
    values = {"flip": False, "angle": 0.0, "scale_x": 1.0, "scale_y": 1.0, "size": 24, "crop": 0.0}
    values.update(changes)
    return ViewParams(**values)


def test_same_seed_same_view_other_seed_other_view():
    image = pattern(120, 80)
    augmentation = Augmentation(sizes=(32, 48))
    first = augmentation(image, np.random.default_rng(7))
    again = augmentation(image, np.random.default_rng(7))
    other = augmentation(image, np.random.default_rng(8))
    assert first.tobytes() == again.tobytes() and first.size == again.size
    assert first.tobytes() != other.tobytes()


@settings(max_examples=60, deadline=None)
@given(
    width=st.integers(1, 200),
    height=st.integers(1, 200),
    sizes=st.lists(st.integers(8, 64), min_size=1, max_size=3),
    max_aspect=st.floats(1.0, 3.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_smaller_side_from_sizes_and_aspect_capped(width, height, sizes, max_aspect, seed):
    augmentation = Augmentation(sizes=tuple(sizes), max_aspect=max_aspect)
    view = augmentation(pattern(width, height), np.random.default_rng(seed))
    assert view.mode == "RGB"
    assert min(view.size) in sizes
    assert max(view.size) / min(view.size) <= max_aspect


def test_long_side_follows_the_image_until_the_cap():
    image = pattern(90, 30)  # aspect 3
    uncapped = Augmentation(**STILL, sizes=(20,), max_aspect=4.0)
    capped = Augmentation(**STILL, sizes=(20,), max_aspect=2.0)
    assert uncapped(image, np.random.default_rng(0)).size == (60, 20)
    assert capped(image, np.random.default_rng(0)).size == (40, 20)


def test_capped_window_moves_with_crop():
    # A bright bar at the right end is kept when the window is at the end, not at the start.
    image = marker_image(90, 30, (80, 0, 90, 30))
    augmentation = Augmentation(**STILL, sizes=(30,), max_aspect=2.0)
    start = augmentation.apply(image, params(size=30, crop=0.0))
    end = augmentation.apply(image, params(size=30, crop=1.0))
    assert start.size == end.size == (60, 30)
    assert not bright(start).any()
    assert bright(end)[:, 50:].all() and not bright(end)[:, :49].any()


def test_flip_frequency_matches_probability():
    image = pattern(12, 8)
    mirrored = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT).tobytes()
    draws, probability = 400, 0.3
    augmentation = Augmentation(**{**STILL, "flip": probability}, sizes=(8,))
    rng = np.random.default_rng(3)
    flips = 0
    for _ in range(draws):
        view = augmentation(image, rng).tobytes()
        assert view in (image.tobytes(), mirrored)
        flips += view == mirrored
    spread = math.sqrt(draws * probability * (1 - probability))
    assert abs(flips - draws * probability) < 4.5 * spread


@pytest.mark.parametrize(
    ("angle", "transpose"),
    [
        (90.0, Image.Transpose.ROTATE_90),
        (-90.0, Image.Transpose.ROTATE_270),
        (180.0, Image.Transpose.ROTATE_180),
    ],
)
def test_quarter_turns_match_transpose(angle, transpose):
    image = pattern(40, 24)
    expected = image.transpose(transpose)
    view = Augmentation().apply(image, params(angle=angle, size=min(expected.size)))
    assert view.size == expected.size
    assert np.array_equal(np.asarray(view), np.asarray(expected))


@pytest.mark.parametrize("angle", [-150.0, -33.0, 17.0, 60.0, 121.0])
def test_rotation_moves_a_marker_like_a_rotation_matrix(angle):
    # A marker off-centre in a 60×40 image; where its centre lands is computed independently.
    width, height = 60, 40
    image = marker_image(width, height, (40, 6, 48, 14))
    radians = math.radians(angle)
    cos, sin = abs(math.cos(radians)), abs(math.sin(radians))
    full = (width * cos + height * sin, width * sin + height * cos)
    size = round(min(full))
    view = Augmentation(max_aspect=3.0).apply(image, params(angle=angle, size=size))
    factor = size / min(full)
    # Counter-clockwise on screen (y points down): (dx, dy) -> (dx cos + dy sin, -dx sin + dy cos).
    dx, dy = (44.0 - width / 2) * factor, (10.0 - height / 2) * factor
    c, s = math.cos(radians), math.sin(radians)
    expected = np.array(view.size) / 2 + np.array([dx * c + dy * s, -dx * s + dy * c])
    assert np.allclose(centroid(bright(view)), expected, atol=1.0)


def test_rotation_fills_corners_with_the_mean_colour():
    image = Image.fromarray(
        np.concatenate(
            [
                np.full((20, 20, 3), (200, 40, 0), np.uint8),
                np.full((20, 20, 3), (0, 40, 100), np.uint8),
            ],
            axis=1,
        )
    )
    view = np.asarray(Augmentation().apply(image, params(angle=45.0, size=56)))
    assert tuple(view[0, 0]) == (100, 40, 50)
    assert tuple(view[-1, -1]) == (100, 40, 50)


@pytest.mark.parametrize(("scale_x", "scale_y"), [(1.25, 0.75), (0.8, 1.2), (1.1, 1.1)])
def test_axes_scale_independently(scale_x, scale_y):
    # A square marker becomes a rectangle of aspect scale_x / scale_y.
    image = marker_image(100, 100, (30, 30, 70, 70))
    view = Augmentation().apply(image, params(scale_x=scale_x, scale_y=scale_y, size=100))
    ys, xs = np.nonzero(bright(view))
    marker_w, marker_h = xs.max() - xs.min() + 1, ys.max() - ys.min() + 1
    assert marker_w / marker_h == pytest.approx(scale_x / scale_y, rel=0.04)


@settings(max_examples=30, deadline=None)
@given(low=st.floats(0.3, 1.5), spread=st.floats(0.0, 1.0), seed=st.integers(0, 2**32 - 1))
def test_drawn_values_stay_in_their_ranges(low, spread, seed):
    augmentation = Augmentation(
        rotation=33.0,
        axis_scale=(low, low + spread),
        brightness=0.3,
        contrast=0.1,
        saturation=0.5,
        hue=0.05,
        sizes=(10, 20, 30),
    )
    rng = np.random.default_rng(seed)
    for _ in range(50):
        drawn = augmentation.draw(rng)
        assert -33.0 <= drawn.angle <= 33.0
        assert low <= drawn.scale_x <= low + spread and low <= drawn.scale_y <= low + spread
        assert drawn.size in (10, 20, 30) and 0.0 <= drawn.crop <= 1.0
        assert 0.7 <= drawn.brightness <= 1.3 and 0.9 <= drawn.contrast <= 1.1
        assert 0.5 <= drawn.saturation <= 1.5 and -0.05 <= drawn.hue <= 0.05


def test_axis_scales_are_drawn_independently():
    rng = np.random.default_rng(0)
    drawn = [Augmentation().draw(rng) for _ in range(300)]
    ratios = np.array([view.scale_x / view.scale_y for view in drawn])
    assert (ratios > 1.2).any() and (ratios < 1 / 1.2).any()
    assert abs(np.corrcoef([v.scale_x for v in drawn], [v.scale_y for v in drawn])[0, 1]) < 0.2


def test_zero_jitter_and_no_geometry_is_the_identity():
    image = pattern(30, 20)
    augmentation = Augmentation(**STILL, sizes=(20,))
    for seed in range(5):
        assert augmentation(image, np.random.default_rng(seed)).tobytes() == image.tobytes()
    assert jitter_colour(image).tobytes() == image.tobytes()


def test_brightness_jitter_stays_within_its_bounds():
    flat = Image.new("RGB", (8, 8), (100, 100, 100))
    augmentation = Augmentation(**{**STILL, "brightness": 0.2}, sizes=(8,))
    rng = np.random.default_rng(1)
    levels = [int(np.asarray(augmentation(flat, rng))[0, 0, 0]) for _ in range(200)]
    assert 80 <= min(levels) < 85 and 115 < max(levels) <= 120


def test_jitter_colour_matches_its_formulas():
    colour = Image.new("RGB", (4, 4), (100, 50, 20))
    assert np.asarray(jitter_colour(colour, brightness=1.5))[0, 0].tolist() == [150, 75, 30]
    grey = round(0.299 * 100 + 0.587 * 50 + 0.114 * 20)
    assert np.asarray(jitter_colour(colour, saturation=0.0))[0, 0].tolist() == [grey] * 3
    halves = np.zeros((4, 4, 3), np.uint8)
    halves[:, 2:] = 200
    flat = np.asarray(jitter_colour(Image.fromarray(halves), contrast=0.0))
    assert (flat == 100).all()
    red = Image.new("RGB", (4, 4), (255, 0, 0))
    towards_green = np.asarray(jitter_colour(red, hue=1 / 3))[0, 0]
    towards_blue = np.asarray(jitter_colour(red, hue=-1 / 3))[0, 0]
    assert towards_green.argmax() == 1 and towards_blue.argmax() == 2


def test_hue_rotation_keeps_grey_and_luma_and_turns_back():
    grey = Image.new("RGB", (4, 4), (90, 90, 90))
    assert jitter_colour(grey, hue=0.3).tobytes() == grey.tobytes()
    rng = np.random.default_rng(0)
    pixels = rng.integers(60, 196, (16, 16, 3), dtype=np.uint8)  # mid tones: no clipping
    image = Image.fromarray(pixels, "RGB")
    turned = jitter_colour(image, hue=0.04)
    assert np.abs(np.asarray(turned).astype(int) - pixels).max() > 5
    back = jitter_colour(turned, hue=-0.04)
    assert np.abs(np.asarray(back).astype(int) - pixels).max() <= 2
    rec709 = np.array([0.2126, 0.7152, 0.0722])
    assert np.abs(np.asarray(turned) @ rec709 - pixels @ rec709).max() <= 1.5


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("rotation", -1.0, ValueError),
        ("rotation", 181.0, ValueError),
        ("rotation", float("nan"), ValueError),
        ("rotation", "90", TypeError),
        ("axis_scale", (0.0, 1.0), ValueError),
        ("axis_scale", (1.2, 0.8), ValueError),
        ("axis_scale", (1.0,), TypeError),
        ("axis_scale", 1.0, TypeError),
        ("flip", 1.5, ValueError),
        ("flip", True, TypeError),
        ("brightness", -0.1, ValueError),
        ("contrast", 1.1, ValueError),
        ("saturation", None, TypeError),
        ("hue", 0.6, ValueError),
        ("sizes", (), ValueError),
        ("sizes", (224, 0), ValueError),
        ("sizes", (224.0,), TypeError),
        ("sizes", 224, TypeError),
        ("max_aspect", 0.5, ValueError),
        ("max_aspect", float("inf"), ValueError),
    ],
)
def test_bad_parameters_are_refused_by_name(field, value, error):
    with pytest.raises(error, match=field):
        Augmentation(**{field: value})


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "1", "CMYK"])
def test_images_that_are_not_rgb_are_refused(mode):
    with pytest.raises(ValueError, match=rf"image: .*mode RGB, got mode '{mode}'"):
        Augmentation()(Image.new(mode, (10, 10)), np.random.default_rng(0))


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("flip", 1, TypeError),
        ("angle", float("nan"), ValueError),
        ("scale_x", 0.0, ValueError),
        ("scale_y", -1.0, ValueError),
        ("size", 0, ValueError),
        ("size", 2.5, TypeError),
        ("crop", 1.5, ValueError),
        ("brightness", -0.5, ValueError),
        ("hue", 0.75, ValueError),
    ],
)
def test_bad_view_params_are_refused_by_name(field, value, error):
    with pytest.raises(error, match=field):
        params(**{field: value})


def test_apply_refuses_what_is_not_view_params():
    with pytest.raises(TypeError, match="params: expected a ViewParams"):
        Augmentation().apply(pattern(), {"angle": 0.0})


def test_bad_images_and_generators_are_refused():
    with pytest.raises(TypeError, match="image: expected a PIL image"):
        Augmentation()(np.zeros((10, 10, 3), np.uint8), np.random.default_rng(0))
    with pytest.raises(ValueError, match="image: empty"):
        Augmentation()(Image.new("RGB", (0, 5)), np.random.default_rng(0))
    with pytest.raises(TypeError, match="rng: expected a numpy.random.Generator"):
        Augmentation()(pattern(), 0)
    with pytest.raises(TypeError, match="rng"):
        Augmentation()(pattern(), np.random.RandomState(0))
    with pytest.raises(ValueError, match="hue"):
        jitter_colour(pattern(), hue=0.7)
    with pytest.raises(ValueError, match="brightness"):
        jitter_colour(pattern(), brightness=-1.0)
