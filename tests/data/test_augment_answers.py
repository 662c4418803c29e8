"""Augmented views' sizes worked out by hand from the axis scales (mutation survivors)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pyinstance.data.augment import Augmentation, ViewParams


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
