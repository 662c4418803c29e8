"""The demo's lighting and perspective changes (demo/queries.py) measured on pictures made
to read them back: brightness, contrast, saturation and colour cast each recovered from the
output and compared with the values the seed draws, the blur's width from a sharp edge,
and where every pixel of the warp was sampled (written for mutation testing: the earlier
tests pinned only the brightness ranges and which edge shrinks)."""

from __future__ import annotations

import math
import random
from statistics import NormalDist

import numpy as np
from PIL import Image

from pyinstance.demo.queries import lighting, perspective, rotate, smaller

# Four 20-pixel bands: greys 20 and 100 (the response's slope), grey 60 (the picture's mean
# luminance: the contrast pivots about it) and a red of luminance 60 (what saturation moves).
_RED = (90, 47, 47)  # Pillow's L = (90·19595 + 47·38470 + 47·7471 + 32768) >> 16 = 60
_BANDS = ((20, 20, 20), (100, 100, 100), (60, 60, 60), _RED)


def _bands() -> Image.Image:
    pixels = np.zeros((20, 80, 3), np.uint8)
    for index, colour in enumerate(_BANDS):
        pixels[:, index * 20 : (index + 1) * 20] = colour
    return Image.fromarray(pixels)


def _drawn(seed: int) -> tuple[float, float, float, np.ndarray]:
    """The factors of the module doc's order of draws: brightness (a dark and a bright
    candidate, one chosen), contrast 0.7-1.3, saturation 0.5-1.5, three channel gains."""
    rng = random.Random(seed)
    brightness = rng.choice((rng.uniform(0.55, 0.75), rng.uniform(1.25, 1.45)))
    contrast = rng.uniform(0.7, 1.3)
    colour = rng.uniform(0.5, 1.5)
    gains = np.array([rng.uniform(0.85, 1.15) for _ in range(3)])
    return brightness, contrast, colour, gains


def test_lighting_applies_the_drawn_brightness_contrast_saturation_and_cast():
    """Each step is affine per channel, so from the band centres (away from the blur):
    slope = gain·brightness·contrast (greys 20 → 100), grey 60 = gain·brightness·60 (the
    pivot does not move), red − grey 60 = saturation·slope·30 in the red channel."""
    picture = _bands()
    contrasts, colours = [], []
    for seed in range(40):
        out = np.asarray(lighting(picture, random.Random(seed))).astype(float)
        dark, light, grey, red = (
            out[8:12, i * 20 + 8 : i * 20 + 12].mean(axis=(0, 1)) for i in range(4)
        )
        brightness, contrast, colour, gains = _drawn(seed)
        slope = (light - dark) / 80
        np.testing.assert_allclose(grey / grey[1], gains / gains[1], atol=0.04)  # the cast
        np.testing.assert_allclose(grey / (gains * 60), brightness, atol=0.04)
        np.testing.assert_allclose(slope / (grey / 60), contrast, atol=0.08)
        assert abs((red[0] - grey[0]) / (slope[0] * 30) - colour) < 0.2, seed
        contrasts.append(contrast)
        colours.append(colour)
    # the seeds cover both sides of each neutral value
    assert min(contrasts) < 0.85 and max(contrasts) > 1.15
    assert min(colours) < 0.8 and max(colours) > 1.2


def test_lighting_blurs_a_sharp_edge_by_a_gaussian_of_0_8_pixels():
    """Across a step at column 20, pixel x (centre x + 0.5) reaches the fraction
    Φ((x + 0.5 − 20) / 0.8) of the way up (Pillow's blur approximates the Gaussian)."""
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :20], pixels[:, 20:] = 30, 110
    picture = Image.fromarray(pixels)
    gaussian = NormalDist(0, 0.8)
    for seed in range(5):
        row = np.asarray(lighting(picture, random.Random(seed))).astype(float)[10, :, 1]
        low, high = row[:10].mean(), row[30:].mean()
        fraction = (row[16:24] - low) / (high - low)
        expected = [gaussian.cdf(x + 0.5 - 20) for x in range(16, 24)]
        np.testing.assert_allclose(fraction, expected, atol=0.06)


def _ramps(width: int, height: int) -> Image.Image:
    """Red = 2 × column, green = 4 × row: smooth, so bicubic sampling reads positions back."""
    columns, rows = np.meshgrid(np.arange(width), np.arange(height))
    pixels = np.stack([2 * columns, 4 * rows, np.full_like(rows, 100)], axis=-1)
    return Image.fromarray(pixels.astype(np.uint8))


def _bilinear(quad: tuple[float, ...], u: float, v: float) -> tuple[float, float]:
    """The source point of output point (u, v) in [0, 1]²: the quadrilateral's corners
    (upper left, lower left, lower right, upper right) blended bilinearly."""
    (x0, y0), (x1, y1), (x2, y2), (x3, y3) = (quad[i : i + 2] for i in range(0, 8, 2))
    corners = ((1 - u) * (1 - v), (1 - u) * v, u * v, u * (1 - v))
    sx = corners[0] * x0 + corners[1] * x1 + corners[2] * x2 + corners[3] * x3
    sy = corners[0] * y0 + corners[1] * y1 + corners[2] * y2 + corners[3] * y3
    return sx, sy


