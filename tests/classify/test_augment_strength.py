"""augment_views: each kind of view measured on images whose pixels say where they came from.

Every view function is run over many seeds with a generator that records what it draws;
the geometry (crop box, rotation angle, scale factor, moved corners) and the colour change
are measured on the output and compared with the documented ranges and with the draws.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from pyinstance.classify import augment, augment_views

SEEDS = range(120)


class RecordingRng:
    """A numpy generator that keeps every value it hands out."""

    def __init__(self, seed: int):
        self._rng = np.random.default_rng(seed)
        self.uniform_draws: list = []
        self.choices: list = []

    def uniform(self, low=0.0, high=1.0, size=None):
        value = self._rng.uniform(low, high, size)
        self.uniform_draws.append(value)
        return value

    def integers(self, low, high=None):
        return self._rng.integers(low, high)

    def choice(self, options):
        value = self._rng.choice(options)
        self.choices.append(value)
        return value


def _coordinates(width: int, height: int) -> Image.Image:
    """Red = column, green = row, blue = 0: each pixel names its own position."""
    y, x = np.mgrid[0:height, 0:width]
    return Image.fromarray(np.stack([x, y, np.zeros_like(x)], axis=-1).astype(np.uint8))


def _band(size: int = 96) -> Image.Image:
    """A dark image crossed by one horizontal orange band through its centre."""
    pixels = np.zeros((size, size, 3), np.uint8)
    pixels[size // 2 - 4 : size // 2 + 4] = (255, 128, 0)
    return Image.fromarray(pixels)


def test_crop_covers_45_to_85_percent_with_aspect_within_20_percent():
    image = _coordinates(120, 90)
    pixels = np.asarray(image)
    areas, aspects, lefts, tops = [], [], [], []
    for seed in SEEDS:
        rng = RecordingRng(seed)
        view = np.asarray(augment._crop(image, rng))
        area, aspect = rng.uniform_draws
        left, top = int(view[0, 0, 0]), int(view[0, 0, 1])
        h, w = view.shape[:2]
        # The view is exactly the image's pixels in a box inside the image.
        assert left + w <= 120 and top + h <= 90
        np.testing.assert_array_equal(view, pixels[top : top + h, left : left + w])
        fraction = w * h / (120 * 90)
        change = (w / h) / (120 / 90)
        if w < 120 and h < 90:  # not clipped by a side: the box has the drawn area and aspect
            assert fraction == pytest.approx(area, abs=0.02)
            assert change == pytest.approx(aspect, abs=0.03)
        else:
            assert area * aspect > 0.97 or area / aspect > 0.97
        areas.append(fraction)
        aspects.append(change)
        lefts.append((left, 120 - w))
        tops.append((top, 90 - h))
    assert 0.44 <= min(areas) < 0.48 and 0.8 < max(areas) <= 0.86
    assert 0.78 <= min(aspects) < 0.83 and 1.17 < max(aspects) <= 1.23
    # Every position is reachable, the image's edges included.
    assert any(left == 0 for left, _ in lefts) and any(left == last for left, last in lefts)
    assert any(top == 0 for top, _ in tops) and any(top == last for top, last in tops)


def test_crop_of_a_small_image_stays_inside_it():
    image = _coordinates(16, 16)
    for seed in SEEDS:
        view = np.asarray(augment._crop(image, np.random.default_rng(seed)))
        assert 9 <= view.shape[0] <= 16 and 9 <= view.shape[1] <= 16
        left, top = int(view[0, 0, 0]), int(view[0, 0, 1])
        h, w = view.shape[:2]
        np.testing.assert_array_equal(view, np.asarray(image)[top : top + h, left : left + w])


def _band_angle(view: Image.Image) -> float:
    """The band's angle in degrees, counter-clockwise (y grows downwards in the image)."""
    red = np.asarray(view)[..., 0].astype(np.float64)
    y, x = np.nonzero(red > 200)
    slope = np.polyfit(x, y, 1)[0]
    return -math.degrees(math.atan(slope))


