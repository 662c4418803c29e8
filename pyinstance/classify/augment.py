"""Augmented views of a reference photo: stand-ins for queries of an instance with one photo.

Describe the views with the index's extractor and pass them to
:func:`pyinstance.classify.fit_threshold` as ``views``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image, ImageEnhance, ImageStat

from pyinstance.classify._checks import check_count

#: The smallest side an image must have to be augmented.
MIN_SIDE = 16


def _fill(image: Image.Image) -> tuple[int, ...]:
    return tuple(int(v) for v in ImageStat.Stat(image).mean)


def _crop(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A crop covering 45-85 % of the area, aspect changed by up to ±20 %."""
    width, height = image.size
    area = rng.uniform(0.45, 0.85)
    aspect = rng.uniform(0.8, 1.2)
    w = max(MIN_SIDE // 2, min(width, round(width * np.sqrt(area * aspect))))
    h = max(MIN_SIDE // 2, min(height, round(height * np.sqrt(area / aspect))))
    left = int(rng.integers(0, width - w + 1))
    top = int(rng.integers(0, height - h + 1))
    return image.crop((left, top, left + w, top + h))


def _rotate(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A rotation by 5-20 degrees either way, corners filled with the mean colour."""
    angle = rng.uniform(5, 20) * rng.choice([-1, 1])
    return image.rotate(angle, resample=Image.Resampling.BICUBIC, fillcolor=_fill(image))


def _scale(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Downscaled to 30-70 % (a distant or low-resolution shot)."""
    factor = rng.uniform(0.3, 0.7)
    width, height = image.size
    size = (max(MIN_SIDE // 2, round(width * factor)), max(MIN_SIDE // 2, round(height * factor)))
    return image.resize(size, Image.Resampling.BICUBIC, reducing_gap=2.0)


def _colour(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Brightness, contrast and saturation each scaled by 0.65-1.35 (other lighting)."""
    for enhancer in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        image = enhancer(image).enhance(rng.uniform(0.65, 1.35))
    return image


def _perspective(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A perspective warp: each corner moved inwards by up to 15 % of the side."""
    width, height = image.size
    corners = np.array([[0, 0], [width, 0], [width, height], [0, height]], dtype=np.float64)
    inward = np.array([[1, 1], [-1, 1], [-1, -1], [1, -1]], dtype=np.float64)
    moved = corners + inward * rng.uniform(0, 0.15, (4, 2)) * [width, height]
    # Coefficients mapping output pixels (corners) to input pixels (moved corners).
    rows = []
    for (x, y), (u, v) in zip(corners, moved, strict=True):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
    coefficients = np.linalg.solve(np.array(rows), moved.reshape(-1))
    return image.transform(
        image.size,
        Image.Transform.PERSPECTIVE,
        tuple(coefficients),
        resample=Image.Resampling.BICUBIC,
        fillcolor=_fill(image),
    )


#: The kinds of view, used in turn.
VIEWS: tuple[Callable[[Image.Image, np.random.Generator], Image.Image], ...] = (
    _crop,
    _rotate,
    _scale,
    _colour,
    _perspective,
)


def augment_views(image: Image.Image, *, count: int = 10, seed: int = 0) -> list[Image.Image]:
    """``count`` RGB views of ``image``: crops, rotations, downscales, lighting changes and
    perspective warps in turn, each with random strength (reproducible from ``seed``)."""
    if not isinstance(image, Image.Image):
        raise TypeError(f"image: expected a PIL.Image.Image, got {type(image).__name__}")
    if min(image.size) < MIN_SIDE:
        raise ValueError(f"image: expected sides of at least {MIN_SIDE} px, got {image.size}")
    count = check_count(count, "count", minimum=1)
    seed = check_count(seed, "seed", minimum=0)
    rgb = image.convert("RGB")
    rng = np.random.default_rng(seed)
    return [VIEWS[i % len(VIEWS)](rgb, rng) for i in range(count)]
