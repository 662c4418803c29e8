"""The augmentation preview pixel by pixel: flat-colour references, where each tile lands
(fitted into its cell with a 3-pixel margin, centred), the titles, the files chosen."""

from __future__ import annotations

import re
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from pyinstance.data.augment import Augmentation
from pyinstance.train.preview import main, reference_files, render_preview, save_preview

BACKGROUND = (250, 250, 250)
#: A view that keeps the photo as it is (but scaled to the one size).
STILL = Augmentation(
    rotation=0.0, axis_scale=(1.0, 1.0), flip=0.0, brightness=0.0, contrast=0.0,
    saturation=0.0, hue=0.0, sizes=(48,),
)  # fmt: skip


def flat(colour, size) -> Image.Image:
    return Image.new("RGB", size, colour)


def box_of(pixels: np.ndarray, colour) -> tuple[int, int, int, int] | None:
    """(left, top, right, bottom) of the pixels of ``colour`` (exclusive ends)."""
    rows, columns = np.nonzero((pixels == np.array(colour)).all(axis=2))
    if rows.size == 0:
        return None
    return int(columns.min()), int(rows.min()), int(columns.max()) + 1, int(rows.max()) + 1


def test_a_small_reference_is_centred_in_its_cell_unscaled():
    grid = render_preview([flat((10, 200, 30), (40, 30))], views=0, scenes=0, cell=64)
    assert grid.size == (64, 22 + 64)
    pixels = np.asarray(grid)
    # (64 − 40) // 2 = 12 across, 22 + (64 − 30) // 2 = 39 down
    assert box_of(pixels, (10, 200, 30)) == (12, 39, 52, 69)
    body = pixels[22:].copy()
    body[17:47, 12:52] = BACKGROUND
    assert (body == BACKGROUND).all()


def test_a_large_reference_is_shrunk_to_the_cell_less_a_margin():
    grid = render_preview(
        [flat((10, 200, 30), (200, 100)), flat((200, 10, 30), (50, 300))],
        views=0,
        scenes=0,
        cell=64,
    )
    assert grid.size == (64, 22 + 2 * 64)
    pixels = np.asarray(grid)
    # 200 × 100 → 58 × 29 at (3, 22 + 17); 50 × 300 → 10 × 58 at (27, 22 + 64 + 3)
    assert box_of(pixels, (10, 200, 30)) == (3, 39, 61, 68)
    assert box_of(pixels, (200, 10, 30)) == (27, 89, 37, 147)


def test_views_fill_the_cells_after_the_reference():
    colour = (10, 200, 30)
    grid = render_preview([flat(colour, (40, 20))], views=2, scenes=0, cell=64, augmentation=STILL)
    assert grid.size == (3 * 64, 22 + 64)
    pixels = np.asarray(grid)
    assert box_of(pixels[:, :64], colour) == (12, 22 + 22, 52, 22 + 42)
    for column in (1, 2):  # 96 × 48 views (short side 48) fitted: 58 × 29 at (3, 17)
        tile = pixels[:, column * 64 : (column + 1) * 64]
        assert box_of(tile, colour) == (3, 22 + 17, 61, 22 + 46)


def dark(pixels: np.ndarray) -> np.ndarray:
    return (pixels[:22] < 120).all(axis=2)


def test_titles_name_the_reference_views_and_scenes_columns():
    reference = [flat((10, 200, 30), (40, 20))]
    both = dark(np.asarray(render_preview(reference, views=1, scenes=1, cell=100)))
    assert both[:, :100].any() and both[:, 100:200].any() and both[:, 200:].any()
    assert not both[:, :6].any()  # titles start 6 pixels into their column
    no_views = dark(np.asarray(render_preview(reference, views=0, scenes=1, cell=100)))
    assert no_views[:, :100].any() and no_views[:, 100:].any()
    scenes_title = no_views[:, 100:]
    assert np.array_equal(scenes_title, both[:, 200:])  # the scenes' title moved left
    alone = dark(np.asarray(render_preview(reference, views=0, scenes=0, cell=100)))
    assert np.array_equal(alone, both[:, :100])
    views_only = dark(np.asarray(render_preview(reference, views=1, scenes=0, cell=100)))
    assert np.array_equal(views_only, both[:, :200])


