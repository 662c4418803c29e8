"""Image decoding and resizing: paths, PIL images, numpy arrays or tensors to RGB tensors.

Files are decoded with Pillow, rotated upright from their EXIF orientation and converted
to RGB (grey, palette, CMYK and alpha images alike). Resizing is bilinear with
anti-aliasing (``torch.nn.functional.interpolate``), the same for every input kind.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

#: What the loaders accept as one image.
ImageLike = str | os.PathLike | Image.Image | np.ndarray | torch.Tensor


class ImageDecodeError(ValueError):
    """An image file exists but cannot be decoded (corrupt, truncated, not an image)."""


def load_image(path: str | os.PathLike[str]) -> Image.Image:
    """Decode ``path`` into an upright RGB PIL image; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {str(path)!r}")
    try:
        with Image.open(path) as opened:
            opened.load()
            image = ImageOps.exif_transpose(opened)
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise ImageDecodeError(f"cannot decode image file {str(path)!r}: {error}") from error


def image_tensor(image: ImageLike, name: str = "image") -> torch.Tensor:
    """``image`` as a 3×H×W tensor, uint8 (0..255) or float (0..1), on its current device.

    Accepts a file path, a PIL image, a numpy H×W×3 uint8 array, or a tensor 3×H×W (uint8,
    or float in [0, 1]). ``name`` is used in error messages.
    """
    if isinstance(image, (str, os.PathLike)):
        image = load_image(image)
    if isinstance(image, Image.Image):
        image = np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(
                f"{name}: expected a numpy H×W×3 uint8 array, got shape {image.shape} "
                f"dtype {image.dtype}"
            )
        image = np.ascontiguousarray(image)
        if not image.flags.writeable:  # torch warns on read-only arrays (PIL's asarray)
            image = image.copy()
        image = torch.from_numpy(image).permute(2, 0, 1)
    if not isinstance(image, torch.Tensor):
        raise TypeError(
            f"{name}: expected a path, PIL image, numpy array or tensor, got {type(image).__name__}"
        )
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"{name}: expected a 3×H×W RGB tensor, got shape {tuple(image.shape)}")
    if image.shape[1] == 0 or image.shape[2] == 0:
        raise ValueError(f"{name}: empty image of shape {tuple(image.shape)}")
    if image.dtype != torch.uint8 and not image.is_floating_point():
        raise TypeError(f"{name}: expected a uint8 or floating-point tensor, got {image.dtype}")
    if image.is_floating_point() and not bool(torch.isfinite(image).all()):
        raise ValueError(f"{name}: contains NaN or infinite values")
    return image


def scaled_size(height: int, width: int, longest: int) -> tuple[int, int]:
    """(H, W) with the longest side ``longest`` and the aspect ratio kept (each side >= 1)."""
    factor = longest / max(height, width)
    return max(1, round(height * factor)), max(1, round(width * factor))


def resize(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Float 3×H×W in [0, 1] resized to ``size`` (bilinear, anti-aliased)."""
    image = image.float() / 255.0 if image.dtype == torch.uint8 else image.float()
    if tuple(image.shape[1:]) == tuple(size):
        return image
    resized = F.interpolate(
        image[None], size=size, mode="bilinear", antialias=True, align_corners=False
    )
    return resized[0].clamp_(0.0, 1.0)


def normalize(batch: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``(batch - mean) / std`` per RGB channel of a B×3×H×W batch."""
    mean_t = torch.as_tensor(mean, dtype=batch.dtype, device=batch.device).view(1, 3, 1, 1)
    std_t = torch.as_tensor(std, dtype=batch.dtype, device=batch.device).view(1, 3, 1, 1)
    return (batch - mean_t) / std_t
