"""Augmented views' sizes worked out by hand from the axis scales (mutation survivors)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pyinstance.data.augment import Augmentation, ViewParams, check_range, jitter_colour


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


# --- validation (survivors of the mut-data3 run, issue 16) -----------------------------


def test_check_range_checks_each_end_by_its_own_name():
    assert check_range((0.0, 1.0), "r", minimum=0.0) == (0.0, 1.0)  # not strict by default
    low, high = check_range((np.float32(0.5), 2), "r", minimum=0.0, maximum=2.0, positive=True)
    assert (low, high) == (0.5, 2.0) and type(low) is type(high) is float
    with pytest.raises(ValueError, match=r"^r\[0\]: expected"):
        check_range((1.5, 1.5), "r", minimum=0.0, maximum=1.0)
    with pytest.raises(ValueError, match=r"^r\[1\]: expected"):
        check_range((0.5, 1.5), "r", minimum=0.0, maximum=1.0)
    with pytest.raises(ValueError, match=r"^r\[1\]: expected"):
        check_range((0.5, 0.0), "r", minimum=0.0, positive=True)
    with pytest.raises(ValueError, match=r"^r\[0\]: expected"):
        check_range((0.0, 0.5), "r", minimum=0.0, positive=True)
    with pytest.raises(ValueError, match=r"^r: expected low <= high"):
        check_range((0.6, 0.5), "r", minimum=0.0)


VIEW = {"flip": False, "angle": 0.0, "scale_x": 1.0, "scale_y": 1.0, "size": 24, "crop": 0.0}


def test_view_params_are_stored_as_python_numbers():
    view = ViewParams(
        flip=np.bool_(True),
        angle=np.float32(30.0),
        scale_x=2,
        scale_y=np.float32(0.5),
        size=np.int64(64),
        crop=1,
        brightness=0,
        contrast=np.float32(1.5),
        saturation=3,
        hue=np.float32(-0.5),
    )
    stored = [getattr(view, name) for name in ViewParams.__dataclass_fields__]
    assert stored == [True, 30.0, 2.0, 0.5, 64, 1.0, 0.0, 1.5, 3.0, -0.5]
    assert [type(value) for value in stored] == [bool, *[float] * 3, int, *[float] * 5]


@pytest.mark.parametrize(
    ("field", "value"),
    [("scale_x", 1e-9), ("scale_y", 1e-9), ("size", 1), ("crop", 0.0), ("crop", 1.0)]
    + [("brightness", 0.0), ("contrast", 0.0), ("saturation", 0.0), ("hue", -0.5), ("hue", 0.5)]
    + [("angle", -1e6), ("angle", 1e6)],
)
def test_view_params_accept_their_bounds(field, value):
    assert getattr(ViewParams(**{**VIEW, field: value}), field) == value


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("flip", 1, TypeError),
        ("angle", float("nan"), ValueError),
        ("angle", float("inf"), ValueError),
        ("angle", "0", TypeError),
        ("scale_x", 0.0, ValueError),
        ("scale_y", 0.0, ValueError),
        ("size", 0, ValueError),
        ("size", 1.0, TypeError),
        ("crop", -0.01, ValueError),
        ("crop", 1.01, ValueError),
        ("brightness", -0.01, ValueError),
        ("contrast", -0.01, ValueError),
        ("saturation", -0.01, ValueError),
        ("hue", -0.51, ValueError),
        ("hue", 0.51, ValueError),
    ],
)
def test_view_params_refuse_each_field_by_name(field, value, error):
    with pytest.raises(error, match=rf"^{field}: expected"):
        ViewParams(**{**VIEW, field: value})


def test_augmentation_parameters_are_stored_as_python_numbers():
    augmentation = Augmentation(
        rotation=np.int64(90),
        axis_scale=[np.float32(0.5), 2],
        flip=1,
        brightness=np.float32(0.5),
        contrast=0,
        saturation=1,
        hue=np.float32(0.5),
        sizes=[np.int64(1), 3],
        max_aspect=1,
    )
    stored = [getattr(augmentation, name) for name in Augmentation.__dataclass_fields__]
    assert stored == [90.0, (0.5, 2.0), 1.0, 0.5, 0.0, 1.0, 0.5, (1, 3), 1.0]
    numbers = [stored[0], *stored[1], *stored[2:7], stored[8]]
    assert all(type(value) is float for value in numbers)
    assert type(stored[1]) is tuple and type(stored[7]) is tuple
    assert [type(value) for value in stored[7]] == [int, int]


@pytest.mark.parametrize(
    ("field", "value"),
    [("rotation", 0.0), ("rotation", 180.0), ("axis_scale", (1e-9, 1e9)), ("flip", 0.0)]
    + [("flip", 1.0), ("brightness", 1.0), ("contrast", 1.0), ("saturation", 1.0)]
    + [("brightness", 0.0), ("hue", 0.0), ("hue", 0.5), ("sizes", (1,)), ("max_aspect", 1.0)],
)
def test_augmentation_accepts_its_bounds(field, value):
    assert getattr(Augmentation(**{field: value}), field) == value


@pytest.mark.parametrize(
    ("field", "value", "error", "name"),
    [
        ("rotation", -0.01, ValueError, "rotation"),
        ("rotation", 180.01, ValueError, "rotation"),
        ("rotation", float("inf"), ValueError, "rotation"),
        ("axis_scale", (0.0, 1.0), ValueError, r"axis_scale\[0\]"),
        ("axis_scale", (1.0, float("inf")), ValueError, r"axis_scale\[1\]"),
        ("axis_scale", (1.2, 0.8), ValueError, "axis_scale"),
        ("axis_scale", "ab", TypeError, "axis_scale"),
        ("flip", -0.01, ValueError, "flip"),
        ("flip", 1.01, ValueError, "flip"),
        ("brightness", -0.01, ValueError, "brightness"),
        ("brightness", 1.01, ValueError, "brightness"),
        ("contrast", -0.01, ValueError, "contrast"),
        ("contrast", 1.01, ValueError, "contrast"),
        ("saturation", -0.01, ValueError, "saturation"),
        ("saturation", 1.01, ValueError, "saturation"),
        ("hue", -0.01, ValueError, "hue"),
        ("hue", 0.51, ValueError, "hue"),
        ("sizes", (224, 0), ValueError, r"sizes\[1\]"),
        ("sizes", (224, 2.0), TypeError, r"sizes\[1\]"),
        ("sizes", [], ValueError, "sizes"),
        ("sizes", "224", TypeError, "sizes"),
        ("max_aspect", 0.99, ValueError, "max_aspect"),
        ("max_aspect", float("nan"), ValueError, "max_aspect"),
    ],
)
def test_augmentation_refuses_each_parameter_by_name(field, value, error, name):
    with pytest.raises(error, match=rf"^{name}: expected"):
        Augmentation(**{field: value})


def test_draw_spans_both_signs_of_the_angle_and_the_hue():
    # real draws: angles uniform in [-30, 30] degrees, hues in [-0.1, 0.1] turns, both ends
    # reached within 10 % in 200 views, and each view carries its own hue
    augmentation = Augmentation(rotation=30.0, hue=0.1)
    rng = np.random.default_rng(0)
    views = [augmentation.draw(rng) for _ in range(200)]
    angles = [view.angle for view in views]
    hues = [view.hue for view in views]
    assert min(angles) < -27.0 and max(angles) > 27.0
    assert min(hues) < -0.09 and max(hues) > 0.09


class Lowest(np.random.Generator):
    """A generator whose single ``random()`` draws are all 0.0, the lowest value."""

    def random(self, size=None, dtype=np.float64, out=None):
        return 0.0 if size is None else super().random(size, dtype, out)


def test_draw_never_flips_with_a_probability_of_zero():
    # a flip happens when the draw is below the probability: never at 0, even for a draw of 0
    assert Augmentation(flip=0.0).draw(Lowest(np.random.PCG64(0))).flip is False
    assert Augmentation(flip=1e-9).draw(Lowest(np.random.PCG64(0))).flip is True
