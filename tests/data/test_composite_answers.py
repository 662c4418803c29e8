"""SceneComposer's parts worked out by hand on tiny pictures (mutation survivors).

A scripted generator (:class:`Scripted`) puts every uniform or integer draw at one chosen
fraction ``t`` of its range (0: the low end, 1: the high end) and returns queued values for
the other draws, so each expected value below follows from the documented ranges and the
geometry alone.
"""

from __future__ import annotations

import colorsys

import numpy as np
import pytest
from PIL import Image

from pyinstance.data import composite
from pyinstance.data.composite import SceneComposer, _Frame, _Hanging


class Scripted(np.random.Generator):
    """A generator whose draws are chosen by the test (see the module docstring)."""

    def __init__(self, t: float = 0.5, random=(), choice=(), uniform=(), grain: float = 0.5):
        super().__init__(np.random.PCG64(0))
        self.t = t
        self.queued_random = list(random)
        self.queued_choice = list(choice)
        self.queued_uniform = list(uniform)
        self.grain = grain  # every value of an array drawn with random(size): 0.5 is no grain

    def uniform(self, low=0.0, high=1.0, size=None):
        if size is not None and self.queued_uniform:
            value = np.asarray(self.queued_uniform.pop(0), dtype=np.float64)
            assert value.shape == np.empty(size).shape, (value.shape, size)  # as many draws
            return value
        value = low + self.t * (high - low)
        return float(value) if size is None else np.full(size, value)

    def integers(self, low, high=None, size=None):
        if high is None:
            low, high = 0, low
        return low + round(self.t * (high - 1 - low))

    def random(self, size=None, dtype=np.float64):
        if size is not None:
            return np.full(size, self.grain, dtype=dtype)
        return self.queued_random.pop(0) if self.queued_random else 0.9

    def choice(self, a, size=None, replace=True, p=None):
        return self.queued_choice.pop(0)

    def standard_normal(self, size=None):
        return np.ones(size)


def rectangle(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float64)


def solid(width: int, height: int, colour=(0, 255, 0)) -> Image.Image:
    return Image.new("RGB", (width, height), colour)


# --- geometry -------------------------------------------------------------------------


