"""The augmentation preview: grid layout, determinism, the command and its errors."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from pyinstance.train.preview import main, render_preview, save_preview


def references(count: int = 2) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [
        Image.fromarray(rng.integers(0, 256, (30 + 10 * i, 40, 3), dtype=np.uint8), "RGB")
        for i in range(count)
    ]


def test_grid_has_a_cell_per_tile_and_is_deterministic():
    grid = render_preview(references(2), views=3, scenes=2, seed=4, cell=64)
    assert grid.mode == "RGB" and grid.size == (6 * 64, 22 + 2 * 64)
    again = render_preview(references(2), views=3, scenes=2, seed=4, cell=64)
    other = render_preview(references(2), views=3, scenes=2, seed=5, cell=64)
    assert grid.tobytes() == again.tobytes() and grid.tobytes() != other.tobytes()


def test_scenes_show_the_known_corners_in_magenta():
    grey = Image.new("RGB", (60, 40), (120, 120, 120))
    grid = np.asarray(render_preview([grey], views=1, scenes=1, seed=0, cell=192))
    red, green, blue = np.moveaxis(grid[22:].astype(int), -1, 0)
    magenta = (red - green > 100) & (blue - green > 100)
    assert magenta[:, : 2 * 192].sum() == 0  # not on the reference nor the view
    assert magenta[:, 2 * 192 :].sum() > 100


def test_bad_arguments_are_refused_by_name():
    with pytest.raises(ValueError, match="references: expected at least one"):
        render_preview([])
    with pytest.raises(TypeError, match="references"):
        render_preview(references(1)[0])
    with pytest.raises(ValueError, match=r"references\[0\]: .*mode 'L'"):
        render_preview([Image.new("L", (10, 10))])
    with pytest.raises(ValueError, match="views"):
        render_preview(references(1), views=-1)
    with pytest.raises(ValueError, match="cell"):
        render_preview(references(1), cell=4)


def test_save_preview_writes_a_png_from_a_folder(tmp_path):
    folder = tmp_path / "refs"
    folder.mkdir()
    for index, image in enumerate(references(3)):
        image.save(folder / f"ref{index}.jpg")
    (folder / "notes.txt").write_text("not an image")
    out = save_preview(folder, tmp_path / "out" / "preview.png", rows=2, views=1, scenes=1)
    with Image.open(out) as written:
        assert written.format == "PNG" and written.size == (3 * 192, 22 + 2 * 192)


def test_command_reports_missing_and_empty_folders(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "absent"), str(tmp_path / "out.png")])
    assert exit_info.value.code == 2
    assert "reference folder not found" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(tmp_path), str(tmp_path / "out.png")])
    assert "holds no image files" in capsys.readouterr().err
    assert not (tmp_path / "out.png").exists()


def test_command_reports_an_undecodable_file(tmp_path, capsys):
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(SystemExit):
        main([str(tmp_path), str(tmp_path / "out.png"), "--rows", "1"])
    assert "broken.jpg" in capsys.readouterr().err


def test_runs_as_a_module(tmp_path):
    references(1)[0].save(tmp_path / "only.png")
    out = tmp_path / "grid.png"
    command = [sys.executable, "-m", "pyinstance.train.preview", str(tmp_path), str(out)]
    result = subprocess.run(
        [*command, "--rows", "1", "--views", "1", "--scenes", "1"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert out.is_file() and "wrote" in result.stdout
