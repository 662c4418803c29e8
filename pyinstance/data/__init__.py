"""Image loading, resizing and normalisation; collection manifests."""

from pyinstance.data.images import (
    DecodedImage,
    ImageDecodeError,
    ImageLike,
    decode_image,
    image_tensor,
    load_image,
    normalize,
    resize,
    scaled_size,
    upright_rgb,
)
from pyinstance.data.manifest import Manifest, ManifestEntry, RowProblem

__all__ = [
    "DecodedImage",
    "ImageDecodeError",
    "ImageLike",
    "Manifest",
    "ManifestEntry",
    "RowProblem",
    "decode_image",
    "image_tensor",
    "load_image",
    "normalize",
    "resize",
    "scaled_size",
    "upright_rgb",
]