def test_rotation_turns_by_5_to_20_degrees_either_way_with_mean_colour_corners():
    image = _band()
    mean = tuple(int(v) for v in np.asarray(image).reshape(-1, 3).mean(axis=0))
    angles, strengths = [], []
    for seed in range(60):
        rng = RecordingRng(seed)
        view = augment._rotate(image, rng)
        assert view.size == image.size and view.mode == "RGB"
        (strength,), (sign,) = rng.uniform_draws, rng.choices
        strengths.append(strength)
        angle = _band_angle(view)
        assert angle == pytest.approx(strength * sign, abs=0.5)
        angles.append(angle)
        pixels = np.asarray(view)
        for corner in (pixels[0, 0], pixels[0, -1], pixels[-1, 0], pixels[-1, -1]):
            assert tuple(int(v) for v in corner) == mean
        # Bicubic resampling blends the band's edges (nearest-neighbour would not).
        assert np.unique(pixels[..., 0]).size > 10
    magnitudes = np.abs(angles)
    assert 4.5 <= magnitudes.min() < 6 and 19 < magnitudes.max() <= 20.5
    assert min(angles) < 0 < max(angles)
    # The drawn strengths span 5-20 degrees (60 draws reach within 0.75 of each end).
    assert all(5 <= s <= 20 for s in strengths)
    assert min(strengths) < 5.75 and max(strengths) > 19.25


def test_downscale_keeps_the_whole_image_at_30_to_70_percent():
    image = _coordinates(200, 100)
    factors = []
    for seed in SEEDS:
        rng = RecordingRng(seed)
        view = augment._scale(image, rng)
        (drawn,) = rng.uniform_draws
        fx, fy = view.size[0] / 200, view.size[1] / 100
        assert fx == pytest.approx(drawn, abs=0.005) and fy == pytest.approx(drawn, abs=0.01)
        factors.append(fx)
        # The whole image, smaller: the corners' coordinates still span the image.
        red = np.asarray(view)[..., 0].astype(int)
        assert red[:, 0].mean() < 4 and red[:, -1].mean() > 195
    assert 0.3 <= min(factors) < 0.32 and 0.68 < max(factors) <= 0.7


@pytest.mark.parametrize("tall", [True, False])
def test_downscale_of_a_small_image_keeps_sides_of_at_least_8_px(tall):
    image = _coordinates(16, 40) if tall else _coordinates(40, 16)
    narrow = []
    for seed in SEEDS:
        rng = RecordingRng(seed)
        size = augment._scale(image, rng).size
        short, long = size if tall else size[::-1]
        (drawn,) = rng.uniform_draws
        assert short == max(8, round(16 * drawn)) and long == round(40 * drawn)
        narrow.append(short)
    assert min(narrow) == 8 and max(narrow) > 8


