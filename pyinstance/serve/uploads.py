"""Reading uploaded photos: bounded in bytes, checked in pixels before decoding."""

from __future__ import annotations

import io
import warnings

from PIL import Image, UnidentifiedImageError
from starlette.requests import Request

from pyinstance.data.images import upright_rgb
from pyinstance.serve.errors import ApiError

#: Content types accepted as a raw image body, and the Pillow formats accepted at all.
IMAGE_TYPES = ("image/jpeg", "image/png", "image/webp")
FORMATS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it exceeds ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "too_large", f"body of {declared} bytes exceeds {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "too_large", f"body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def open_image(data: bytes, *, max_pixels: int, name: str = "image") -> Image.Image:
    """Check ``data`` is a JPEG/PNG/WebP of at most ``max_pixels`` pixels (read from the
    header, before decoding) and return it opened, not yet decoded."""
    if not data:
        raise ApiError(422, "empty_image", f"{name}: empty; expected a JPEG, PNG or WebP image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError as error:
        raise ApiError(415, "not_an_image", f"{name}: not a JPEG, PNG or WebP image") from error
    except Image.DecompressionBombError as error:
        raise ApiError(
            413, "too_many_pixels", f"{name}: too many pixels, a decompression bomb ({error})"
        ) from error
    except (OSError, ValueError) as error:
        raise ApiError(
            422, "corrupt_image", f"{name}: unreadable image header ({error})"
        ) from error
    if image.format not in FORMATS:
        raise ApiError(
            415, "unsupported_image", f"{name}: {image.format} images are not accepted; "
            "send JPEG, PNG or WebP"
        )  # fmt: skip
    width, height = image.size
    if width * height > max_pixels:
        raise ApiError(
            413, "too_many_pixels", f"{name}: {width}×{height} pixels exceeds the limit of "
            f"{max_pixels} pixels"
        )  # fmt: skip
    return image


def decode_image(data: bytes, *, max_pixels: int, longest: int, name: str = "image") -> Image.Image:
    """Decode ``data`` to upright RGB (a JPEG at reduced size when ``longest`` allows)."""
    image = open_image(data, max_pixels=max_pixels, name=name)
    try:
        if image.format == "JPEG":
            image.draft("RGB", (longest * 2, longest * 2))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image.load()
        return upright_rgb(image, name)  # EXIF orientation of phone photos applied
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise ApiError(
            422, "corrupt_image", f"{name}: cannot be decoded (truncated or corrupt: {error})"
        ) from error
