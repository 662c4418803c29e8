"""Image decoding and resizing: paths, PIL images, numpy arrays or tensors to RGB tensors.

Files are decoded with Pillow, rotated upright from their EXIF orientation and converted
to RGB (grey, palette, CMYK, alpha, 16-bit grey and float images alike). When the caller
knows the size it will resize to, JPEGs are decoded in draft mode: libjpeg's DCT scaling
builds the image at 1/2, 1/4 or 1/8 of its size, the smallest reduction that is still at
least twice that size, so a phone photo is never decoded at full resolution for a
448-pixel descriptor. Resizing is bilinear with anti-aliasing
(``torch.nn.functional.interpolate``), done once at the target size, the same for every
input kind (8-bit images in 8 bits). Pillow's decompression-bomb
limit (``PIL.Image.MAX_IMAGE_PIXELS``) is kept: larger files are refused, naming the file.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from math import ceil
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

#: What the loaders accept as one image.
ImageLike = str | os.PathLike | Image.Image | np.ndarray | torch.Tensor

#: A function from an image's upright (height, width) to the size it will be resized to.
TargetSize = Callable[[int, int], tuple[int, int]]

_ORIENTATION = 0x0112
_TRANSPOSED_ORIENTATIONS = {5, 6, 7, 8}  # EXIF orientations that swap width and height
_UINT16_MAX = 65535

#: Draft decoding keeps at least this factor between the decoded and the resized size.
DRAFT_REDUCING_GAP = 2.0


class ImageDecodeError(ValueError):
    """An image file exists but cannot be decoded (corrupt, truncated, not an image, too large)."""


@dataclass(frozen=True)
class DecodedImage:
    """An upright RGB image and the upright (height, width) of the file at full size.

    ``image`` is smaller than ``full_size`` when the file was decoded in draft mode.
    """

    image: Image.Image
    full_size: tuple[int, int]


def load_image(path: str | os.PathLike[str]) -> Image.Image:
    """Decode ``path`` at full size into an upright RGB PIL image; errors name the file."""
    return decode_image(path).image


def decode_image(
    path: str | os.PathLike[str],
    target: TargetSize | None = None,
    *,
    reducing_gap: float | None = None,
) -> DecodedImage:
    """Decode ``path`` into an upright RGB image, reduced in draft mode when ``target`` allows.

    ``target`` maps the upright full size (height, width) to the largest size the caller
    will resize to; a JPEG is then decoded at the smallest power-of-two reduction whose
    sides are still at least ``reducing_gap`` times that size (other formats decode at
    full size). The gap (default :data:`DRAFT_REDUCING_GAP`, 2 as in Pillow's
    ``thumbnail``) leaves the anti-aliased resize at least a factor 2 to filter: with 1,
    libjpeg's DCT scaling does most of the reduction and descriptors move measurably
    (``benchmarks/decode.py``; 12 museum queries as 12-megapixel JPEGs, Lite0 + GeM at 448
    px: lowest cosine to the full decode's descriptor 0.9952 with gap 1, a 1/8 decode,
    against 0.9993 with gap 2, a 1/4 decode, which costs about 2 ms more CPU per photo).
    Errors name the file: :class:`FileNotFoundError`, or
    :class:`ImageDecodeError` for a corrupt, truncated or too large (decompression bomb)
    file.
    """
    gap = DRAFT_REDUCING_GAP if reducing_gap is None else float(reducing_gap)
    if not gap >= 1.0:
        raise ValueError(f"reducing_gap: expected a number >= 1, got {reducing_gap!r}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {str(path)!r}")
    try:
        with Image.open(path) as opened:
            full_size = _upright_size(opened)
            if target is not None:
                height, width = target(*full_size)
                if full_size != (opened.height, opened.width):
                    height, width = width, height  # draft works on the stored orientation
                opened.draft("RGB", (max(1, ceil(width * gap)), max(1, ceil(height * gap))))
            opened.load()
            return DecodedImage(upright_rgb(opened, repr(str(path))), full_size)
    except Image.DecompressionBombError as error:
        raise ImageDecodeError(
            f"image file {str(path)!r} is too large to decode safely (decompression bomb "
            f"protection): {error}"
        ) from error
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        if isinstance(error, ImageDecodeError):
            raise
        raise ImageDecodeError(f"cannot decode image file {str(path)!r}: {error}") from error


def upright_rgb(image: Image.Image, source: str = "image") -> Image.Image:
    """``image`` rotated upright from its EXIF orientation and converted to 8-bit RGB.

    16-bit grey (``I;16*``, and ``I`` taken as 0..65535) is scaled to 0..255, float grey
    (``F``) must lie in [0, 1]; ``source`` names the image in errors.
    """
    if image.getexif().get(_ORIENTATION, 1) != 1:
        image = ImageOps.exif_transpose(image)
    if image.mode.startswith("I;16") or image.mode == "I":
        values = np.asarray(image).astype(np.float64)
        _check_range(values, 0.0, _UINT16_MAX, source, "16-bit grey")
        image = _grey(values / _UINT16_MAX)
    elif image.mode == "F":
        values = np.asarray(image).astype(np.float64)
        _check_range(values, 0.0, 1.0, source, "float")
        image = _grey(values)
    return image if image.mode == "RGB" else image.convert("RGB")


def _check_range(values: np.ndarray, low: float, high: float, source: str, kind: str) -> None:
    if not np.isfinite(values).all():
        raise ImageDecodeError(f"{source}: {kind} pixels contain NaN or infinite values")
    if values.size and (values.min() < low or values.max() > high):
        raise ImageDecodeError(
            f"{source}: {kind} pixel values must lie in [{low:g}, {high:g}], got "
            f"[{values.min():g}, {values.max():g}]"
        )


def _grey(unit: np.ndarray) -> Image.Image:
    return Image.fromarray(np.round(unit * 255.0).astype(np.uint8), "L")


def _upright_size(image: Image.Image) -> tuple[int, int]:
    """(height, width) of ``image`` once rotated upright from its EXIF orientation."""
    if image.getexif().get(_ORIENTATION) in _TRANSPOSED_ORIENTATIONS:
        return image.width, image.height
    return image.height, image.width


def image_tensor(image: ImageLike, name: str = "image") -> torch.Tensor:
    """``image`` as a 3×H×W tensor, uint8 (0..255) or float (0..1), on its current device.

    Accepts a file path, a PIL image, a numpy H×W×3 uint8 array, or a tensor 3×H×W (uint8,
    or float in [0, 1]: values outside, e.g. 0..255 floats, are refused). ``name`` is used
    in error messages.
    """
    if isinstance(image, (str, os.PathLike)):
        image = load_image(image)
    if isinstance(image, Image.Image):
        image = np.asarray(upright_rgb(image, name))
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
    if image.layout != torch.strided or image.is_meta:
        raise ValueError(
            f"{name}: expected a dense tensor with values, got a "
            f"{'meta' if image.is_meta else str(image.layout)} tensor"
        )
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"{name}: expected a 3×H×W RGB tensor, got shape {tuple(image.shape)}")
    if image.shape[1] == 0 or image.shape[2] == 0:
        raise ValueError(f"{name}: empty image of shape {tuple(image.shape)}")
    if image.dtype != torch.uint8 and not image.is_floating_point():
        raise TypeError(f"{name}: expected a uint8 or floating-point tensor, got {image.dtype}")
    if image.is_floating_point():
        if not bool(torch.isfinite(image).all()):
            raise ValueError(f"{name}: contains NaN or infinite values")
        low, high = float(image.min()), float(image.max())
        if low < 0.0 or high > 1.0:
            raise ValueError(
                f"{name}: a float image must lie in [0, 1], got values in [{low:g}, {high:g}] "
                "(divide 0..255 values by 255, or pass a uint8 tensor)"
            )
    return image


def scaled_size(height: int, width: int, longest: int) -> tuple[int, int]:
    """(H, W) with the longest side ``longest`` and the aspect ratio kept (each side >= 1)."""
    factor = longest / max(height, width)
    return max(1, round(height * factor)), max(1, round(width * factor))


def resize(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Float 3×H×W in [0, 1] resized to ``size`` (bilinear, anti-aliased).

    A uint8 image is resized in uint8 (torch's vectorised path, rounded to the nearest
    level like Pillow's, within 1/255 of resizing it as floats and several times faster),
    then scaled to [0, 1].
    """
    if tuple(image.shape[1:]) != tuple(size) and image.dtype == torch.uint8:
        image = F.interpolate(
            image[None], size=size, mode="bilinear", antialias=True, align_corners=False
        )[0]
    image = image.float().div_(255.0) if image.dtype == torch.uint8 else image.float()
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
    return (batch - mean_t).div_(std_t)
