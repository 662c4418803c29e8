"""Heat-map pictures of selected regions, on a real photo."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pyinstance.viz import render_region_heatmap


@pytest.fixture
def photo(shared_data: Path) -> Image.Image:
    with Image.open(shared_data / "opencv-pairs" / "reference" / "box.png") as image:
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
    with pytest.raises(ValueError, match="image: expected a numpy H×W×3 uint8 array"):
        render_region_heatmap(np.zeros((20, 30)), [0], (2, 2))


def test_low_scores_are_blue_and_high_scores_red() -> None:
    grey = np.full((40, 100, 3), 128, np.uint8)
    scores = np.array([[0.0, 0.25, 0.5, 0.75, 1.0]])  # one 20-pixel-wide cell each
    picture = render_region_heatmap(grey, [0], (1, 5), scores=scores, alpha=1.0, line_width=0)
    pixels = np.asarray(picture).astype(int)
    # the jet colour map by hand: channel c = clip(1.5 - |4t - centre_c|, 0, 1), centres
    # red 3, green 2, blue 1: dark blue, light blue, green, orange, dark red
    expected = [[0, 0, 127], [0, 127, 255], [127, 255, 127], [255, 127, 0], [127, 0, 0]]
    for cell, colour in enumerate(expected):
        centre = pixels[20, 20 * cell + 10]  # bilinear upsampling blends a little
        assert np.abs(centre - colour).max() <= 10, (cell, centre.tolist(), colour)
    half = np.asarray(
        render_region_heatmap(grey, [0], (1, 5), scores=scores, alpha=0.5, line_width=0)
    ).astype(int)
    assert np.abs(half[20, 90] - [128, 64, 64]).max() <= 6  # (128 + 127) / 2, 128 / 2


def test_files_are_made_upright_like_everywhere_else(tmp_path: Path) -> None:
    stored = np.zeros((20, 40, 3), np.uint8)
    stored[:, :20, 0] = 255  # left half red, right half blue, as stored
    stored[:, 20:, 2] = 255
    image = Image.fromarray(stored)
    exif = image.getexif()
    exif[0x0112] = 6  # displayed rotated 90° clockwise: red on top
    path = tmp_path / "sideways.jpg"
    image.save(path, exif=exif, quality=95)
    picture = render_region_heatmap(path, [0], (2, 1), color=(0, 255, 0), line_width=1)
    assert picture.size == (20, 40)  # portrait, as the rest of the library loads it
    pixels = np.asarray(picture).astype(int)
    assert pixels[10, 10, 0] > 200 and pixels[30, 10, 2] > 200
    assert render_region_heatmap(torch.rand(3, 8, 12), [0], (1, 1)).size == (12, 8)


def _outlines(size: tuple[int, int], grid: tuple[int, int], cells, width: int) -> np.ndarray:  # noqa: ANN001
    """The H×W mask of the outlines ``width`` pixels thick of ``cells`` (row, col) of a
    ``grid`` over a picture of ``size`` (W, H): cell c spans pixels round(c·W/w) up to
    round((c+1)·W/w) - 1 (at least one pixel), rows alike."""
    picture_w, picture_h = size
    rows, cols = grid
    y, x = np.mgrid[0:picture_h, 0:picture_w]
    mask = np.zeros((picture_h, picture_w), bool)
    for row, col in cells:
        left, top = round(col * picture_w / cols), round(row * picture_h / rows)
        right = max(round((col + 1) * picture_w / cols) - 1, left)
        bottom = max(round((row + 1) * picture_h / rows) - 1, top)
        inside = (left <= x) & (x <= right) & (top <= y) & (y <= bottom)
        core = (left + width <= x) & (x <= right - width) & (top + width <= y)
        mask |= inside & ~(core & (y <= bottom - width))
    return mask


def test_outlines_are_exactly_the_cells_at_odd_sizes() -> None:
    """Cells of 50/3 × 37/4 pixels: every outline pixel where the rounding puts it, three
    pixels thick by default, nothing else touched; a (1, K) tensor of locations (a head's
    output row) as well as a list."""
    black = np.zeros((37, 50, 3), np.uint8)
    cells = [(0, 0), (1, 2), (3, 1)]
    locations = torch.tensor([[r * 3 + c for r, c in cells]])
    picture = render_region_heatmap(black, locations, (4, 3), color=(255, 255, 255))
    drawn = np.asarray(picture).max(axis=2) > 0
    np.testing.assert_array_equal(drawn, _outlines((50, 37), (4, 3), cells, 3))
    thin = render_region_heatmap(black, [5], (4, 3), line_width=1, color=(255, 255, 255))
    np.testing.assert_array_equal(
        np.asarray(thin).max(axis=2) > 0, _outlines((50, 37), (4, 3), [(1, 2)], 1)
    )


def test_the_heat_is_blended_at_the_default_opacity() -> None:
    """Equal scores are all the lowest colour (dark blue 0, 0, 127), blended 45 %: a grey
    128 becomes 0.55·128 + 0.45·(0, 0, 127); no division by a zero span."""
    grey = np.full((12, 16, 3), 128, np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        picture = render_region_heatmap(grey, [0], (2, 2), scores=np.full((2, 2), 7.0))
    pixels = np.asarray(picture).astype(int)[6:, 6:]  # away from the outlined cell (0, 0)
    assert np.abs(pixels - [70.4, 70.4, 127.55]).max() <= 1


def test_scores_are_normalised_from_their_minimum_to_their_maximum() -> None:
    """Scores 10..14 (not starting at 0) and a float16 map spanning ±60000 (whose span
    overflows float16) both run from dark blue to dark red."""
    grey = np.full((10, 50, 3), 128, np.uint8)
    for scores in (np.arange(10.0, 15.0)[None], np.linspace(-6e4, 6e4, 5, dtype=np.float16)[None]):
        picture = render_region_heatmap(grey, [0], (1, 5), scores=scores, alpha=1.0, line_width=0)
        pixels = np.asarray(picture).astype(int)
        expected = [[0, 0, 127], [0, 127, 255], [127, 255, 127], [255, 127, 0], [127, 0, 0]]
        for cell, colour in enumerate(expected):
            assert np.abs(pixels[5, 10 * cell + 5] - colour).max() <= 12, (scores.dtype, cell)


def test_the_heat_is_interpolated_without_overshoot() -> None:
    """Two cells, dark blue and dark red, upsampled across 200 pixels: red rises and blue
    falls monotonically and neither leaves the colour map's range (no ringing)."""
    grey = np.zeros((4, 200, 3), np.uint8)
    scores = np.array([[0.0, 1.0]])
    picture = render_region_heatmap(grey, [0], (1, 2), scores=scores, alpha=1.0, line_width=0)
    row = np.asarray(picture).astype(int)[2]
    assert (np.diff(row[:, 0]) >= 0).all() and (np.diff(row[:, 2]) <= 0).all()
    assert row[:, [0, 2]].max() <= 127 and row[0].tolist() == [0, 0, 127]


