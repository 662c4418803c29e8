"""Heat-map pictures of selected regions, on a real photo."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pyinstance.viz import render_region_heatmap


def _shared() -> Path:
    if os.environ.get("PYINSTANCE_SHARED"):
        return Path(os.environ["PYINSTANCE_SHARED"])
    beside = Path(__file__).resolve().parents[2] / ".." / "shared"
    return beside if beside.is_dir() else Path("/work/shared")


PHOTO = _shared() / "data" / "opencv-pairs" / "reference" / "box.png"


@pytest.fixture
def photo() -> Image.Image:
    if not PHOTO.is_file():
        pytest.skip(f"test photo not found at {PHOTO}")
    with Image.open(PHOTO) as image:
        return image.convert("RGB")


def test_png_of_image_size_with_regions_marked(photo, tmp_path):
    grid = (7, 9)
    locations = [0, 2 * 9 + 4, 6 * 9 + 8]  # cells (0,0), (2,4), (6,8)
    out = tmp_path / "regions.png"
    render_region_heatmap(photo, locations, grid, path=out, color=(255, 0, 255), line_width=2)
    with Image.open(out) as saved:
        assert saved.format == "PNG" and saved.size == photo.size
        pixels = np.asarray(saved.convert("RGB")).astype(int)
    original = np.asarray(photo).astype(int)
    cell_h, cell_w = photo.height / grid[0], photo.width / grid[1]
    for row, col in [(0, 0), (2, 4), (6, 8)]:
        top, left = round(row * cell_h), round(col * cell_w)
        assert pixels[top, left + 3].tolist() == [255, 0, 255]  # outline drawn
        centre = (round((row + 0.5) * cell_h), round((col + 0.5) * cell_w))
        assert pixels[centre].tolist() == original[centre].tolist()  # interior untouched
    # An unselected cell is left exactly as it was.
    untouched = pixels[
        round(4.2 * cell_h) : round(4.8 * cell_h), round(1.2 * cell_w) : round(1.8 * cell_w)
    ]
    expected = original[
        round(4.2 * cell_h) : round(4.8 * cell_h), round(1.2 * cell_w) : round(1.8 * cell_w)
    ]
    assert np.array_equal(untouched, expected)
    assert (pixels != original).any(axis=2).sum() > 0


def test_score_overlay_and_padding(photo):
    scores = np.arange(12.0).reshape(3, 4)
    picture = render_region_heatmap(
        np.asarray(photo), [5], (3, 4), scores=scores, valid_hw=(2, 3), alpha=0.5
    )
    assert picture.size == photo.size
    blended = np.asarray(picture).astype(int)
    original = np.asarray(photo).astype(int)
    # The overlay changes the whole picture; cell (1, 1) of a 2×3 valid grid is outlined.
    assert (blended != original).any(axis=2).mean() > 0.9
    top, left = round(photo.height / 2), round(photo.width / 3)
    assert blended[top, left + 3].tolist() == [255, 0, 0]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(locations=[63], grid_hw=(7, 9)), r"locations: \[63\] fall outside"),
        (dict(locations=[-1], grid_hw=(7, 9)), r"locations: \[-1\] fall outside"),
        (dict(locations=[8], grid_hw=(7, 9), valid_hw=(7, 8)), r"locations: \[8\] fall outside"),
        (dict(locations=[0], grid_hw=(0, 9)), "grid_hw: expected positive"),
        (dict(locations=[0], grid_hw=(7, 9), valid_hw=(8, 9)), "valid_hw: expected"),
        (
            dict(locations=[0], grid_hw=(7, 9), scores=np.zeros((7, 8))),
            r"scores: expected shape \(7, 9\)",
        ),
        (
            dict(locations=[0], grid_hw=(2, 2), scores=np.full((2, 2), np.nan)),
            "scores: contains NaN",
        ),
    ],
)
def test_bad_input(kwargs, match):
    image = np.zeros((20, 30, 3), np.uint8)
    with pytest.raises(ValueError, match=match):
        render_region_heatmap(image, **kwargs)
    with pytest.raises(ValueError, match="image: expected a PIL image"):
        render_region_heatmap(np.zeros((20, 30)), [0], (2, 2))
