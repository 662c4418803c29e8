"""A picture of the training augmentations: random views and composited scenes of a few
references, one row per reference, saved as a PNG.

    python -m pyinstance.train.preview REFERENCE_DIR OUT.png [--rows 4] [--views 4]
        [--scenes 3] [--seed 0]

In the scenes, the reference's known corners are outlined in magenta.
"""

from __future__ import annotations

import argparse
import io
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from pyinstance._files import write_atomic
from pyinstance._validate import check_int
from pyinstance.data.augment import Augmentation, check_rgb_image
from pyinstance.data.composite import SceneComposer
from pyinstance.data.images import ImageDecodeError, load_image

#: File name endings read as images from a reference folder.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})

_BACKGROUND = (250, 250, 250)
_OUTLINE = (255, 0, 255)
_HEADER = 22


def render_preview(
    references: Sequence[Image.Image],
    *,
    others: Sequence[Image.Image] = (),
    views: int = 4,
    scenes: int = 3,
    seed: int = 0,
    cell: int = 192,
    augmentation: Augmentation | None = None,
    composer: SceneComposer | None = None,
) -> Image.Image:
    """A grid (RGB): per reference a row of the reference, ``views`` augmented views and
    ``scenes`` scenes (with ``others`` hung beside it), each fitted into a ``cell``-pixel
    square; everything is drawn from ``numpy.random.default_rng(seed)``."""
    if isinstance(references, Image.Image) or not isinstance(references, Sequence):
        raise TypeError(f"references: expected a sequence of PIL RGB images, got {references!r}")
    if not references:
        raise ValueError("references: expected at least one image, got none")
    references = [check_rgb_image(image, f"references[{i}]") for i, image in enumerate(references)]
    views = check_int(views, "views", minimum=0)
    scenes = check_int(scenes, "scenes", minimum=0)
    seed = check_int(seed, "seed", minimum=0)
    cell = check_int(cell, "cell", minimum=16)
    augmentation = Augmentation() if augmentation is None else augmentation
    composer = SceneComposer() if composer is None else composer
    rng = np.random.default_rng(seed)

    columns = 1 + views + scenes
    grid = Image.new("RGB", (columns * cell, _HEADER + len(references) * cell), _BACKGROUND)
    draw = ImageDraw.Draw(grid)
    for column, title in ((0, "reference"), (1, "views"), (1 + views, "scenes (known corners)")):
        if column < columns and (title != "views" or views):
            draw.text((column * cell + 6, 5), title, fill=(40, 40, 40))
    for row, reference in enumerate(references):
        tiles = [reference]
        tiles += [augmentation(reference, rng) for _ in range(views)]
        for _ in range(scenes):
            scene = composer(reference, rng, others)
            outlined = scene.image.copy()
            corners = [tuple(point) for point in scene.corners]
            width = math.ceil(1.5 * max(outlined.size) / cell)  # about 1.5 px once fitted
            ImageDraw.Draw(outlined).line([*corners, corners[0]], fill=_OUTLINE, width=width)
            tiles.append(outlined)
        for column, tile in enumerate(tiles):
            _paste_fitted(grid, tile, column * cell, _HEADER + row * cell, cell)
    return grid


def _paste_fitted(grid: Image.Image, tile: Image.Image, left: int, top: int, cell: int) -> None:
    """``tile`` shrunk to fit a ``cell`` square with a 3-pixel margin, centred in it."""
    tile = tile.copy()
    tile.thumbnail((cell - 6, cell - 6), Image.Resampling.BILINEAR)
    grid.paste(tile, (left + (cell - tile.width) // 2, top + (cell - tile.height) // 2))


def reference_files(folder: str | os.PathLike[str]) -> list[Path]:
    """The image files directly in ``folder`` (by name ending), sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"reference folder not found: {str(folder)!r}")
    files = sorted(
        path
        for path in folder.iterdir()
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()
    )
    if not files:
        raise ValueError(
            f"reference folder {str(folder)!r} holds no image files "
            f"({', '.join(sorted(IMAGE_SUFFIXES))})"
        )
    return files


def save_preview(
    folder: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    rows: int = 4,
    views: int = 4,
    scenes: int = 3,
    seed: int = 0,
) -> Path:
    """Render the preview of ``rows`` references drawn from ``folder`` (the others hung
    beside them come from the same folder) and write it atomically as a PNG to ``out``."""
    rows = check_int(rows, "rows", minimum=1)
    seed = check_int(seed, "seed", minimum=0)
    files = reference_files(folder)
    order = np.random.default_rng(seed).permutation(len(files))
    chosen = [load_image(files[i]) for i in order[:rows]]
    others = [load_image(files[i]) for i in order[rows : rows + 8]]
    image = render_preview(chosen, others=others, views=views, scenes=scenes, seed=seed)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    write_atomic(out, buffer.getvalue())
    return Path(out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pyinstance.train.preview",
        description="Render random training views and scenes of a few references to a PNG.",
    )
    parser.add_argument("reference_dir", help="folder of reference images")
    parser.add_argument("out", help="PNG file to write")
    parser.add_argument("--rows", type=int, default=4, help="references shown (default 4)")
    parser.add_argument("--views", type=int, default=4, help="views per reference (default 4)")
    parser.add_argument("--scenes", type=int, default=3, help="scenes per reference (default 3)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    arguments = parser.parse_args(argv)
    try:
        written = save_preview(
            arguments.reference_dir,
            arguments.out,
            rows=arguments.rows,
            views=arguments.views,
            scenes=arguments.scenes,
            seed=arguments.seed,
        )
    except (OSError, ValueError, TypeError, ImageDecodeError) as error:
        parser.error(str(error))
    print(f"wrote {written}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
