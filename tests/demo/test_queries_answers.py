"""Each demo change on a picture whose pixels encode their own position, so the window a
change took can be read back and checked (written for mutation testing)."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pyinstance.demo.queries import (
    CHANGES,
    _save,
    crop,
    image_files,
    lighting,
    make_queries,
    perspective,
    rotate,
    smaller,
)

WALL = np.array([128, 122, 112])


def _coordinates(width: int = 200, height: int = 100) -> Image.Image:
    """Red = column, green = row, blue = 255: a pixel says where it came from."""
    columns, rows = np.meshgrid(np.arange(width), np.arange(height))
    pixels = np.stack([columns, rows, np.full_like(rows, 255)], axis=-1).astype(np.uint8)
    return Image.fromarray(pixels)


def test_crop_keeps_55_to_70_percent_of_each_side_inside_the_picture():
    for seed in range(20):
        picture = _coordinates()
        out = np.asarray(crop(picture, random.Random(seed)))
        height, width = out.shape[:2]
        left, top = int(out[0, 0, 0]), int(out[0, 0, 1])
        assert left + width <= 200 and top + height <= 100
        keep = width / 200
        assert 0.5475 <= keep <= 0.7025 and abs(height - 100 * keep) <= 1
        np.testing.assert_array_equal(
            out, np.asarray(picture)[top : top + height, left : left + width]
        )


def test_crop_positions_vary_and_reach_both_sides():
    lefts = {int(np.asarray(crop(_coordinates(), random.Random(s)))[0, 0, 0]) for s in range(40)}
    assert len(lefts) > 10 and min(lefts) < 20


def test_rotate_expands_by_12_to_25_degrees_either_way_on_the_wall():
    directions = set()
    for seed in range(12):
        out = rotate(_coordinates(), random.Random(seed))
        width, height = out.size
        # expanded to hold the corners: h' = 200 sin(a) + 100 cos(a), 139.4 at 12 degrees,
        # 175.1 at 25 (and w' = 200 cos(a) + 100 sin(a), 216.4 and 223.5)
        assert 139 <= height <= 176 and 216 <= width <= 224, (width, height)
        pixels = np.asarray(out)
        np.testing.assert_array_equal(pixels[0, 0], WALL)
        # counter-clockwise turns lift the picture's right end: its top row is at the right
        top_row = np.nonzero((pixels[:, :, 2] > 200).any(axis=1))[0][0]
        first = np.nonzero(pixels[top_row, :, 2] > 200)[0][0]
        directions.add("ccw" if first > width / 2 else "cw")
    assert directions == {"ccw", "cw"}


def test_smaller_places_a_45_to_60_percent_copy_on_the_wall():
    for seed in range(10):
        out = np.asarray(smaller(_coordinates(), random.Random(seed))).astype(int)
        assert out.shape == (100, 200, 3)
        inside = out[:, :, 2] > 200
        rows, columns = np.nonzero(inside)
        height, width = rows.max() - rows.min() + 1, columns.max() - columns.min() + 1
        assert 0.44 * 200 <= width <= 0.61 * 200 and abs(height / 100 - width / 200) < 0.03
        outside = out[~inside]
        assert (np.abs(outside - WALL).max(axis=1) == 0).all()


def test_smaller_positions_vary():
    tops = set()
    for seed in range(20):
        out = np.asarray(smaller(_coordinates(), random.Random(seed)))
        tops.add(int(np.nonzero((out[:, :, 2] > 200).any(axis=1))[0][0]))
    assert len(tops) > 5


def test_lighting_changes_brightness_and_keeps_the_size():
    grey = Image.new("RGB", (60, 40), (120, 120, 120))
    means = []
    for seed in range(20):
        out = lighting(grey, random.Random(seed))
        assert out.size == (60, 40) and out.mode == "RGB"
        means.append(np.asarray(out).astype(float).mean())
    assert min(means) < 100 and max(means) > 140  # darker and brighter both occur
    assert all(abs(m - 120) > 10 for m in means)  # never the same light


def test_perspective_shrinks_one_vertical_edge():
    sides = set()
    for seed in range(12):
        out = np.asarray(perspective(_coordinates(), random.Random(seed))).astype(int)
        assert out.shape == (100, 200, 3)
        left_wall = (np.abs(out[:, 0] - WALL).max(axis=1) == 0).sum()
        right_wall = (np.abs(out[:, -1] - WALL).max(axis=1) == 0).sum()
        assert (left_wall == 0) != (right_wall == 0)  # exactly one edge shrunk
        shrunk = max(left_wall, right_wall)
        # 15-25 % of the height, split above and below the edge
        assert 0.13 * 100 <= shrunk <= 0.27 * 100, shrunk
        sides.add("left" if left_wall else "right")
    assert sides == {"left", "right"}


def test_changes_by_name():
    assert {
        "crop": crop,
        "rotate": rotate,
        "smaller": smaller,
        "lighting": lighting,
        "perspective": perspective,
    } == CHANGES


def test_image_files_lists_images_sorted_case_insensitively(tmp_path):
    for name in ("b.JPG", "a.png", "c.webp", "d.bmp", "e.jpeg", "notes.txt", "f.gif"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "folder.jpg").mkdir()
    assert [p.name for p in image_files(tmp_path)] == [
        "a.png",
        "b.JPG",
        "c.webp",
        "d.bmp",
        "e.jpeg",
    ]


def _collection(root: Path) -> Path:
    for name, colour in (("alpha", "red"), ("beta", "blue")):
        (root / name).mkdir(parents=True)
        Image.new("RGB", (64, 48), colour).save(root / name / "1.png")
        Image.new("RGB", (64, 48), "white").save(root / name / "2.png")  # not the first
    (root / "no-images").mkdir()
    return root


def test_make_queries_names_truths_and_seeds(tmp_path):
    collection = _collection(tmp_path / "c")
    unknown = tmp_path / "u"
    unknown.mkdir()
    Image.new("RGB", (50, 50), "green").save(unknown / "thing.png")
    queries = make_queries(
        str(tmp_path / "out" / "q"), collection=collection, unknown=unknown, seed=5
    )
    expected = [(f"{i}-{c}.jpg", i) for i in ("alpha", "beta") for c in CHANGES]
    assert [(q.path.name, q.truth) for q in queries] == [*expected, ("unknown-thing.jpg", None)]
    assert all(q.path.parent == tmp_path / "out" / "q" for q in queries)
    assert not list((tmp_path / "out" / "q").glob("*.partial"))
    alpha = np.asarray(Image.open(tmp_path / "out" / "q" / "alpha-crop.jpg")).astype(int)
    assert abs(alpha.mean(axis=(0, 1)) - [255, 0, 0]).max() < 12  # the first image, red
    unknown_crop = Image.open(tmp_path / "out" / "q" / "unknown-thing.jpg")
    assert unknown_crop.size[0] < 50 * 0.75  # lightly changed: cropped
    # seeds: changes differ between instances and changes, same for the same seed
    again = make_queries(tmp_path / "again", collection=collection, unknown=None, seed=5)
    for first, second in zip(queries[:-1], again, strict=True):
        assert first.path.read_bytes() == second.path.read_bytes()
    other = make_queries(tmp_path / "other", collection=collection, unknown=None, seed=6)
    assert any(
        a.path.read_bytes() != b.path.read_bytes() for a, b in zip(again, other, strict=True)
    )


def test_save_writes_a_jpeg_without_leaving_a_partial_file(tmp_path):
    _save(Image.new("L", (10, 10), 50), tmp_path / "x.jpg")
    with Image.open(tmp_path / "x.jpg") as image:
        assert image.format == "JPEG" and image.mode == "RGB"
        reference = tmp_path / "reference.jpg"
        Image.new("RGB", (10, 10)).save(reference, "JPEG", quality=90)
        assert image.quantization == Image.open(reference).quantization  # quality 90
        reference.unlink()
    assert [p.name for p in tmp_path.iterdir()] == ["x.jpg"]


@pytest.mark.parametrize("seed", [True, 1.0, "1", None])
def test_bad_seeds_are_refused(tmp_path, seed):
    with pytest.raises(TypeError) as raised:
        make_queries(tmp_path, collection=_collection(tmp_path / "c"), seed=seed)
    assert str(raised.value) == f"seed: expected an int, got {type(seed).__name__}"


def test_bad_folders_are_refused_by_name(tmp_path):
    with pytest.raises(FileNotFoundError) as raised:
        make_queries(tmp_path / "o", collection=tmp_path / "none")
    assert str(raised.value) == f"collection: no such folder {str(tmp_path / 'none')!r}"
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(ValueError) as raised:
        make_queries(tmp_path / "o", collection=tmp_path / "empty")
    assert str(raised.value) == (
        f"collection: {str(tmp_path / 'empty')!r} has no instance sub-folder with an image"
    )
    collection = _collection(tmp_path / "c")
    with pytest.raises(FileNotFoundError) as raised:
        make_queries(tmp_path / "o", collection=collection, unknown=tmp_path / "gone")
    assert str(raised.value) == f"unknown: no such folder {str(tmp_path / 'gone')!r}"
    assert not (tmp_path / "o").exists()


def test_crops_start_anywhere_from_the_first_pixel():
    lefts, tops = set(), set()
    for seed in range(60):
        out = np.asarray(crop(_coordinates(20, 10), random.Random(seed)))
        lefts.add(int(out[0, 0, 0]))
        tops.add(int(out[0, 0, 1]))
    assert 0 in lefts and 0 in tops
    assert max(lefts) >= 6 and max(tops) >= 3


def test_the_default_seed_is_zero(tmp_path):
    collection = _collection(tmp_path / "c")
    default = make_queries(tmp_path / "a", collection=collection, unknown=None)
    zero = make_queries(tmp_path / "b", collection=collection, unknown=None, seed=0)
    assert [q.path.read_bytes() for q in default] == [q.path.read_bytes() for q in zero]


def test_lighting_brightness_stays_in_its_two_ranges():
    """A uniform grey stays uniform (contrast, colour and blur keep it): each channel is
    120 x brightness (0.55-0.75 or 1.25-1.45) x its colour cast (0.85-1.15)."""
    grey = Image.new("RGB", (8, 8), (120, 120, 120))
    for seed in range(40):
        values = np.asarray(lighting(grey, random.Random(seed))).astype(float)
        assert values.std(axis=(0, 1)).max() < 1
        for value in values.mean(axis=(0, 1)):
            dark = 0.55 * 120 * 0.85 - 1 <= value <= 0.75 * 120 * 1.15 + 1
            bright = 1.25 * 120 * 0.85 - 1 <= value <= 1.45 * 120 * 1.15 + 1
            assert dark or bright, (seed, value)


def test_queries_can_be_made_again_in_the_same_folder_with_the_same_unknowns(tmp_path):
    collection = _collection(tmp_path / "c")
    unknown = tmp_path / "u"
    unknown.mkdir()
    Image.new("RGB", (50, 40), "green").save(unknown / "thing.png")
    first = make_queries(tmp_path / "q", collection=collection, unknown=unknown, seed=2)
    first_bytes = [q.path.read_bytes() for q in first]
    again = make_queries(tmp_path / "q", collection=collection, unknown=unknown, seed=2)
    assert [q.path.read_bytes() for q in again] == first_bytes
