"""Augmented views' sizes worked out by hand from the axis scales (mutation survivors)."""

from __future__ import annotations

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
