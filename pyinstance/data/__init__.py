"""Image loading, resizing and normalisation; collection manifests."""

from pyinstance.data.images import (
    ImageDecodeError,
    ImageLike,
    image_tensor,
    load_image,
    normalize,
    resize,
    scaled_size,
)
from pyinstance.data.manifest import Manifest, ManifestEntry

__all__ = [
    "ImageDecodeError",
    "ImageLike",
    "Manifest",
    "ManifestEntry",
    "image_tensor",
    "load_image",
    "normalize",
    "resize",
    "scaled_size",
]