def test_float_pictures_and_a_png_whatever_the_file_name(tmp_path: Path) -> None:
    """A float 3×H×W tensor in [0, 1] is scaled to 0..255; the file is PNG even when its
    name says otherwise."""
    image = torch.tensor([0.2, 0.6, 1.0])[:, None, None].expand(3, 4, 6)
    path = tmp_path / "heat.out"
    picture = render_region_heatmap(image, [3], (2, 2), line_width=1, path=path)
    assert np.asarray(picture)[3, 1].tolist() == [51, 153, 255]
    with Image.open(path) as saved:
        assert saved.format == "PNG"


def test_cells_narrower_than_a_pixel_are_one_pixel_wide() -> None:
    """12 columns over 5 pixels (and 8 rows over 4): each selected cell is still a line
    one pixel wide, where the rounding puts it."""
    black = np.zeros((40, 5, 3), np.uint8)
    cells = [(3, 3), (1, 9), (2, 11)]
    picture = render_region_heatmap(
        black, [r * 12 + c for r, c in cells], (4, 12), line_width=1, color=(255, 255, 255)
    )
    drawn = np.asarray(picture).max(axis=2) > 0
    np.testing.assert_array_equal(drawn, _outlines((5, 40), (4, 12), cells, 1))
    # 8 rows over 4 pixels: row 1 covers half of pixel row 0 and is drawn there (Pillow
    # draws a one-pixel-high outline's ends two pixels high), never lower
    flat = np.zeros((4, 40, 3), np.uint8)
    picture = render_region_heatmap(flat, [4, 6], (8, 4), line_width=1, color=(255, 255, 255))
    drawn = np.asarray(picture).max(axis=2) > 0
    assert drawn[0, :10].all() and drawn[0, 20:30].all() and not drawn[0, 10:20].any()
    assert not drawn[2:].any()
