"""Fakes for the pipeline's unit tests (identification, calibration, objects): photos of
flat colour patches and a describer that gives each palette colour a known unit vector, so
that every descriptor, similarity and box is known by hand.

A pixel takes the vector of its nearest palette colour; the feature map is the mean of the
vectors over each ``CELL × CELL`` block, and the head (SPoC: mean, L2-normalised) pools it.
A photo of one colour is described by that colour's vector; one of a fraction ``f`` of
colour ``a`` and ``1 − f`` of ``b`` by ``normalize(f·a + (1 − f)·b)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from pyinstance.data.images import (
    DecodedImage,
    ImageDecodeError,
    image_tensor,
    load_image,
    scaled_size,
)
from pyinstance.index import InstanceIndex, Recipe
from pyinstance.index.describer import FileError
from pyinstance.models.pooling import SPoC
from pyinstance.models.regions import pool_windows

DIM = 16
CELL = 8

RED = (255, 0, 0)
GREEN = (0, 255, 0)
BLUE = (0, 0, 255)
WHITE = (255, 255, 255)
YELLOW = (255, 255, 0)
BLACK = (0, 0, 0)
CYAN = (0, 255, 255)


def unit(*weights: tuple[int, float]) -> np.ndarray:
    """The unit vector of ``(axis, weight)`` pairs in ``DIM`` dimensions."""
    v = np.zeros(DIM, np.float32)
    for axis, weight in weights:
        v[axis] = weight
    return v / np.linalg.norm(v)


#: Each colour's vector: red, green, blue and white orthogonal; yellow close to red (0.8);
#: black (the wall, the background) orthogonal to all; cyan the opposite of red.
PALETTE = {
    RED: unit((0, 1.0)),
    GREEN: unit((1, 1.0)),
    BLUE: unit((2, 1.0)),
    WHITE: unit((3, 1.0)),
    YELLOW: unit((0, 0.8), (4, 0.6)),
    BLACK: unit((15, 1.0)),
    CYAN: unit((0, -1.0)),
}


def tiny_recipe(**changes: Any) -> Recipe:
    """A recipe whose descriptors the fake describer makes (its network is never built)."""
    return Recipe(backbone="efficientnet_lite0", head="spoc", dim=DIM, **changes)


def photo(
    height: int, width: int, *patches: tuple[tuple[int, int, int, int], tuple]
) -> Image.Image:
    """A black ``height × width`` photo with ``((left, top, right, bottom), colour)`` patches."""
    pixels = np.zeros((height, width, 3), np.uint8)
    for (left, top, right, bottom), colour in patches:
        pixels[top:bottom, left:right] = colour
    return Image.fromarray(pixels)


def solid(colour: tuple, size: int = 32) -> Image.Image:
    return photo(size, size, ((0, 0, size, size), colour))


class PaletteDescriber:
    """The parts of :class:`pyinstance.index.describer.Describer` the pipeline uses."""

    def __init__(self, recipe: Recipe):
        self.recipe = recipe
        self.head = SPoC(DIM).eval()
        self._colours = torch.tensor(list(PALETTE), dtype=torch.float32) / 255
        self._vectors = torch.from_numpy(np.stack(list(PALETTE.values())))
        self.seen: list[tuple[int, int]] = []  # (height, width) of each photo described
        self.min_input_size = 1  # of the backbone it stands for (a test may raise it)

    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        """``1 × DIM × H/CELL × W/CELL`` features of a 3×H×W photo."""
        if pixels.dtype == torch.uint8:
            pixels = pixels.float() / 255
        self.seen.append((int(pixels.shape[1]), int(pixels.shape[2])))
        distance = ((pixels[None] - self._colours[:, :, None, None]) ** 2).sum(dim=1)
        per_pixel = self._vectors[distance.argmin(dim=0)].permute(2, 0, 1)
        return F.avg_pool2d(per_pixel[None], CELL)

    def query_features(self, item: Any, name: str = "image") -> tuple[torch.Tensor, tuple]:
        pixels = image_tensor(item.image if isinstance(item, DecodedImage) else item, name)
        full = tuple(item.full_size) if isinstance(item, DecodedImage) else pixels.shape[1:]
        if not self.describes(*full):
            raise ValueError(f"{name}: below the backbone's minimum input size")
        return self.features(pixels), (int(full[0]), int(full[1]))

    def describes(self, height: int, width: int) -> bool:
        """The real describer's rule: each side at the query size >= the minimum input size."""
        return min(scaled_size(height, width, self.recipe.query_side)) >= self.min_input_size

    def queries(self, images: Sequence[Any]) -> np.ndarray:
        out = []
        for position, item in enumerate(images):
            features, _ = self.query_features(item, f"images[{position}]")
            with torch.inference_mode():
                if self.recipe.query_windows is None:
                    out.append(self.head(features)[:, None].numpy())
                else:
                    out.append(pool_windows(features, self.head, self.recipe.query_windows).numpy())
        return np.concatenate(out).astype(np.float32)

    def references(
        self, paths: Sequence[str | Path], *, progress: bool = False
    ) -> tuple[np.ndarray, list[FileError]]:
        rows, errors = [], []
        for path in paths:
            try:
                image = load_image(path)
            except (ImageDecodeError, OSError) as error:
                errors.append(FileError(str(path), str(error)))
                continue
            with torch.inference_mode():
                rows.append(self.head(self.features(image_tensor(image, str(path)))).numpy())
        return (np.concatenate(rows) if rows else np.empty((0, DIM), np.float32)), errors


def palette_index(
    path: Path, folder: Path, references: dict[str, list[Image.Image]], recipe: Recipe | None = None
) -> InstanceIndex:
    """An index of ``references`` (instance -> photos) saved as PNG files under ``folder``
    (one sub-folder per instance, files ``<instance>_<i>.png``), described by the fake."""
    for instance, photos in references.items():
        (folder / instance).mkdir(parents=True, exist_ok=True)
        for i, image in enumerate(photos):
            image.save(folder / instance / f"{instance}_{i}.png")
    index = InstanceIndex.create(path, recipe or tiny_recipe())
    index._describer = PaletteDescriber(index.recipe)
    report = index.add(folder)
    assert report.added == sum(len(p) for p in references.values()), report
    return index
