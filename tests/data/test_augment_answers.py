"""Augmented views' sizes worked out by hand from the axis scales (mutation survivors)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pyinstance.data.augment import Augmentation, ViewParams, jitter_colour


@pytest.mark.parametrize(
    ("scale_x", "scale_y", "size"),
    [
        # 100×100 scaled to 125×75; the smaller side 75 -> 100: 166.7 -> 167 wide (cap 200).
        (1.25, 0.75, (167, 100)),
        # 100×100 scaled to 80×120; 80 -> 100: 150 high.
        (0.8, 1.2, (100, 150)),
    ],
)
def test_view_size_follows_each_axis_scale(scale_x, scale_y, size):
    image = Image.new("RGB", (100, 100), (10, 20, 30))
    view = ViewParams(flip=False, angle=0.0, scale_x=scale_x, scale_y=scale_y, size=100, crop=0.0)
    assert Augmentation().apply(image, view).size == size


@pytest.mark.parametrize(("crop", "top", "bottom"), [(0.0, 0, 255), (1.0, 255, 255)])
def test_portrait_window_moves_with_crop_after_a_reduction(crop, top, bottom):
    # 100×300, top third black: the view's smaller side 50 halves it to 50×150, capped to
    # 50×100. crop 0 keeps rows 0..200 of the picture (black then white), crop 1 rows
    # 100..300 (white; its first rows are blurred by the reduction).
    image = Image.new("RGB", (100, 300), (255, 255, 255))
    image.paste((0, 0, 0), (0, 0, 100, 100))
    view = ViewParams(flip=False, angle=0.0, scale_x=1.0, scale_y=1.0, size=50, crop=crop)
    out = Augmentation().apply(image, view)
    assert out.size == (50, 100)
    grey = np.asarray(out.convert("L"))
    assert (grey[10, 25], grey[90, 25]) == (top, bottom)  # rows 10 and 90, middle column


def _view(**changes) -> ViewParams:
    values = {"flip": False, "angle": 0.0, "scale_x": 1.0, "scale_y": 1.0, "size": 24, "crop": 0.0}
    values.update(changes)
    return ViewParams(**values)


def test_a_reduction_is_anti_aliased():
    # A one-pixel checkerboard reduced 3.2 times: anti-aliased, it is an even grey; sampled
    # without filtering, it would keep black and white pixels.
    board = (np.indices((64, 64)).sum(axis=0) % 2 * 255).astype(np.uint8)
    image = Image.fromarray(np.repeat(board[..., None], 3, axis=2))
    grey = np.asarray(Augmentation().apply(image, _view(size=20)).convert("L"), dtype=float)
    assert grey.shape == (20, 20)
    assert np.abs(grey - 127.5).max() < 20


def test_a_quarter_turn_with_crop_one_is_still_the_transpose():
    # Nothing is cropped (the view is the whole turned picture), so crop changes nothing.
    image = Image.fromarray(np.arange(24 * 24 * 3, dtype=np.uint8).reshape(24, 24, 3))
    view = Augmentation().apply(image, _view(angle=90.0, crop=1.0))
    np.testing.assert_array_equal(
        np.asarray(view), np.asarray(image.transpose(Image.Transpose.ROTATE_90))
    )


def test_a_capped_enlargement_of_one_axis_is_not_skipped():
    # 100×100 stretched twice as wide, capped to 100×100 (max_aspect 1), crop 0: the view
    # shows input columns 0..50 enlarged, so the black stripe at columns 40..60 lies at
    # output columns 80..100.
    image = Image.new("RGB", (100, 100), (255, 255, 255))
    image.paste((0, 0, 0), (40, 0, 60, 100))
    view = Augmentation(max_aspect=1.0).apply(image, _view(scale_x=2.0, size=100))
    grey = np.asarray(view.convert("L"))
    assert view.size == (100, 100)
    assert (grey[50, 50], grey[50, 90]) == (255, 0)


def test_a_quarter_turn_with_an_enlargement():
    # A white block centred at (5, 7) in a black 24×24 picture; turned a quarter
    # counter-clockwise it is centred at (7, 19), and enlarged twice (the view's smaller
    # side 48) at (14, 38). Bilinear enlargement leaves grey at the block's edges.
    picture = np.zeros((24, 24, 3), dtype=np.uint8)
    picture[4:10, 2:8] = 255
    view = Augmentation().apply(Image.fromarray(picture), _view(angle=90.0, size=48))
    grey = np.asarray(view.convert("L"), dtype=float)
    assert grey.shape == (48, 48)
    ys, xs = np.nonzero(grey > 127)
    assert (xs.mean() + 0.5, ys.mean() + 0.5) == (
        pytest.approx(14, abs=1),
        pytest.approx(38, abs=1),
    )
    assert ((grey > 0) & (grey < 255)).any()


@pytest.mark.parametrize(
    ("factors", "name"),
    [
        ((-0.1, 1.0, 1.0, 0.0), "brightness"),
        ((1.0, -0.1, 1.0, 0.0), "contrast"),
        ((1.0, 1.0, -0.1, 0.0), "saturation"),
        ((1.0, 1.0, 1.0, -0.6), "hue"),
        ((1.0, 1.0, 1.0, 0.6), "hue"),
    ],
)
def test_jitter_colour_refuses_each_factor_by_name(factors, name):
    image = Image.new("RGB", (4, 4), (200, 40, 10))
    with pytest.raises(ValueError, match=f"^{name}: expected"):
        jitter_colour(image, *factors)


def test_apply_shifts_the_hue():
    # No geometry: the view is the colour jitter of the picture itself, hue included.
    image = Image.new("RGB", (24, 24), (200, 40, 10))
    view = Augmentation().apply(image, _view(hue=0.25))
    expected = jitter_colour(image, 1.0, 1.0, 1.0, 0.25)
    assert np.asarray(view)[0, 0].tolist() == np.asarray(expected)[0, 0].tolist()
    assert np.asarray(view)[0, 0].tolist() != [200, 40, 10]


@pytest.mark.parametrize(
    "factors", [(0.5, 0.5, 1.0, 0.0), (0.8, 0.8, 0.8, 0.0), (2.0, 2.0, 2.0, 0.0)]
)
def test_equal_factors_other_than_one_still_change_the_colours(factors):
    image = Image.new("RGB", (4, 4), (50, 60, 70))
    assert np.asarray(jitter_colour(image, *factors))[0, 0].tolist() != [50, 60, 70]


def test_doubling_every_factor_by_hand():
    # Grey levels weigh R, G, B 0.299, 0.587, 0.114. Brightness 2: (100, 120, 140);
    # contrast 2 about the mean grey 2·58.15 = 116.3: (83.7, 123.7, 163.7); saturation 2
    # about its grey level 116.3: (51.1, 131.1, 211.1), rounded.
    image = Image.new("RGB", (4, 4), (50, 60, 70))
    assert np.asarray(jitter_colour(image, 2.0, 2.0, 2.0, 0.0))[0, 0].tolist() == [51, 131, 211]