def project(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Points through a 3×3 projective matrix, one at a time."""
    out = []
    for x, y in points:
        u, v, w = matrix @ np.array([x, y, 1.0])
        out.append((u / w, v / w))
    return np.array(out)


MATRIX = np.array([[1.5, 0.2, 3.0], [-0.1, 0.8, 4.0], [0.002, -0.001, 1.0]])


def test_homography_recovers_a_known_projective_map_and_apply_uses_it():
    source = rectangle(0, 0, 10, 6)  # not a square: x and y cannot be swapped unnoticed
    target = project(MATRIX, source)
    assert np.allclose(composite._homography(source, target), MATRIX, atol=1e-12)
    points = np.array([[2.5, 1.0], [7.0, 4.5], [-3.0, 9.0]])
    assert np.allclose(composite._apply(MATRIX, points), project(MATRIX, points), atol=1e-12)


@pytest.mark.parametrize(
    ("quad", "box"),
    [
        # each bound from a different corner, floored / ceiled
        ([[2.5, 1.2], [9.1, 0.7], [8.4, 6.6], [1.9, 5.3]], (1, 0, 10, 7)),
        # clipped to the 20×10 scene on every side
        ([[-3.5, -1.2], [30.1, -1.2], [30.1, 12.3], [-3.5, 12.3]], (0, 0, 20, 10)),
        ([[25, 12], [30, 12], [30, 15], [25, 15]], (20, 10, 20, 10)),
        ([[-9, -8], [-5, -8], [-5, -2], [-9, -2]], (0, 0, 0, 0)),
    ],
)
def test_bounds_floor_ceil_and_clip(quad, box):
    bounds = composite._bounds(np.array(quad, dtype=np.float64), 20, 10)
    assert bounds == box and all(type(value) is int for value in bounds)


@pytest.mark.parametrize(
    ("other", "overlap"),
    [
        ([10, 0, 20, 10], False),  # touching edges do not overlap
        ([9.9, 0, 20, 10], True),
        ([-10, 0, 0, 10], False),
        ([-10, 0, 0.1, 10], True),
        ([0, 10, 10, 20], False),
        ([0, 9.9, 10, 20], True),
        ([0, -10, 10, 0], False),
        ([0, -10, 10, 0.1], True),
        ([3, 20, 5, 30], False),  # x overlaps, y does not
        ([20, 3, 30, 5], False),
        ([2, 2, 3, 3], True),
    ],
)
def test_intersect_is_a_strict_overlap_on_both_axes(other, overlap):
    box = np.array([0, 0, 10, 10], dtype=np.float64)
    other = np.array(other, dtype=np.float64)
    assert composite._intersect(box, other) is overlap
    assert composite._intersect(other, box) is overlap


def test_place_moves_by_the_mean_of_two_draws_of_the_room():
    quad = rectangle(0, 0, 30, 10)
    draws = [[0.2, 0.4], [0.6, 1.0]]  # means: x 0.4, y 0.7 (by rows: 0.3, 0.8)
    placed = composite._place(quad, 100, 50, Scripted(uniform=[draws]))
    assert np.allclose(placed, quad + [0.4 * 70, 0.7 * 40])
    wide = rectangle(0, 0, 120, 10)  # no room across: it stays at x 0
    placed = composite._place(wide, 100, 50, Scripted(uniform=[draws]))
    assert np.allclose(placed, wide + [0.0, 0.7 * 40])


@pytest.mark.parametrize("t", [0.0, 0.5, 1.0])
def test_perspective_quad_turns_tilts_and_jitters(t):
    # amount 0.2 on 100×50. t=1: turn 0.2 (the right side recedes: its corners move 0.1 of
    # the height inwards and 0.05 of the width left), tilt 0.1 (the bottom recedes: its
    # corners move 0.05 of the width inwards), jitter +0.05 everywhere. t=0: the mirror
    # (left side and top recede), jitter −0.05. t=0.5: no move at all.
    expected = {
        0.0: [[5, 2.5], [90, -2.5], [95, 47.5], [0, 42.5]],
        0.5: [[0, 0], [100, 0], [100, 50], [0, 50]],
        1.0: [[5, 2.5], [100, 7.5], [95, 47.5], [10, 52.5]],
    }[t]
    quad = composite._perspective_quad(100, 50, 0.2, Scripted(t=t))
    assert np.allclose(quad, expected)


# --- hung pictures --------------------------------------------------------------------


def test_outline_grows_the_picture_in_its_own_units_through_its_perspective():
    # A 10×5 picture hung twice its size at (20, 30): a margin of 0.1 of its longest side
    # (1 picture pixel) is 2 scene pixels.
    item = _Hanging(solid(10, 5), rectangle(20, 30, 40, 40), None)
    assert np.allclose(item.outline(0.1), rectangle(18, 28, 42, 42))
    assert np.allclose(item.outer(), item.quad)
    assert np.allclose(item.footprint(), [19, 29, 41, 41])
    framed = _Hanging(solid(10, 5), rectangle(20, 30, 40, 40), _Frame(0.2, 0.1, (1, 2, 3)))
    assert np.allclose(framed.outer(), rectangle(14, 24, 46, 46))
    assert np.allclose(framed.footprint(), [13, 23, 47, 47])
    slanted = np.array([[3.0, 1.0], [20.0, 4.0], [18.0, 15.0], [1.0, 12.0]])
    assert np.allclose(_Hanging(solid(10, 5), slanted, None).outline(0.0), slanted)


@pytest.mark.parametrize(
    ("t", "random", "probability", "frame"),
    [
        (0.0, [0.0, 0.0], 0.5, _Frame(0.015, 0.03, (66, 34, 10))),  # dark wood −20 −6
        (1.0, [0.49, 0.29], 0.5, _Frame(0.07, 0.12, (194, 194, 198))),  # silver +20 +6
        (1.0, [0.0, 0.3], 1.0, _Frame(0.07, 0.0, (194, 194, 198))),  # no mat
        (0.5, [0.5, 0.0], 0.5, None),  # not framed (strictly below the probability)
        (0.0, [0.99, 0.0], 1.0, _Frame(0.015, 0.03, (66, 34, 10))),
    ],
)
def test_random_frame_spans_its_ranges(t, random, probability, frame):
    assert composite._random_frame(Scripted(t=t, random=random), probability) == frame


def test_random_frame_colours_are_clipped_and_rounded():
    class White(Scripted):
        def integers(self, low, high=None, size=None):
            return 4  # white (232, 230, 224)

    assert composite._random_frame(White(t=1.0, random=[0.0, 0.5]), 1.0).colour == (
        255,
        255,
        250,
    )
    shaded = composite._random_frame(White(t=0.3, random=[0.0, 0.5]), 1.0).colour
    # uniform(-20, 20) at 0.3 is -8, uniform(-6, 6) -2.4: 232 - 10.4 = 221.6 -> 222
    assert shaded == (222, 220, 214)


def test_random_frame_draws_the_same_values_framed_or_not():
    first, second = np.random.default_rng(3), np.random.default_rng(3)
    assert composite._random_frame(first, 0.0) is None
    assert composite._random_frame(second, 1.0) is not None
    assert first.random() == second.random()


def pixel(canvas: Image.Image, x: int, y: int) -> tuple[int, int, int]:
    return tuple(int(value) for value in np.asarray(canvas)[y, x])


def test_paint_frame_rim_body_lip_and_picture():
    # A 20×20 picture at (40, 40), border 1.0 (20 px): rim 0.7 from 20 to 23, body 1.0
    # to 37, lip 1.25 to the picture; colours truncated, then the picture drawn over it.
    canvas = solid(100, 100, (255, 255, 255))
    item = _Hanging(
        solid(20, 20, (0, 0, 200)), rectangle(40, 40, 60, 60), _Frame(1.0, 0.0, (101, 121, 141))
    )
    item.draw(canvas)
    assert pixel(canvas, 10, 50) == (255, 255, 255)
    assert pixel(canvas, 21, 50) == (70, 84, 98)
    assert pixel(canvas, 78, 50) == (70, 84, 98)
    assert pixel(canvas, 30, 50) == (101, 121, 141)
    assert pixel(canvas, 50, 25) == (101, 121, 141)
    assert pixel(canvas, 38, 50) == (126, 151, 176)
    assert pixel(canvas, 50, 61) == (126, 151, 176)
    assert pixel(canvas, 50, 50) == (0, 0, 200)


def test_paint_frame_with_a_mat_and_a_light_colour():
    # border 0.5, mat 0.5 of 20 px: rim from 20, body from 21.5, lip from 28.5, mat from 30.
    canvas = solid(100, 100, (0, 0, 0))
    item = _Hanging(solid(20, 20), rectangle(40, 40, 60, 60), _Frame(0.5, 0.5, (220, 200, 100)))
    composite._paint_frame(canvas, item)
    assert pixel(canvas, 20, 50) == (154, 140, 70)
    assert pixel(canvas, 25, 50) == (220, 200, 100)
    assert pixel(canvas, 29, 50) == (255, 250, 125)
    assert pixel(canvas, 35, 50) == (236, 234, 228)
    assert pixel(canvas, 50, 50) == (236, 234, 228)


# --- pasting --------------------------------------------------------------------------


def test_polygon_mask_covers_whole_and_half_pixels():
    # Pillow's polygon fill includes its right and bottom boundary: one subpixel row of the
    # 4×4 supersampling (a coverage of 64) spills past those edges.
    mask = composite._polygon_mask(rectangle(1, 1, 4, 3), 6, 5)
    assert mask.mode == "L" and mask.size == (6, 5)
    covered = np.asarray(mask).astype(int)
    assert (covered[1:3, 1:4] == 255).all()
    assert covered[:, 0].max() == covered[0].max() == covered[:, 5].max() == covered[4].max() == 0
    assert covered[1:4, 4].max() <= 64 and covered[3, 1:4].max() <= 64
    half = np.asarray(composite._polygon_mask(rectangle(1.5, 1, 4, 3), 6, 5)).astype(int)
    assert 126 <= half[1, 1] <= 129 and half[1, 2] == 255 and half[1, 0] == 0


def test_paste_warped_fills_exactly_the_quad():
    canvas = solid(20, 12, (50, 50, 50))
    composite._paste_warped(canvas, solid(10, 5, (200, 0, 0)), rectangle(3, 4, 13, 9))
    expected = np.full((12, 20, 3), 50, np.uint8)
    expected[4:9, 3:13] = (200, 0, 0)
    assert np.array_equal(np.asarray(canvas), expected)


def test_paste_warped_at_its_own_size_keeps_the_pixels():
    pixels = np.random.default_rng(0).integers(0, 256, (6, 8, 3), dtype=np.uint8)
    canvas = solid(20, 12, (0, 0, 0))
    composite._paste_warped(canvas, Image.fromarray(pixels), rectangle(2, 3, 10, 9))
    pasted = np.asarray(canvas)[3:9, 2:10].astype(int)
    assert np.abs(pasted - pixels).max() <= 1


def test_paste_warped_draws_only_inside_the_canvas():
    canvas = solid(20, 12, (50, 50, 50))
    composite._paste_warped(canvas, solid(10, 5, (200, 0, 0)), rectangle(-4, -2, 6, 3))
    expected = np.full((12, 20, 3), 50, np.uint8)
    expected[0:3, 0:6] = (200, 0, 0)
    assert np.array_equal(np.asarray(canvas), expected)
    for quad in (rectangle(-10, 2, 0, 7), rectangle(20, 2, 30, 7), rectangle(2, 12, 8, 20)):
        untouched = solid(20, 12, (50, 50, 50))
        composite._paste_warped(untouched, solid(10, 5, (200, 0, 0)), quad)
        assert (np.asarray(untouched) == 50).all()


def test_paste_warped_reduces_before_it_warps():
    # A one-pixel checkerboard 40×20 pasted as 10×5: anti-aliased, an even grey.
    board = (np.indices((20, 40)).sum(axis=0) % 2 * 255).astype(np.uint8)
    canvas = solid(20, 12, (0, 0, 255))
    composite._paste_warped(
        canvas, Image.fromarray(np.repeat(board[..., None], 3, axis=2)), rectangle(3, 4, 13, 9)
    )
    inner = np.asarray(canvas)[5:8, 4:12].astype(float)
    assert np.abs(inner - 127.5).max() < 25


# --- wall, light, labels, camera -----------------------------------------------------


def test_coarse_grid_cells_in_units_of_the_longest_side():
    xs, ys = composite._coarse_grid(40, 16)  # 5×2 cells of 8 px
    assert xs.shape == ys.shape == (2, 5) and xs.dtype == ys.dtype == np.float32
    assert np.allclose(xs, [[0.1, 0.3, 0.5, 0.7, 0.9]] * 2)
    assert np.allclose(ys, [[0.1] * 5, [0.3] * 5])
    xs, ys = composite._coarse_grid(10, 12)  # at least 2×2 cells
    assert np.allclose(xs, [[2.5 / 12, 7.5 / 12]] * 2)
    assert np.allclose(ys, [[0.25, 0.25], [0.75, 0.75]])


def test_upsample_bilinear_or_bicubic():
    field = np.array([[0.0, 1.0], [0.0, 1.0]])
    out = composite._upsample(field, 4, 2)
    assert out.dtype == np.float32 and out.shape == (2, 4)
    assert np.allclose(out, [[0.0, 0.25, 0.75, 1.0]] * 2)
    smooth = composite._upsample(field, 4, 2, smooth=True)
    assert smooth.shape == (2, 4) and not np.allclose(smooth, out)


def test_grain_is_uniform_and_centred():
    grain = composite._grain(50, 40, np.random.default_rng(0))
    assert grain.shape == (40, 50) and grain.dtype == np.float32
    assert -0.5 <= grain.min() < -0.45 and 0.45 < grain.max() < 0.5
    assert abs(float(grain.mean())) < 0.02


def test_to_uint8_rounds_and_clips():
    values = np.array([-3.0, 0.4, 0.6, 2.5, 254.6, 300.0])
    out = composite._to_uint8(values)
    assert out.dtype == np.uint8 and out.tolist() == [0, 0, 1, 2, 255, 255]


def hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h, s, v)) * 255.0


def test_wall_at_the_low_end_is_flat_light_grey():
    # t=0: warm hue 0.06, saturation 0, value 0.7; no gradient, mottling or grain.
    wall = composite._wall(64, 32, Scripted(t=0.0, random=[0.0, 0.0, 0.5]))
    assert wall.shape == (32, 64, 3) and wall.dtype == np.float32
    assert np.allclose(wall, 0.7 * 255.0)


@pytest.mark.parametrize(("second", "hue"), [(0.0, 0.16), (0.59, 0.16), (0.6, 0.66)])
def test_wall_at_the_high_end_has_its_gradient_and_mottle(second, hue):
    # t=1: value 0.96, saturation 0.07; direction 2π (along x), gradient 0.2 per longest
    # side around the mean, mottle +0.025 (cells of ones). Cells at x (i + 0.5) / 8.
    wall = composite._wall(64, 32, Scripted(t=1.0, random=[0.0, second, 0.5]))
    base = hsv(hue, 0.07, 0.96)
    assert np.allclose(wall[:, 0], base * (1.025 + 0.2 * (0.5 / 8 - 0.5)), atol=1e-3)
    assert np.allclose(wall[:, -1], base * (1.025 + 0.2 * (7.5 / 8 - 0.5)), atol=1e-3)
    assert np.allclose(wall, wall[:1], atol=1e-4)  # constant along y


def test_wall_gradient_follows_its_direction():
    # t=0.25: direction π/2 (along y), gradient 0.05; cells at y (j + 0.5) / 8 of 64.
    wall = composite._wall(32, 64, Scripted(t=0.25, random=[0.0, 0.0, 0.5]))
    base = hsv(0.085, 0.0175, 0.765)
    mottle = 1.0 + 0.25 * 0.025
    assert np.allclose(wall[0], base * (mottle + 0.05 * (0.5 / 8 - 0.5)), atol=1e-3)
    assert np.allclose(wall[-1], base * (mottle + 0.05 * (7.5 / 8 - 0.5)), atol=1e-3)
    assert np.allclose(wall, wall[:, :1], atol=1e-4)  # constant along x


def test_wall_saturated_colour():
    # random ≥ 0.8: hue from the next random draw, saturation 0.08, value 0.25 at t=0.
    wall = composite._wall(16, 16, Scripted(t=0.0, random=[0.8, 0.3, 0.5]))
    assert np.allclose(wall, hsv(0.3, 0.08, 0.25), atol=1e-3)


def test_wall_grain_amplitude():
    # t=0 but a grain of +0.5 everywhere (draws of 1.0): light 1 + 0.06 · 0 ... only the
    # grain's amplitude is at its low end 0, so nothing changes; at t=1 it is 0.06 · 0.5.
    flat = composite._wall(16, 16, Scripted(t=0.0, random=[0.0, 0.0, 0.5], grain=1.0))
    assert np.allclose(flat, 0.7 * 255.0)
    grainy = composite._wall(16, 16, Scripted(t=1.0, random=[0.0, 0.0, 0.5], grain=1.0))
    plain = composite._wall(16, 16, Scripted(t=1.0, random=[0.0, 0.0, 0.5]))
    assert np.allclose(grainy / plain, 1.0 + 0.03 / (plain / hsv(0.16, 0.07, 0.96)), atol=1e-4)


@pytest.mark.parametrize(("height", "top", "skirting"), [(32, 30, 2), (320, 304, 4)])
def test_wall_floor_band_and_skirting(height, top, skirting):
    # t=0: the floor takes the bottom 5 % (top = int(0.95 h)), dark wood at half brightness;
    # the skirting board, max(2, h // 80) rows above it, is 0.8 as bright.
    wall = composite._wall(16, height, Scripted(t=0.0, random=[0.0, 0.0, 0.0]))
    grey = 0.7 * 255.0
    assert np.allclose(wall[top:], np.array([92, 60, 36]) * 0.5)
    assert np.allclose(wall[top - skirting : top], 0.8 * grey)
    assert np.allclose(wall[: top - skirting], grey)


def test_wall_floor_at_the_high_end():
    # t=1: the floor takes the bottom 20 % (int(0.8 · 50) = 40), silver at full brightness,
    # lit by the same gradient as the wall.
    wall = composite._wall(64, 50, Scripted(t=1.0, random=[0.0, 0.0, 0.0]))
    light = wall[0, :, 0] / hsv(0.16, 0.07, 0.96)[0]
    assert np.allclose(wall[45], np.outer(light, [168, 168, 172]), atol=1e-3)
    assert np.allclose(wall[40], np.outer(light, [168, 168, 172]), atol=1e-3)
    assert not np.allclose(wall[39], np.outer(light, [168, 168, 172]), atol=1e-3)


def test_shadow_light_offset_opacity_and_softness():
    item = _Hanging(solid(80, 80), rectangle(60, 60, 140, 140), None)
    high = composite._shadow_light([item], 200, 200, 200, Scripted(t=1.0))
    low = composite._shadow_light([item], 200, 200, 200, Scripted(t=0.0))
    assert high.shape == (200, 200) and high.dtype == np.float32
    # opacity 0.45 (t=1) or 0.15 (t=0) under the middle of the picture, none far away
    assert high[100, 100] == pytest.approx(0.55, abs=2e-3)
    assert low[100, 100] == pytest.approx(0.85, abs=2e-3)
    assert high[5, 5] == low[5, 5] == 1.0

    def centroid(light):
        dark = 1.0 - light
        ys, xs = np.indices(light.shape)
        return np.array([(xs * dark).sum(), (ys * dark).sum()]) / dark.sum()

    # offsets (0.015, 0.03) and (−0.015, 0.005) of the size 200: (3, 6) and (−3, 1)
    assert np.allclose(centroid(high) - centroid(low), [6.0, 5.0], atol=0.3)

    # blur radius 8 · 200 / 448 px (t=1) against 2 · 200 / 448 px (t=0)
    def soft(light, opacity):
        row = light[100]
        return int(((row > 1 - opacity + 0.01) & (row < 0.99)).sum())

    assert soft(high, 0.45) >= soft(low, 0.15) + 6


def test_shadow_light_falls_from_the_frame_and_scales_with_size():
    framed = _Hanging(solid(80, 80), rectangle(60, 60, 140, 140), _Frame(0.25, 0.0, (0, 0, 0)))
    light = composite._shadow_light([framed], 200, 200, 100, Scripted(t=0.5))
    # frame 20 px around the picture; offset (0, 1.75) at size 100; opacity 0.3
    assert light[100, 45] == pytest.approx(0.7, abs=2e-3)
    assert light[100, 30] == pytest.approx(1.0, abs=2e-3)


def footprint_item(x0: float, y0: float, x1: float, y1: float) -> _Hanging:
    """An unframed picture whose footprint is (x0, y0, x1, y1)."""
    return _Hanging(solid(10, 10), rectangle(x0 + 1, y0 + 1, x1 - 1, y1 - 1), None)


@pytest.mark.parametrize(
    ("t", "random", "footprint", "box"),
    [
        # width 0.05 of the longest footprint side (102), height 0.5 of that, gap 0.02 of
        # the footprint's width, right of it, top 0.4 down its height (52)
        (0.0, [0.0, 0.0], (49, 49, 151, 101), [153.04, 69.8, 158.14, 72.35]),
        # 0.1, 0.9, gap 0.08, left of it (random 0.7 is not below 0.7), top 0.8 down
        (1.0, [0.0, 0.7], (49, 49, 151, 101), [30.64, 90.6, 40.84, 99.78]),
        # a tall footprint: the label's width follows its height, the gap its width
        (0.0, [0.0, 0.0], (49, 19, 101, 181), [102.04, 83.8, 110.14, 87.85]),
    ],
)
def test_label_box_beside_the_main_picture(t, random, footprint, box):
    main = footprint_item(*footprint)
    found = composite._label_box(main, [main.footprint()], 300, 200, Scripted(t=t, random=random))
    assert np.allclose(found, box)


def test_label_box_only_when_wanted_inside_and_free():
    main = footprint_item(49, 49, 151, 101)
    taken = [main.footprint()]
    assert composite._label_box(main, taken, 300, 200, Scripted(t=0.0, random=[0.5, 0.0])) is None
    assert composite._label_box(main, taken, 158, 200, Scripted(t=0.0, random=[0.0, 0.0])) is None
    assert (
        composite._label_box(main, taken, 159, 200, Scripted(t=0.0, random=[0.0, 0.0])) is not None
    )
    assert composite._label_box(main, taken, 300, 72, Scripted(t=0.0, random=[0.0, 0.0])) is None
    assert (
        composite._label_box(main, taken, 300, 73, Scripted(t=0.0, random=[0.0, 0.0])) is not None
    )
    blocked = [*taken, np.array([155.0, 60.0, 170.0, 80.0])]
    assert composite._label_box(main, blocked, 300, 200, Scripted(t=0.0, random=[0.0, 0.0])) is None
    near_left = footprint_item(5, 49, 107, 101)  # left of it: 5 − 8.16 − 10.2 < 0
    assert (
        composite._label_box(
            near_left, [near_left.footprint()], 300, 200, Scripted(t=1.0, random=[0.0, 0.7])
        )
        is None
    )
    exact = footprint_item(0, 0, 120, 50)  # 6 wide, 3 high, top 20: bottom edge at 23
    free = [exact.footprint()]
    assert (
        composite._label_box(exact, free, 300, 23, Scripted(t=0.0, random=[0.0, 0.0])) is not None
    )
    assert composite._label_box(exact, free, 300, 22, Scripted(t=0.0, random=[0.0, 0.0])) is None


def test_draw_label_card_and_lines():
    canvas = solid(140, 80, (255, 255, 255))
    # t=1: shade 249, 4 lines at y 20, 30, 40, 50, from x 20 (0.1 in) to x 100 (0.9 along)
    composite._draw_label(canvas, np.array([10.0, 10.0, 110.0, 60.0]), Scripted(t=1.0))
    pixels = np.asarray(canvas)
    assert pixel(canvas, 60, 20) == (70, 70, 70)
    assert pixel(canvas, 60, 25) == (249, 249, 245)
    assert pixel(canvas, 15, 20) == (249, 249, 245)
    assert pixel(canvas, 105, 20) == (249, 249, 245)
    assert pixel(canvas, 60, 70) == (255, 255, 255)
    dark = np.nonzero((pixels[..., 0] == 70).any(axis=1))[0].tolist()
    assert dark == [20, 30, 40, 50]
    columns = np.nonzero(pixels[20, :, 0] == 70)[0]
    assert (columns.min(), columns.max()) == (20, 100)
    low = solid(140, 80, (255, 255, 255))
    # t=0: shade 225, 2 lines (at y 26.7 and 43.3), ending half-way (x 60)
    composite._draw_label(low, np.array([10.0, 10.0, 110.0, 60.0]), Scripted(t=0.0))
    assert pixel(low, 80, 20) == (225, 225, 221)
    assert len(np.nonzero((np.asarray(low)[..., 0] == 70).any(axis=1))[0]) == 2
    columns = np.nonzero((np.asarray(low)[..., 0] == 70).any(axis=0))[0]
    assert (columns.min(), columns.max()) == (20, 60)


def test_camera_spot_light_cast_and_noise():
    # t=1: spot at (mean x + 0.3 · width, top − 0.5 · height) of the quad, in units of the
    # longest side: (0.98, −0.5); light 1.05 − 0.25 · min(d², 1.5); cast 1.05; noise +5.
    canvas = solid(100, 100, (100, 100, 100))
    quad = rectangle(90, 0, 100, 100)
    image = composite._camera(canvas, quad, Scripted(t=1.0, random=[0.5], grain=1.0))
    ys, xs = (np.indices((100, 100)) + 0.5) / 100
    squared = np.minimum((xs - 0.98) ** 2 + (ys + 0.5) ** 2, 1.5)
    expected = 100.0 * (1.05 - 0.25 * squared) * 1.05 + 5.0
    found = np.asarray(image)[..., 0].astype(float)
    # bilinear light from a grid 1/12 of the side coarse: 1.3 levels off at the kink of
    # min(d², 1.5), 0.1 elsewhere, plus rounding
    assert np.abs(found - expected)[5:95, 5:95].max() <= 2.0
    assert np.abs(found - expected)[5:95, 5:95].mean() <= 0.5
    assert np.array_equal(np.asarray(image)[..., 0], np.asarray(image)[..., 2])
    # t=0: no fall-off, a 0.95 cast, no noise: 100 · 1.05 · 0.95 = 99.75
    flat = composite._camera(canvas, quad, Scripted(t=0.0, random=[0.5], grain=1.0))
    assert (np.asarray(flat) == 100).all()


@pytest.mark.parametrize(("draw", "blurred"), [(0.0, True), (0.29, True), (0.3, False)])
def test_camera_blurs_sometimes(draw, blurred):
    pixels = np.zeros((20, 20, 3), np.uint8)
    pixels[:, 10:] = 100
    image = composite._camera(
        Image.fromarray(pixels), rectangle(0, 0, 20, 20), Scripted(t=0.0, random=[draw])
    )
    edge = np.asarray(image)[10, 9, 0]
    assert bool(edge > 10) is blurred


# --- the composer's own steps ---------------------------------------------------------


def test_quad_is_scaled_to_the_drawn_fraction_at_the_origin():
    composer = SceneComposer(size=200, scale=(0.2, 0.6), perspective=0.2)
    flat = composer._quad((100, 50), Scripted(t=0.5))  # no perspective, fraction 0.4
    assert np.allclose(flat, rectangle(0, 0, 80, 40))
    tall = composer._quad((50, 100), Scripted(t=0.5))
    assert np.allclose(tall, rectangle(0, 0, 40, 80))
    # t=1: the perspective quad of test_perspective_quad_turns_tilts_and_jitters, moved to
    # the origin and scaled so that its 95 px wide box becomes 0.6 · 200 = 120
    slanted = composer._quad((100, 50), Scripted(t=1.0))
    expected = (np.array([[5, 2.5], [100, 7.5], [95, 47.5], [10, 52.5]]) - [5, 2.5]) * 120 / 95
    assert np.allclose(slanted, expected)


@pytest.mark.parametrize(
    ("extent", "t", "size"),
    [
        ((120, 80), 1.0, (200, 150)),  # aspect 4/3: 200 / (4/3) = 150
        ((80, 120), 1.0, (150, 200)),  # oriented like the quad
        ((100, 100), 1.0, (200, 150)),  # a square quad: landscape
        ((190, 170.2), 1.0, (200, 173)),  # never shorter than the quad + 2
        ((199.5, 199.0), 1.0, (200, 200)),  # nor longer than the size
        ((120, 80), 0.0, (200, 200)),  # aspect 1
        ((120, 80), 0.5, (200, 171)),  # aspect 7/6: 171.4
    ],
)
def test_scene_size(extent, t, size):
    composer = SceneComposer(size=200, aspect=4 / 3)
    quad = rectangle(0, 0, *extent)
    assert composer._scene_size(quad, Scripted(t=t)) == size


MAIN = (100.0, 100.0, 200.0, 150.0)  # footprint 99..201 × 99..151, extent 100 × 50


@pytest.mark.parametrize(
    ("side", "edge", "centre"),
    [
        # the other (40×20 scaled 0.9 · 100 / 40: 90×45) hangs a gap of 0.145 · 100 from
        # the main footprint, centred on it (no jitter at t=0.5)
        (0, ("x1", 99 - 14.5), ("y", 125.0)),
        (1, ("x0", 201 + 14.5), ("y", 125.0)),
        (2, ("y1", 99 - 14.5), ("x", 150.0)),
        (3, ("y0", 151 + 14.5), ("x", 150.0)),
    ],
)
def test_beside_hangs_a_gap_away_on_the_drawn_side(side, edge, centre):
    composer = SceneComposer(size=400, perspective=0.2, frame=0.0)
    main = _Hanging(solid(100, 50), rectangle(*MAIN), None)
    other = composer._beside(
        solid(40, 20, (0, 0, 255)), main, [main.footprint()], 400, 300, Scripted(choice=[side])
    )
    box = other.footprint()
    names = {"x0": box[0], "y0": box[1], "x1": box[2], "y1": box[3]}
    assert names[edge[0]] == pytest.approx(edge[1])
    middle = {"x": (box[0] + box[2]) / 2, "y": (box[1] + box[3]) / 2}[centre[0]]
    assert middle == pytest.approx(centre[1])
    assert np.allclose(np.ptp(other.quad, axis=0), [90, 45])
    assert other.frame is None


def test_beside_at_the_high_end_with_a_frame():
    # t=1: scale 1.2 (120×60), gap 0.25 · 100, jitter 0.3 of the footprint (102, 52);
    # frame border 0.07 of the picture's 40 px (×3 scene): 8.4 px, no mat (random 0.9)
    composer = SceneComposer(size=400, perspective=0.0, frame=1.0)
    main = _Hanging(solid(100, 50), rectangle(*MAIN), None)
    other = composer._beside(
        solid(40, 20), main, [main.footprint()], 400, 300, Scripted(t=1.0, choice=[1])
    )
    box = other.footprint()
    assert box[0] == pytest.approx(226.0)
    assert (box[1] + box[3]) / 2 == pytest.approx(125 + 0.3 * 52)
    assert other.quad[:, 0].min() == pytest.approx(227.0 + 8.4)
    assert np.allclose(np.ptp(other.quad, axis=0), [120, 60])
    assert other.frame is not None and other.frame.border == pytest.approx(0.07)


@pytest.mark.parametrize(
    ("width", "height", "side", "hung"),
    [(220, 300, 1, True), (219, 300, 1, False), (400, 170, 3, True), (400, 169, 3, False)],
)
def test_beside_needs_four_visible_pixels(width, height, side, hung):
    # the picture starts at x 216.5 (right) or y 166.5 (below): 4 pixels seen from 216 / 166
    composer = SceneComposer(size=400, perspective=0.0, frame=0.0)
    main = _Hanging(solid(100, 50), rectangle(*MAIN), None)
    other = composer._beside(
        solid(40, 20), main, [main.footprint()], width, height, Scripted(choice=[side])
    )
    assert (other is not None) is hung


def test_beside_never_overlaps_what_hangs():
    composer = SceneComposer(size=400, perspective=0.0, frame=0.0)
    main = _Hanging(solid(100, 50), rectangle(*MAIN), None)
    blocker = np.array([300.0, 100.0, 310.0, 110.0])  # inside the right-hand place
    taken = [main.footprint(), blocker]
    assert composer._beside(solid(40, 20), main, taken, 400, 300, Scripted(choice=[1])) is None
    free = [main.footprint(), np.array([0.0, 0.0, 10.0, 10.0])]
    assert composer._beside(solid(40, 20), main, free, 400, 300, Scripted(choice=[1])) is not None


def test_check_others_accepts_sequences_of_rgb_images_only():
    pool = [solid(5, 5), solid(6, 4)]
    assert composite._check_others(pool) == pool
    assert composite._check_others(tuple(pool)) == pool
    assert composite._check_others(()) == []
    with pytest.raises(ValueError, match=r"others\[1\]: expected a PIL image in mode RGB"):
        composite._check_others([solid(5, 5), Image.new("L", (5, 5))])
    for bad in ("abc", b"abc", solid(5, 5), iter(pool), 3):
        with pytest.raises(TypeError, match="others: expected a sequence"):
            composite._check_others(bad)


def test_call_worked_out_with_scripted_draws():
    # size 200, fraction 0.4: the 100×50 reference becomes 80×40; scene aspect 7/6:
    # 200×171; placed half-way into the room (120, 131): at (60, 65.5). One other (count
    # 0.5 · 2 = 1), pool[1], on the right: 0.9 · 80 / 40 = 1.8 times (72×36), a gap of
    # 0.145 · 80 = 11.6 from the footprint (59..141): it starts at 153.6, clipped to 200.
    composer = SceneComposer(size=200, scale=(0.2, 0.6), perspective=0.1, others=2, frame=0.0)
    pool = [solid(40, 20, (255, 0, 0)), solid(40, 20, (0, 0, 255))]
    rng = Scripted(t=0.5, choice=[np.array([1]), 1])
    scene = composer(solid(100, 50), rng, pool)
    assert scene.image.size == (200, 171)
    assert np.allclose(scene.corners, rectangle(60, 65.5, 140, 105.5))
    assert scene.box == (60, 65, 140, 106)
    assert scene.other_boxes == ((153, 67, 200, 104),)
    pixels = np.asarray(scene.image).astype(int)
    green = pixels[..., 1] > 2 * np.maximum(pixels[..., 0], pixels[..., 2]) + 30
    blue = pixels[..., 2] > 2 * np.maximum(pixels[..., 0], pixels[..., 1]) + 30
    red = pixels[..., 0] > 2 * np.maximum(pixels[..., 1], pixels[..., 2]) + 30
    assert green[66:105, 61:139].all() and green.sum() <= 80 * 41
    assert blue[68:103, 154:200].all()
    assert not red.any()


def test_parameters_at_their_bounds_are_accepted_and_normalised():
    lowest = SceneComposer(
        size=32, scale=(1e-9, 1e-9), perspective=0.0, others=0, frame=0.0, aspect=1.0
    )
    assert (lowest.size, lowest.perspective, lowest.others, lowest.frame) == (32, 0.0, 0, 0.0)
    highest = SceneComposer(size=4096, scale=(1, 1), perspective=0.4, others=9, frame=1, aspect=4)
    assert highest.scale == (1.0, 1.0) and type(highest.scale[0]) is float
    assert (highest.perspective, highest.frame, highest.aspect) == (0.4, 1.0, 4.0)
    assert type(highest.frame) is float and type(highest.aspect) is float
    for field, value in (("size", 31), ("aspect", 4.01), ("perspective", 0.41), ("frame", 1.01)):
        with pytest.raises(ValueError, match=field):
            SceneComposer(**{field: value})


# --- survivors of the mut-composite2 run (issue 16) -----------------------------------


def test_paint_frame_keeps_dark_channels_at_zero():
    # rim 0.7, body 1.0, lip 1.25 of (0, 1, 200), truncated: a channel of 0 (or 0.7) stays 0
    canvas = solid(100, 100, (255, 255, 255))
    item = _Hanging(solid(20, 20), rectangle(40, 40, 60, 60), _Frame(1.0, 0.0, (0, 1, 200)))
    composite._paint_frame(canvas, item)
    assert pixel(canvas, 21, 50) == (0, 0, 140)
    assert pixel(canvas, 30, 50) == (0, 1, 200)
    assert pixel(canvas, 38, 50) == (0, 1, 250)


@pytest.mark.parametrize(
    ("field", "value", "error", "message"),
    [
        ("size", 31, ValueError, r"^size: expected an integer >= 32"),
        ("size", 32.0, TypeError, r"^size: expected an integer"),
        ("scale", (0.0, 0.5), ValueError, r"^scale\[0\]: expected"),
        ("scale", (0.5, 1.01), ValueError, r"^scale\[1\]: expected"),
        ("scale", (0.6, 0.5), ValueError, r"^scale: expected low <= high"),
        ("perspective", -0.01, ValueError, r"^perspective: expected"),
        ("perspective", 0.41, ValueError, r"^perspective: expected"),
        ("others", -1, ValueError, r"^others: expected an integer >= 0"),
        ("others", 1.0, TypeError, r"^others: expected an integer"),
        ("frame", -0.01, ValueError, r"^frame: expected"),
        ("frame", 1.01, ValueError, r"^frame: expected"),
        ("aspect", 0.99, ValueError, r"^aspect: expected"),
        ("aspect", 4.01, ValueError, r"^aspect: expected"),
    ],
)
def test_parameters_out_of_range_are_refused_by_name(field, value, error, message):
    with pytest.raises(error, match=message):
        SceneComposer(**{field: value})


def test_parameters_are_stored_as_python_numbers():
    composer = SceneComposer(
        size=np.int64(64),
        scale=(np.float32(0.5), 1),
        perspective=0,
        others=np.int64(1),
        frame=1,
        aspect=2,
    )
    stored = (composer.size, composer.scale, composer.perspective, composer.others)
    assert stored == (64, (0.5, 1.0), 0.0, 1) and (composer.frame, composer.aspect) == (1.0, 2.0)
    assert [type(value) for value in (composer.size, composer.others)] == [int, int]
    numbers = (*composer.scale, composer.perspective, composer.frame, composer.aspect)
    assert all(type(value) is float for value in numbers)


class Indexed(Scripted):
    """A scripted generator whose integer draws all return ``index``."""

    def __init__(self, index: int, **kwargs):
        super().__init__(**kwargs)
        self.index = index

    def integers(self, low, high=None, size=None):
        return self.index


def test_random_frame_shades_each_channel_by_its_own_draw():
    # black (28, 27, 26); t=0.5: the common shade is 0, the channels' own draws −6, 0, +6
    rng = Indexed(2, t=0.5, random=[0.0, 0.5], uniform=[[-6.0, 0.0, 6.0]])
    assert composite._random_frame(rng, 1.0).colour == (22, 27, 32)
    # t=0: −20 − 6 on every channel, black down to (2, 1, 0): the darkest frame colour
    assert composite._random_frame(Indexed(2, t=0.0, random=[0.0, 0.5]), 1.0).colour == (2, 1, 0)


def test_paste_warped_interpolates_an_enlargement():
    # a black and a white pixel side by side, pasted 20×10: a smooth ramp between them
    # (bicubic), not a hard step (nearest)
    pair = Image.fromarray(np.array([[[0, 0, 0], [255, 255, 255]]], dtype=np.uint8))
    canvas = solid(30, 14, (0, 0, 255))
    composite._paste_warped(canvas, pair, rectangle(5, 2, 25, 12))
    row = np.asarray(canvas)[7, 5:25, 0].astype(int)
    assert row[0] <= 5 and row[-1] >= 250
    assert np.all(np.diff(row) >= -12)  # bicubic overshoots a little, never steps back
    assert len({value for value in row.tolist() if 20 < value < 235}) >= 4


def test_call_refuses_bad_arguments_by_name():
    composer = SceneComposer(size=64)
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match=r"^reference: expected a PIL image in mode RGB"):
        composer(Image.new("L", (10, 10)), rng)
    with pytest.raises(TypeError, match=r"^reference: expected a PIL image in mode RGB"):
        composer(np.zeros((10, 10, 3), np.uint8), rng)
    with pytest.raises(TypeError, match=r"^rng: expected a numpy.random.Generator"):
        composer(solid(10, 10), 0)
    with pytest.raises(TypeError, match=r"^others: expected a sequence"):
        composer(solid(10, 10), rng, solid(10, 10))


@pytest.mark.parametrize(("others", "pool", "counts"), [(3, 2, {0, 1, 2}), (1, 3, {0, 1})])
def test_call_hangs_up_to_others_distinct_pictures(monkeypatch, others, pool, counts):
    # Real draws: the number tried is uniform in 0..min(others, len(pool)), each picture of
    # the pool at most once per scene.
    tried = []

    def beside(self, image, main, footprints, width, height, rng):
        tried[-1].append(image)
        return None

    monkeypatch.setattr(SceneComposer, "_beside", beside)
    composer = SceneComposer(size=64, others=others)
    images = [solid(8, 6, (index, 0, 0)) for index in range(pool)]
    for seed in range(30):
        tried.append([])
        composer(solid(20, 10), np.random.default_rng(seed), images)
    assert {len(scene) for scene in tried} == counts
    assert all(len({id(image) for image in scene}) == len(scene) for scene in tried)


# randoms drawn by a scene: the main frame (2), the other's frame (2), the label (wanted,
# side), the wall (branch, hue, floor), the camera's blur
LABEL_LEFT = [0.9, 0.9, 0.9, 0.9, 0.0, 0.9, 0.9, 0.9, 0.9, 0.9]


def test_call_with_a_label_and_a_shadow():
    # test_call_worked_out_with_scripted_draws's scene with a label wanted, left of the main
    # footprint (59..141 × 64.5..106.5): 0.075 · 82 = 6.15 wide, a gap 0.05 · 82, its top
    # 0.6 down the footprint: x 48.75..54.9, y 89.7..94.0; three lines of text.
    composer = SceneComposer(size=200, scale=(0.2, 0.6), perspective=0.1, others=2, frame=0.0)
    pool = [solid(40, 20, (255, 0, 0)), solid(40, 20, (0, 0, 255))]
    rng = Scripted(t=0.5, choice=[np.array([1]), 1], random=LABEL_LEFT)
    scene = composer(solid(100, 50), rng, pool)
    assert scene.other_boxes == ((153, 67, 200, 104),)
    red = np.asarray(scene.image)[..., 0].astype(int)
    assert (red[90:94, 50:54] > 230).any() and (red[90:94, 50:54] < 100).any()
    assert (red[89:95, 44:47] < 200).all() and (red[89:95, 56:59] < 200).all()
    # the drop shadow below the picture (offset 3.5 px down, opacity 0.3) darkens the wall
    # there; further down, away from the spot light, the wall is lighter
    assert red[106, 100] < 0.85 * red[120, 100]


def test_call_clips_the_other_boxes_to_the_scene():
    # a tall other (20×40 shown 36×72) below the main picture: from 119 past the bottom (171)
    composer = SceneComposer(size=200, scale=(0.2, 0.6), perspective=0.1, others=2, frame=0.0)
    pool = [solid(40, 20, (255, 0, 0)), solid(20, 40, (0, 0, 255))]
    scene = composer(solid(100, 50), Scripted(t=0.5, choice=[np.array([1]), 3]), pool)
    assert scene.other_boxes == ((82, 119, 118, 171),)


@pytest.mark.parametrize("side", [1, 3])
def test_call_drops_an_other_outside_the_scene(side):
    # the main picture placed in the bottom-right corner (120..200 × 131..171): an other on
    # its right or below would not be seen
    composer = SceneComposer(size=200, scale=(0.2, 0.6), perspective=0.1, others=2, frame=0.0)
    pool = [solid(40, 20, (255, 0, 0)), solid(40, 20, (0, 0, 255))]
    rng = Scripted(t=0.5, choice=[np.array([1]), side], uniform=[np.zeros((4, 2)), np.ones((2, 2))])
    scene = composer(solid(100, 50), rng, pool)
    assert scene.box == (120, 131, 200, 171) and scene.other_boxes == ()


def test_call_frames_the_main_picture():
    # frame=1: black (index round(2.5) = 2), border 0.0425 of 100 px at 0.8: 3.4 px around
    # the picture (x from 56.6); the other, framed too, moves right by both frames
    composer = SceneComposer(size=200, scale=(0.2, 0.6), perspective=0.1, others=2, frame=1.0)
    pool = [solid(40, 20, (255, 0, 0)), solid(40, 20, (0, 0, 255))]
    scene = composer(solid(100, 50), Scripted(t=0.5, choice=[np.array([1]), 1]), pool)
    assert scene.box == (60, 65, 140, 106) and scene.other_boxes == ((160, 67, 200, 104),)
    red = np.asarray(scene.image)[..., 0].astype(int)
    assert (red[70:100, 57:60] < 60).all() and (red[70:100, 50:53] > 100).all()


@pytest.mark.parametrize(
    ("footprint", "width", "random", "box"),
    [
        # t=0: 5 wide (0.05 of 100), 2.5 high, a gap of 2; each edge exactly on the scene's
        ((7, 20, 107, 70), 300, [0.0, 0.7], [0.0, 40.0, 5.0, 42.5]),  # left, at x 0
        ((0, -1, 100, 1.5), 300, [0.0, 0.0], [102.0, 0.0, 107.0, 2.5]),  # top at y 0
        ((0, 0, 100, 50), 107, [0.0, 0.0], [102.0, 20.0, 107.0, 22.5]),  # right at the width
    ],
)
def test_label_box_may_touch_the_scene_edges(footprint, width, random, box):
    main = footprint_item(*footprint)
    found = composite._label_box(main, [main.footprint()], width, 200, Scripted(random=random, t=0))
    assert found is not None and found.tolist() == box


def test_label_box_above_the_scene_is_refused():
    main = footprint_item(0, -10, 100, 5)  # top at -10 + 0.4 · 15 = -4
    rng = Scripted(t=0.0, random=[0.0, 0.0])
    assert composite._label_box(main, [main.footprint()], 300, 200, rng) is None


@pytest.mark.parametrize(
    ("size", "box"), [((11, 5), (0, 40, 200, 131)), ((5, 11), (40, 0, 131, 200))]
)
def test_call_box_stays_inside_a_scene_the_reference_fills(size, box):
    # scale 1: the reference's longest side is the scene's; 11 · (200 / 11) is
    # 200.00000000000003 in floating point, whose ceiling the box clips back to 200. The
    # other side, 90.9, is placed half-way into the room of a 171 scene (aspect 7/6):
    # from 40.05 to 130.95.
    composer = SceneComposer(size=200, scale=(1.0, 1.0), perspective=0.0, others=0, frame=0.0)
    scene = composer(solid(*size), Scripted(t=0.5, choice=[np.array([], dtype=int)]))
    assert scene.corners.max() > 200.0
    assert scene.box == box


def test_paste_warped_reduces_noise_to_its_area_averages():
    # 64×32 of random noise pasted as 16×8 (a quarter): each pasted pixel is close to the
    # mean of its 4×4 block (mean error 7.7 levels); warped without the reduction first, or
    # from a copy sized by another rule (2.25 times, the quad's x−y spread, divided by the
    # factor), it keeps more of the noise (13–46 levels). Placed far from the diagonal.
    noise = np.random.default_rng(1).integers(0, 256, (32, 64, 3), dtype=np.uint8)
    blocks = noise.reshape(8, 4, 16, 4, 3).mean(axis=(1, 3))
    canvas = solid(24, 60, (0, 0, 0))
    composite._paste_warped(canvas, Image.fromarray(noise), rectangle(2, 40, 18, 48))
    pasted = np.asarray(canvas)[40:48, 2:18].astype(float)
    assert np.abs(pasted - blocks).mean() < 10.0


@pytest.mark.parametrize("transpose", [False, True])
def test_paste_warped_to_one_pixel_shows_the_mean(transpose):
    # 40×4 with only its first row white, pasted 10×1: the single row is the mean of the
    # four, 63.75; transposed, with the quad mirrored about the diagonal, the single column
    pixels = np.zeros((4, 40, 3), np.uint8)
    pixels[0] = 255
    quad = rectangle(5, 2, 15, 3)
    if transpose:
        pixels, quad = pixels.transpose(1, 0, 2).copy(), quad[:, ::-1].copy()
    canvas = solid(20, 20, (0, 0, 0))
    composite._paste_warped(canvas, Image.fromarray(pixels), quad)
    line = np.asarray(canvas)[2, 5:15] if not transpose else np.asarray(canvas)[5:15, 2]
    assert (line == 64).all()


def test_paste_warped_draws_only_inside_a_slanted_quad():
    # a trapezoid: its bounding box's corners outside it keep the canvas; a pixel its
    # slanted top edge (y = 2 + x / 4 from x 2) crosses half-way is a blend
    canvas = solid(20, 20, (0, 0, 255))
    quad = np.array([[2.0, 2.0], [18.0, 6.0], [18.0, 14.0], [2.0, 18.0]])
    composite._paste_warped(canvas, solid(16, 16, (255, 0, 0)), quad)
    assert pixel(canvas, 16, 2) == pixel(canvas, 16, 17) == (0, 0, 255)
    assert pixel(canvas, 10, 10) == (255, 0, 0)
    red, _, blue = pixel(canvas, 10, 4)  # the edge crosses it from y 4.0 to 4.25
    assert 150 < red < 250 and red + blue == 255


def test_wall_floor_only_below_its_probability():
    # a draw of exactly 0.15 is not below 0.15: no floor band, the flat grey of t=0
    wall = composite._wall(16, 32, Scripted(t=0.0, random=[0.0, 0.0, 0.15]))
    assert np.allclose(wall, 0.7 * 255.0)


def test_wall_cool_hue_half_way():
    # t=0.5, the cool branch: hue 0.58, saturation 0.035, value 0.83; the light scales the
    # three channels alike, so each pixel's colour proportions are the base colour's
    wall = composite._wall(16, 16, Scripted(t=0.5, random=[0.0, 0.6, 0.5]))
    base = hsv(0.58, 0.035, 0.83)
    assert np.allclose(wall / wall.sum(axis=2, keepdims=True), base / base.sum(), atol=1e-5)


@pytest.mark.parametrize(("t", "cells"), [(0.0, (3, 3)), (1.0, (8, 8))])
def test_wall_mottle_has_three_to_eight_cells_a_side(t, cells):
    sizes = []

    class Recording(Scripted):
        def standard_normal(self, size=None):
            sizes.append(size)
            return super().standard_normal(size)

    composite._wall(64, 32, Recording(t=t, random=[0.0, 0.0, 0.5]))
    assert sizes == [cells]


def test_wall_saturated_colour_at_the_high_end():
    # random ≥ 0.8 at t=1: hue 0.3 (the next random draw), saturation 0.35, value 0.85;
    # the light averages 1.025 (the gradient is symmetric about its mean, mottle 0.025)
    wall = composite._wall(16, 16, Scripted(t=1.0, random=[0.8, 0.3, 0.5]))
    base = hsv(0.3, 0.35, 0.85)
    assert np.allclose(wall.mean(axis=(0, 1)), base * 1.025, atol=1e-2)
    assert np.allclose(wall / wall.sum(axis=2, keepdims=True), base / base.sum(), atol=1e-5)


def test_wall_mottle_is_a_bicubic_blow_up_of_its_cells():
    # fixed normal cells (8×8 at t=1): light = 1 + gradient + 0.025 · the cells resized
    # bicubically to the 5×3 coarse grid of a 40×24 wall, then bilinearly to 40×24
    def cells(size):
        return np.random.default_rng(0).standard_normal(size)

    class Fixed(Scripted):
        def standard_normal(self, size=None):
            return cells(size)

    wall = composite._wall(40, 24, Fixed(t=1.0, random=[0.0, 0.0, 0.5]))
    field = Image.fromarray(cells((8, 8)).astype(np.float32), "F")
    mottle = np.asarray(field.resize((5, 3), Image.Resampling.BICUBIC))
    xs = (np.arange(5) + 0.5) / 5
    coarse = (1.0 + 0.2 * (xs - xs.mean()) + 0.025 * mottle).astype(np.float32)
    light = np.asarray(Image.fromarray(coarse, "F").resize((40, 24), Image.Resampling.BILINEAR))
    assert np.allclose(wall, hsv(0.16, 0.07, 0.96) * light[..., None], atol=1e-3)


# --- survivors of the mut-data3 run (issue 16) ----------------------------------------


def edge_rise(light: np.ndarray, opacity: float) -> tuple[float, float]:
    """Where a shadow edge along the middle row rises (x of the boundary between pixels)
    and its variance (px²): the mean and second moment of the rise from 0 to 1, which for a
    step blurred by a Gaussian of σ are the step's position and σ²."""
    rise = np.diff((1.0 - light[len(light) // 2].astype(np.float64)) / opacity)
    xs = np.arange(1, light.shape[1], dtype=np.float64)
    mean = (xs * rise).sum() / rise.sum()
    return float(mean), float(((xs - mean) ** 2 * rise).sum() / rise.sum())


@pytest.mark.parametrize(("t", "radius"), [(0.0, 2.0), (1.0, 8.0)])
def test_shadow_light_blur_radius_at_both_ends(t, radius):
    # A shadow edge across the whole height (a picture reaching far past the top and the
    # bottom), blurred by a Gaussian of σ = radius · size / 448 px: at size 44800 (σ 200
    # or 800 px) the reduction by 4 and the bilinear blow-up add about 4 px² to σ², and
    # Pillow's three box passes come within 0.3 % of it. The edge moves by the offset,
    # 0.015 · size to the right at t=1 (to the left at t=0).
    item = _Hanging(solid(10, 10), rectangle(4800, -1e6, 1e7, 1e6), None)
    light = composite._shadow_light([item], 9600, 8, 44800, Scripted(t=t))
    opacity = 0.15 + t * 0.3
    assert light[4, 0] == 1.0 and light[4, -1] == pytest.approx(1.0 - opacity, abs=1e-6)
    position, variance = edge_rise(light, opacity)
    assert position == pytest.approx(4800 + (2 * t - 1) * 0.015 * 44800, abs=1.0)
    assert variance == pytest.approx((radius * 44800 / 448) ** 2, rel=3e-3)


class Fractions(Scripted):
    """A scripted generator whose scalar uniform draws take the given fractions of their
    ranges, one after the other (then ``t``)."""

    def __init__(self, fractions, **kwargs):
        super().__init__(**kwargs)
        self.fractions = list(fractions)

    def uniform(self, low=0.0, high=1.0, size=None):
        if size is None and self.fractions:
            return float(low + self.fractions.pop(0) * (high - low))
        return super().uniform(low, high, size)


def test_camera_spot_light_at_its_drawn_place_and_a_cast_per_channel():
    # spot x: the quad's mean x − 0.3 of its width (the low end), y: its top − 0.25 of its
    # height (half-way): (50 − 18, 40 − 12.5) / 100; fall-off 0.25 (the high end); no noise;
    # a cast of its own for each channel: 0.96, 1.0, 1.03.
    canvas = solid(100, 100, (100, 100, 100))
    rng = Fractions([0.0, 0.5, 1.0, 0.0, 0.0], random=[0.5], uniform=[[-0.04, 0.0, 0.03]])
    image = composite._camera(canvas, rectangle(20, 40, 80, 90), rng)
    ys, xs = (np.indices((100, 100)) + 0.5) / 100
    light = 1.05 - 0.25 * ((xs - 0.32) ** 2 + (ys - 0.275) ** 2)
    found = np.asarray(image).astype(float)
    for channel, cast in enumerate((0.96, 1.0, 1.03)):
        error = np.abs(found[..., channel] - 100.0 * light * cast)[5:95, 5:95]
        assert error.max() <= 1.0 and error.mean() <= 0.4


def test_camera_noise_at_its_low_end_is_none():
    # no fall-off, no cast, the noise's amplitude at its low end 0 with every grain value at
    # +0.5: 101 · 1.05 = 106.05 everywhere (an amplitude of 1 would make it 106.55 -> 107)
    rng = Fractions([0.5, 0.5, 0.0, 0.0, 0.0], random=[0.5], uniform=[[0.0] * 3], grain=1.0)
    image = composite._camera(solid(30, 20, (101, 101, 101)), rectangle(5, 5, 25, 15), rng)
    assert (np.asarray(image) == 106).all()


@pytest.mark.parametrize(("t", "radius"), [(0.0, 0.3), (1.0, 0.8)])
def test_camera_blur_radius_at_both_ends(t, radius):
    # a 0|100 step blurred by a box of radius r (fractional ends): the pixel left of the
    # step gets 105 · r / (2r + 1): 19.7 at r 0.3, 32.3 at r 0.8 (1.05: the flat light)
    pixels = np.zeros((20, 20, 3), np.uint8)
    pixels[:, 10:] = 100
    rng = Fractions([0.5, 0.5, 0.0, 0.0, t], random=[0.0], uniform=[[0.0] * 3])
    image = composite._camera(Image.fromarray(pixels), rectangle(0, 0, 20, 20), rng)
    row = np.asarray(image)[10, :, 0].astype(float)
    assert row[9] == pytest.approx(105 * radius / (2 * radius + 1), abs=1.0)
    assert row[10] == pytest.approx(105 * (radius + 1) / (2 * radius + 1), abs=1.0)
    assert row[0] == 0 and row[19] == 105


def test_beside_in_perspective_at_half_the_main_amount():
    # t=1, perspective 0.2: the other (40×20) gets the perspective quad of amount 0.1 (as in
    # test_perspective_quad_turns_tilts_and_jitters: moves (¼, ¼), (0, ¾), (−¼, −¼), (½, ¼)
    # of 0.1 of its sides): (1, 0.5), (40, 1.5), (39, 19.5), (2, 20.5), i.e. 39 × 20 from
    # (1, 0.5), scaled to 1.2 times the main picture's longest side (100, its width: the
    # main quad spans x 100..200 and y 40..90). Hung right of the main footprint (99..201 ×
    # 39..91), a gap of 0.25 · 100 away, its middle 0.3 · 52 below the footprint's middle.
    composer = SceneComposer(size=400, perspective=0.2, frame=0.0)
    main = _Hanging(solid(100, 50), rectangle(100, 40, 200, 90), None)
    other = composer._beside(
        solid(40, 20), main, [main.footprint()], 400, 300, Scripted(t=1.0, choice=[1])
    )
    shape = np.array([[0.0, 0.0], [39.0, 1.0], [38.0, 19.0], [1.0, 20.0]]) * 120 / 39
    expected = shape + [201 + 25 + 1, 65 + 0.3 * 52 - shape[:, 1].max() / 2]
    assert np.allclose(other.quad, expected)


def test_beside_sides_drawn_with_their_probabilities():
    # real draws: left and right 0.4 each, above and below 0.1 each (400 pictures hung
    # around one in the middle of a scene with room on every side)
    composer = SceneComposer(size=2000, perspective=0.2, frame=0.5)
    main = _Hanging(solid(100, 50), rectangle(900, 900, 1000, 950), None)
    x0, y0, x1, y1 = main.footprint()
    rng = np.random.default_rng(0)
    sides = []
    for _ in range(400):
        box = composer._beside(solid(40, 20), main, [main.footprint()], 2000, 2000, rng).footprint()
        sides.append(
            "left"
            if box[2] <= x0
            else "right"
            if box[0] >= x1
            else "above"
            if box[3] <= y0
            else "below"
        )
    share = {side: sides.count(side) / len(sides) for side in ("left", "right", "above", "below")}
    assert share == pytest.approx({"left": 0.4, "right": 0.4, "above": 0.1, "below": 0.1}, abs=0.06)


@pytest.mark.parametrize(
    ("side", "edge", "centre"),
    [(1, (0, 201 + 25), (1, 65 + 0.3 * 52)), (3, (1, 91 + 25), (0, 150 + 0.3 * 102))],
)
def test_beside_framed_in_perspective_keeps_its_gap_and_jitter(side, edge, centre):
    # t=1: a framed other in perspective (its footprint's left and top edges lie at
    # different distances from its picture), a gap of 0.25 · 100 from the main footprint
    # (99..201 × 39..91) and its middle moved 0.3 of that footprint's side along it
    composer = SceneComposer(size=400, perspective=0.2, frame=1.0)
    main = _Hanging(solid(100, 50), rectangle(100, 40, 200, 90), None)
    other = composer._beside(
        solid(40, 20), main, [main.footprint()], 400, 300, Scripted(t=1.0, choice=[side])
    )
    box = other.footprint()
    assert other.frame is not None
    assert box[edge[0]] == pytest.approx(edge[1])
    assert (box[centre[0]] + box[centre[0] + 2]) / 2 == pytest.approx(centre[1])