def test_perspective_samples_the_source_where_the_warped_quadrilateral_says():
    """One vertical edge of the source is stretched by ``squeeze`` above and below (its
    rows fall outside the picture: the output's edge shows a shorter, shrunk side); the
    other edge and the corners' columns stay. Each interior output pixel (centre x + 0.5,
    y + 0.5) shows the source point the quadrilateral maps it to."""
    width, height = 100, 60
    picture = _ramps(width, height)
    sides = set()
    for seed in range(12):
        rng = random.Random(seed)
        squeeze = rng.uniform(0.15, 0.25) * height / 2
        left = rng.random() < 0.5
        sides.add(left)
        if left:
            quad = (0, -squeeze, 0, height + squeeze, width, height, width, 0)
        else:
            quad = (0, 0, 0, height, width, height + squeeze, width, -squeeze)
        out = np.asarray(perspective(picture, random.Random(seed))).astype(float)
        checked = 0
        for y in range(2, height - 2):
            for x in range(2, width - 2):
                sx, sy = _bilinear(quad, (x + 0.5) / width, (y + 0.5) / height)
                if not (3 <= sx <= width - 4 and 3 <= sy <= height - 4):
                    continue  # near the border, bicubic sampling reads the wall colour too
                # pixel i of the ramps holds 2i / 4i at its centre i + 0.5; 8-bit output
                assert abs(out[y, x, 0] / 2 - (sx - 0.5)) <= 0.3, (seed, x, y)
                assert -0.4 <= out[y, x, 1] / 4 - (sy - 0.5) <= 0.15, (seed, x, y)
                checked += 1
        assert checked > 3000
    assert sides == {True, False}


def test_smaller_is_a_lanczos_reduction_at_the_drawn_size_and_place():
    # Noise, so that the reduction's filter shows: Pillow's Lanczos and its default bicubic
    # (what `resize` does without a filter) differ on it.
    picture = Image.fromarray(np.random.default_rng(0).integers(0, 256, (60, 90, 3), np.uint8))
    for seed in range(3):
        rng = random.Random(seed)  # the module doc's draws: the factor, then the position
        factor = rng.uniform(0.45, 0.6)
        width, height = round(90 * factor), round(60 * factor)
        left, top = rng.randint(0, 90 - width), rng.randint(0, 60 - height)
        out = np.asarray(smaller(picture, random.Random(seed)))
        lanczos = np.asarray(picture.resize((width, height), Image.Resampling.LANCZOS))
        bicubic = np.asarray(picture.resize((width, height), Image.Resampling.BICUBIC))
        assert not np.array_equal(lanczos, bicubic)
        np.testing.assert_array_equal(out[top : top + height, left : left + width], lanczos)
        wall = np.ones((60, 90), bool)
        wall[top : top + height, left : left + width] = False
        assert (out[wall] == (128, 122, 112)).all()


def test_rotate_turns_by_the_drawn_angle_with_bicubic_resampling():
    # 400 × 100: left half black, right half white. Expanded to hold the corners, the output
    # is w·sin(a) + h·cos(a) high (about 6 px per degree here), within Pillow's rounding of
    # the corners outwards.
    pixels = np.zeros((100, 400, 3), np.uint8)
    pixels[:, 200:] = 255
    picture = Image.fromarray(pixels)
    for seed in range(6):
        rng = random.Random(seed)  # the module doc's draws: 12-25 degrees, then the side
        angle = math.radians(rng.uniform(12, 25))
        out = rotate(picture, random.Random(seed))
        height = 400 * math.sin(angle) + 100 * math.cos(angle)
        assert height - 0.01 <= out.size[1] <= height + 2.01, (seed, out.size, height)
        # Bicubic: the oblique black-white edge has greys in between (nearest has none).
        rgb = np.asarray(out).astype(int)
        grey = (rgb[..., 0] == rgb[..., 1]) & (rgb[..., 1] == rgb[..., 2])
        between = grey & (rgb[..., 0] > 20) & (rgb[..., 0] < 235)
        assert between.sum() >= 50, (seed, int(between.sum()))


def test_smaller_copies_reach_the_wall_s_first_column_and_row():
    blue = Image.new("RGB", (20, 20), (0, 0, 255))
    lefts, tops = set(), set()
    for seed in range(60):
        out = np.asarray(smaller(blue, random.Random(seed)))
        rows, columns = np.nonzero(out[:, :, 2] > 200)
        lefts.add(int(columns.min()))
        tops.add(int(rows.min()))
    assert 0 in lefts and 0 in tops