def test_scenes_are_outlined_about_one_and_a_half_pixels_wide_once_fitted():
    grey = flat((120, 120, 120), (60, 40))
    pixels = np.asarray(render_preview([grey], views=0, scenes=1, seed=1, cell=192)).astype(int)
    red, green, blue = np.moveaxis(pixels[22:, 192:], -1, 0)
    magenta = (red - green > 100) & (blue - green > 100)
    # the outline of a 448-pixel scene drawn ceil(1.5 × 448 / 192) = 4 pixels wide, fitted
    # into 186: about 1.7 pixels; a 1-pixel line would mostly blur away below the test
    assert 300 < magenta.sum() < 3000


def test_the_default_augmentation_and_cell_are_used():
    reference = [flat((10, 200, 30), (40, 20))]
    grid = render_preview(reference, views=1, scenes=0, seed=3)
    assert grid.size == (2 * 192, 22 + 192)
    assert (
        grid.tobytes()
        == render_preview(
            reference, views=1, scenes=0, seed=3, augmentation=Augmentation()
        ).tobytes()
    )


def test_reference_files_are_the_images_directly_in_the_folder_sorted(tmp_path):
    for name in ("b.JPG", "a.png", "c.txt", "d.webp", "e.tiff"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "folder.png").mkdir()
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "f.png").write_bytes(b"x")
    names = [path.name for path in reference_files(str(tmp_path))]
    assert names == ["a.png", "b.JPG", "d.webp", "e.tiff"]
    with pytest.raises(FileNotFoundError, match="^reference folder not found"):
        reference_files(tmp_path / "a.png")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="^reference folder .* holds no image files"):
        reference_files(tmp_path / "empty")


COLOURS = [(200, 10, 10), (10, 200, 10), (10, 10, 200), (200, 200, 10), (10, 200, 200)]


def colour_folder(tmp_path, count):
    folder = tmp_path / "refs"
    folder.mkdir()
    for index in range(count):
        flat(COLOURS[index], (40, 20)).save(folder / f"ref{index}.png")
    return folder


