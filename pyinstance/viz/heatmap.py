"""Heat-map pictures of the regions selected by top-k region pooling (Pillow)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from pyinstance.data.images import ImageLike, image_tensor


def _as_image(image: ImageLike) -> Image.Image:
    """``image`` as an upright 8-bit RGB picture, through the loader every other path uses."""
    pixels = image_tensor(image, "image").cpu()
    if pixels.is_floating_point():
        pixels = (pixels * 255.0).round().to(torch.uint8)
    return Image.fromarray(pixels.permute(1, 2, 0).contiguous().numpy(), "RGB")


def _colormap(values: np.ndarray) -> np.ndarray:
    """Blue (low) -> green -> red (high) for values in [0, 1]; H×W -> H×W×3 uint8."""
    t = np.clip(values, 0.0, 1.0)[..., None]
    centres = np.array([3.0, 2.0, 1.0])  # red, green, blue
    return (np.clip(1.5 - np.abs(4.0 * t - centres), 0.0, 1.0) * 255).astype(np.uint8)


def render_region_heatmap(
    image: ImageLike,
    locations: Sequence[int] | Any,
    grid_hw: tuple[int, int],
    *,
    scores: Any = None,
    valid_hw: tuple[int, int] | None = None,
    path: str | Path | None = None,
    color: tuple[int, int, int] = (255, 0, 0),
    line_width: int = 3,
    alpha: float = 0.45,
) -> Image.Image:
    """Draw the selected feature-map cells (and optionally the score map) over an image.

    Args:
        image: the input picture: whatever the image loader accepts (a file path, a PIL
            image, an H×W×3 uint8 array, a 3×H×W tensor), made upright from its EXIF
            orientation like everywhere else.
        locations: flat indices ``y * W + x`` into the H×W feature map (one image's row of
            ``topk_region_pool``'s or the ``topk_region`` head's locations).
        grid_hw: (H, W) of the feature map.
        scores: optional H×W location scores (e.g. the class map's max over classes),
            blended over the image as a blue-to-red heat map.
        valid_hw: the (h, w) cells of the feature map covering the image when it was padded
            into a batch (default: the whole map).
        path: where to save the PNG (optional).
        color, line_width: outline of each selected cell; ``alpha``: heat-map opacity.

    Returns:
        The rendered RGB image, the size of ``image``.
    """
    picture = _as_image(image)
    height, width = (int(v) for v in grid_hw)
    if height < 1 or width < 1:
        raise ValueError(f"grid_hw: expected positive (H, W), got {grid_hw}")
    valid_h, valid_w = (height, width) if valid_hw is None else (int(v) for v in valid_hw)
    if not (1 <= valid_h <= height and 1 <= valid_w <= width):
        raise ValueError(
            f"valid_hw: expected 1 <= h <= {height} and 1 <= w <= {width}, got {valid_hw}"
        )
    flat = np.asarray(locations, dtype=np.int64).reshape(-1)
    rows, cols = flat // width, flat % width
    outside = (flat < 0) | (rows >= valid_h) | (cols >= valid_w)
    if outside.any():
        raise ValueError(
            f"locations: {flat[outside].tolist()} fall outside the {valid_h}×{valid_w} valid cells "
            f"of the {height}×{width} grid"
        )
    cell_w, cell_h = picture.width / valid_w, picture.height / valid_h

    if scores is not None:
        score_map = np.asarray(scores, dtype=np.float64)
        if score_map.shape != (height, width):
            raise ValueError(f"scores: expected shape ({height}, {width}), got {score_map.shape}")
        score_map = score_map[:valid_h, :valid_w]
        if not np.isfinite(score_map).all():
            raise ValueError("scores: contains NaN or infinite values")
        span = score_map.max() - score_map.min()
        normalised = (score_map - score_map.min()) / span if span > 0 else np.zeros_like(score_map)
        heat = Image.fromarray(_colormap(normalised), "RGB").resize(picture.size, Image.BILINEAR)
        picture = Image.blend(picture, heat, alpha)

    draw = ImageDraw.Draw(picture)
    for row, col in zip(rows.tolist(), cols.tolist(), strict=True):
        box = (
            round(col * cell_w),
            round(row * cell_h),
            max(round((col + 1) * cell_w) - 1, round(col * cell_w)),
            max(round((row + 1) * cell_h) - 1, round(row * cell_h)),
        )
        draw.rectangle(box, outline=tuple(color), width=line_width)
    if path is not None:
        picture.save(path, format="PNG")
    return picture