def _luma(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601-2 luma, as PIL's convert("L") rounds it."""
    return np.floor(rgb @ np.array([0.299, 0.587, 0.114]) + 0.5)


def test_colour_scales_brightness_contrast_and_saturation_by_065_to_135():
    rng = np.random.default_rng(7)
    pixels = rng.integers(40, 200, (24, 32, 3)).astype(np.uint8)
    image = Image.fromarray(pixels)
    factors = []
    for seed in SEEDS:
        recording = RecordingRng(seed)
        view = np.asarray(augment._colour(image, recording)).astype(np.float64)
        brightness, contrast, saturation = recording.uniform_draws
        factors += [brightness, contrast, saturation]
        # Brightness: towards black; contrast: towards the mean grey; saturation: towards
        # each pixel's own grey (Haeberli and Voorhies' interpolation, as PIL does it).
        # PIL blends in float and truncates to 8 bits after each step.
        expected = np.clip(np.trunc(pixels * brightness), 0, 255)
        mean_grey = math.floor(_luma(expected).mean() + 0.5)
        expected = np.clip(np.trunc(mean_grey + contrast * (expected - mean_grey)), 0, 255)
        grey = _luma(expected)[..., None]
        expected = np.clip(np.trunc(grey + saturation * (expected - grey)), 0, 255)
        assert np.abs(view - expected).max() <= 1
    assert 0.65 <= min(factors) < 0.67 and 1.33 < max(factors) <= 1.35


def test_perspective_moves_each_corner_inwards_by_up_to_15_percent():
    width, height = 200, 120
    image = _coordinates(width, height)
    offsets = []
    corners = {(0, 0): (1, 1), (0, -1): (-1, 1), (-1, -1): (-1, -1), (-1, 0): (1, -1)}
    for seed in range(60):
        rng = RecordingRng(seed)
        view = augment._perspective(image, rng)
        assert view.size == image.size
        pixels = np.asarray(view).astype(np.float64)
        (drawn,) = rng.uniform_draws
        # Output corner i shows the input pixel moved inwards by drawn[i] of each side.
        for i, ((row, col), (sx, sy)) in enumerate(corners.items()):
            x0, y0 = (0 if col == 0 else width - 1), (0 if row == 0 else height - 1)
            dx = (pixels[row, col, 0] - x0) * sx
            dy = (pixels[row, col, 1] - y0) * sy
            assert dx == pytest.approx(drawn[i, 0] * width, abs=1.5)
            assert dy == pytest.approx(drawn[i, 1] * height, abs=1.5)
            offsets += [dx / width, dy / height]
        centre = pixels[height // 2, width // 2, :2]
        assert np.all(np.abs(centre - (width / 2, height / 2)) < 0.16 * np.array([width, height]))
    assert min(offsets) < 0.02 and 0.13 < max(offsets) < 0.16


def test_views_cycle_through_the_five_kinds_from_one_generator():
    image = _coordinates(120, 90)
    views = augment_views(image, count=7, seed=5)
    rng = np.random.default_rng(5)
    kinds = (augment._crop, augment._rotate, augment._scale, augment._colour, augment._perspective)
    expected = [kinds[i % 5](image, rng) for i in range(7)]
    for view, want in zip(views, expected, strict=True):
        np.testing.assert_array_equal(np.asarray(view), np.asarray(want))


def test_default_count_and_seed():
    image = _coordinates(64, 48)
    views = augment_views(image)
    assert len(views) == 10
    again = augment_views(image, count=10, seed=0)
    assert all(
        np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(views, again, strict=True)
    )


def test_smallest_accepted_image_and_count():
    assert len(augment_views(_coordinates(16, 16), count=1, seed=0)) == 1
    with pytest.raises(ValueError) as error:
        augment_views(_coordinates(15, 40))
    assert str(error.value) == "image: expected sides of at least 16 px, got (15, 40)"
    with pytest.raises(TypeError) as error:
        augment_views("photo.jpg")
    assert str(error.value) == "image: expected a PIL.Image.Image, got str"


def test_grey_image_views_are_rgb_copies_of_its_grey():
    grey = _coordinates(64, 48).convert("L")
    for view in augment_views(grey, count=5, seed=1):
        pixels = np.asarray(view)
        assert view.mode == "RGB"
        assert np.array_equal(pixels[..., 0], pixels[..., 1])
        assert np.array_equal(pixels[..., 1], pixels[..., 2])


def _homography(source: np.ndarray, target: np.ndarray):
    """scikit-image's projective transform taking ``source`` points onto ``target``."""
    from skimage.transform import ProjectiveTransform

    if hasattr(ProjectiveTransform, "from_estimate"):
        return ProjectiveTransform.from_estimate(source, target)
    transform = ProjectiveTransform()
    assert transform.estimate(source, target)
    return transform


def test_perspective_maps_every_pixel_through_the_homography_of_the_moved_corners():
    width, height = 200, 120
    image = _coordinates(width, height)
    corners = np.array([[0, 0], [width, 0], [width, height], [0, height]], np.float64)
    inward = np.array([[1, 1], [-1, 1], [-1, -1], [1, -1]], np.float64)
    oy, ox = np.mgrid[0:height, 0:width]
    centres = np.stack([ox.ravel() + 0.5, oy.ravel() + 0.5], axis=1)
    for seed in range(12):
        rng = RecordingRng(seed)
        view = np.asarray(augment._perspective(image, rng)).astype(np.float64)
        (drawn,) = rng.uniform_draws
        moved = corners + inward * drawn * [width, height]
        source = _homography(corners, moved)(centres) - 0.5  # pixel centres to indices
        sx, sy = source[:, 0].reshape(height, width), source[:, 1].reshape(height, width)
        inside = (sx > 2) & (sx < width - 3) & (sy > 2) & (sy < height - 3)
        # Bicubic interpolation reproduces the coordinate ramp; 8 bits truncate it.
        for channel, exact in ((0, sx), (1, sy)):
            error = (view[..., channel] - exact)[inside]
            assert error.min() >= -1.005 and error.max() <= 0.005


def test_perspective_resamples_bicubically():
    stripes = np.zeros((64, 64, 3), np.uint8)
    stripes[:, ::4] = 255
    for seed in range(5):
        view = np.asarray(
            augment._perspective(Image.fromarray(stripes), np.random.default_rng(seed))
        )
        # Nearest-neighbour sampling would keep the two stripe values only.
        assert np.unique(view[..., 0]).size > 10


def test_count_and_seed_errors_name_their_argument():
    image = _coordinates(32, 32)
    with pytest.raises(ValueError) as error:
        augment_views(image, count=0)
    assert str(error.value) == "count: expected an integer >= 1, got 0"
    with pytest.raises(ValueError) as error:
        augment_views(image, seed=-1)
    assert str(error.value) == "seed: expected an integer >= 0, got -1"