def row_colours(path, rows, cell=192):
    pixels = np.asarray(Image.open(path).convert("RGB"))
    return [
        tuple(int(v) for v in pixels[22 + row * cell + cell // 2, cell // 2]) for row in range(rows)
    ]


def test_save_preview_shows_the_seeds_choice_of_files(tmp_path):
    folder = colour_folder(tmp_path, 5)
    for seed in (0, 1, 7):
        out = save_preview(folder, tmp_path / f"p{seed}.png", rows=3, views=0, scenes=0, seed=seed)
        assert out == tmp_path / f"p{seed}.png"
        order = np.random.default_rng(seed).permutation(5)
        assert row_colours(out, 3) == [COLOURS[i] for i in order[:3]]
    with pytest.raises(ValueError, match="^rows"):
        save_preview(folder, tmp_path / "x.png", rows=0)
    with pytest.raises(ValueError, match="^seed"):
        save_preview(folder, tmp_path / "x.png", seed=-1)


def test_the_command_has_four_rows_four_views_and_three_scenes_by_default(tmp_path, capsys):
    folder = colour_folder(tmp_path, 5)
    out = tmp_path / "preview.png"
    assert main([str(folder), str(out)]) == 0
    assert capsys.readouterr().out == f"wrote {out}\n"
    with Image.open(out) as written:
        assert written.size == ((1 + 4 + 3) * 192, 22 + 4 * 192)
    order = np.random.default_rng(0).permutation(5)
    assert row_colours(out, 4) == [COLOURS[i] for i in order[:4]]
    assert main([str(folder), str(out), "--rows", "2", "--views", "1", "--scenes", "0",
                 "--seed", "5"]) == 0  # fmt: skip
    with Image.open(out) as written:
        assert written.size == (2 * 192, 22 + 2 * 192)
    order = np.random.default_rng(5).permutation(5)
    assert row_colours(out, 2) == [COLOURS[i] for i in order[:2]]


def test_save_preview_shows_four_rows_four_views_and_three_scenes_of_seed_0_by_default(
    tmp_path, monkeypatch
):
    import pyinstance.train.preview as module

    folder = colour_folder(tmp_path, 5)
    calls = []

    def render(chosen, *, others, views, scenes, seed):
        calls.append(([im.getpixel((0, 0)) for im in chosen], len(others), views, scenes, seed))
        return flat(BACKGROUND, (4, 4))

    monkeypatch.setattr(module, "render_preview", render)
    save_preview(folder, tmp_path / "p.png")
    order = np.random.default_rng(0).permutation(5)
    assert calls == [([COLOURS[i] for i in order[:4]], 1, 4, 3, 0)]


def test_the_scenes_hang_the_next_eight_files_of_the_seeds_order_beside_each_reference(
    tmp_path, monkeypatch
):
    import pyinstance.train.preview as module

    folder = tmp_path / "many"
    folder.mkdir()
    colours = [(index * 20, 10, 250 - index * 20) for index in range(12)]
    for index, colour in enumerate(colours):
        flat(colour, (8, 8)).save(folder / f"r{index:02d}.png")
    calls = []

    def render(chosen, *, others, views, scenes, seed):
        calls.append(
            ([im.getpixel((0, 0)) for im in chosen], [im.getpixel((0, 0)) for im in others])
        )
        return flat(BACKGROUND, (4, 4))

    monkeypatch.setattr(module, "render_preview", render)
    save_preview(folder, tmp_path / "p.png", rows=2, seed=3)
    order = np.random.default_rng(3).permutation(12)
    assert calls == [([colours[i] for i in order[:2]], [colours[i] for i in order[2:10]])]


def test_the_file_is_the_grid_as_an_optimised_png(tmp_path):
    import io

    folder = colour_folder(tmp_path, 2)
    out = save_preview(folder, tmp_path / "p.png", rows=2, views=0, scenes=0, seed=1)
    order = np.random.default_rng(1).permutation(2)
    chosen = [Image.open(folder / f"ref{i}.png").convert("RGB") for i in order]
    grid = render_preview(chosen, views=0, scenes=0, seed=1)
    optimised, plain = io.BytesIO(), io.BytesIO()
    grid.save(optimised, format="PNG", optimize=True)
    grid.save(plain, format="PNG")
    assert out.read_bytes() == optimised.getvalue() != plain.getvalue()


class Recording:
    """An augmentation and a composer that keep the tile and record the generator's draws."""

    def __init__(self):
        self.views, self.scenes = [], []

    def augmentation(self, image, rng):
        self.views.append(rng.random())
        return image

    def composer(self, image, rng, others):
        self.scenes.append((rng.random(), len(others)))
        return SimpleNamespace(image=image, corners=[(0, 0), (3, 0), (3, 3)])


def test_four_views_and_three_scenes_from_seed_0_by_default():
    record = Recording()
    grid = render_preview(
        [flat((10, 200, 30), (20, 10))],
        cell=16,
        augmentation=record.augmentation,
        composer=record.composer,
    )
    assert grid.size == ((1 + 4 + 3) * 16, 22 + 16)
    draws = np.random.default_rng(0).random(7)
    assert record.views == list(draws[:4])
    assert record.scenes == [(draw, 0) for draw in draws[4:]]


def test_only_a_sequence_of_images_is_accepted():
    image = flat((10, 200, 30), (20, 10))
    for references in ({"a": image}.values(), (im for im in [image]), image):
        with pytest.raises(TypeError, match="^references: expected a sequence of PIL RGB"):
            render_preview(references, views=0, scenes=0)


@pytest.mark.parametrize("name", ["views", "scenes", "seed"])
def test_negative_counts_and_seeds_are_refused_by_name(name):
    with pytest.raises(ValueError, match=f"^{name}: expected an integer >= 0, got -1$"):
        render_preview([flat((1, 2, 3), (4, 4))], **{name: -1})


def test_tiles_are_shrunk_bilinearly():
    noise = np.random.default_rng(4).integers(0, 256, (100, 200, 3), dtype=np.uint8)
    tile = Image.fromarray(noise)
    grid = np.asarray(render_preview([tile], views=0, scenes=0, cell=64))
    expected, bicubic = tile.copy(), tile.copy()
    expected.thumbnail((58, 58), Image.Resampling.BILINEAR)
    bicubic.thumbnail((58, 58), Image.Resampling.BICUBIC)
    assert expected.size == (58, 29)
    # centred: (64 − 58) // 2 = 3 across, 22 + (64 − 29) // 2 = 39 down
    assert np.array_equal(grid[39 : 39 + 29, 3 : 3 + 58], np.asarray(expected))
    assert not np.array_equal(np.asarray(expected), np.asarray(bicubic))


def test_a_cell_under_16_pixels_is_refused_by_name():
    with pytest.raises(ValueError, match="^cell: expected an integer >= 16, got 15$"):
        render_preview([flat((1, 2, 3), (4, 4))], cell=15)


def test_the_titles_are_drawn_in_dark_grey_six_pixels_into_their_columns():
    from PIL import ImageDraw

    record = Recording()
    grid = render_preview(
        [flat((10, 200, 30), (20, 10))],
        views=2,
        scenes=1,
        cell=200,
        augmentation=record.augmentation,
        composer=record.composer,
    )
    header = Image.new("RGB", (4 * 200, 22), BACKGROUND)
    draw = ImageDraw.Draw(header)
    for left, title in ((6, "reference"), (206, "views"), (606, "scenes (known corners)")):
        draw.text((left, 5), title, fill=(40, 40, 40))
    assert np.array_equal(np.asarray(grid)[:22], np.asarray(header))


def test_a_scene_is_outlined_through_its_corners_back_to_the_first_then_fitted():
    from PIL import ImageDraw

    scene = flat((120, 120, 120), (400, 300))
    corners = [(50, 40), (350, 60), (300, 250), (80, 200)]

    def composer(image, rng, others):
        return SimpleNamespace(image=scene, corners=np.array(corners))

    grid = render_preview(
        [flat((10, 200, 30), (20, 10))], views=0, scenes=1, cell=200, composer=composer
    )
    # by hand: ceil(1.5 × 400 / 200) = 3 pixels wide, closed polygon, shrunk to 194 × 145
    expected = scene.copy()
    ImageDraw.Draw(expected).line([*corners, corners[0]], fill=(255, 0, 255), width=3)
    expected.thumbnail((194, 194), Image.Resampling.BILINEAR)
    top, left = 22 + (200 - expected.height) // 2, 200 + (200 - expected.width) // 2
    cell = np.asarray(grid)[top : top + expected.height, left : left + expected.width]
    assert np.array_equal(cell, np.asarray(expected))


def test_the_command_names_itself_and_has_a_help_text_for_every_argument(
    tmp_path, monkeypatch, capsys
):
    """Help wording itself is not pinned (as error messages are not): the usage names the
    command to run, the command has a description and every argument a help text."""
    monkeypatch.setenv("COLUMNS", "80")
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: python -m pyinstance.train.preview [-h] ")
    description, arguments = text.split("\n\n")[1:3]
    assert description.strip() and not description.startswith(("positional", "options"))
    assert arguments.startswith("positional arguments:")
    for argument in ("reference_dir", "out", "--rows ROWS", "--views VIEWS",
                     "--scenes SCENES", "--seed SEED"):  # fmt: skip
        assert re.search(rf"^  {argument} +\S", text, re.MULTILINE), argument
    with pytest.raises(SystemExit):
        main([str(tmp_path / "absent"), str(tmp_path / "out.png")])
    err = capsys.readouterr().err
    assert err.startswith("usage: python -m pyinstance.train.preview [-h] ")
    assert "\npython -m pyinstance.train.preview: error: reference folder not found" in err
