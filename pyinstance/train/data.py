"""The training set: decoded photos with integer labels, from a manifest CSV or a folder.

Files that cannot be decoded are skipped and counted (the run goes on); a set with fewer
than two instances is refused, since nothing could be told apart.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from pyinstance.data.images import ImageDecodeError, decode_image, scaled_size
from pyinstance.index.describer import FileError
from pyinstance.index.sources import collect


@dataclass(frozen=True)
class TrainingSet:
    """Photos (upright RGB, longest side at most ``decode_side``) and their labels.

    Attributes:
        images: the decoded photos.
        labels: the class index of each photo, ``0 .. len(instances) - 1``.
        instances: the instance id of each class index.
        paths: the file of each photo.
        skipped: files that could not be used, with the reason.
    """

    images: tuple[Image.Image, ...]
    labels: tuple[int, ...]
    instances: tuple[str, ...]
    paths: tuple[Path, ...]
    skipped: tuple[FileError, ...] = ()

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_classes(self) -> int:
        return len(self.instances)


def load_training_set(
    source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], *, decode_side: int = 640
) -> TrainingSet:
    """The reference photos of ``source`` (manifest CSV, instance folders), decoded.

    Raises ``ValueError`` when fewer than two instances remain after skipping the files
    that failed to decode.
    """
    if isinstance(decode_side, bool) or not isinstance(decode_side, int) or decode_side < 1:
        raise ValueError(f"decode_side: expected a positive int, got {decode_side!r}")
    found, errors = collect(source)
    skipped = list(errors)
    images, names, paths = [], [], []
    for item in found:
        try:
            decoded = decode_image(item.path, lambda h, w: scaled_size(h, w, decode_side))
        except (ImageDecodeError, OSError) as error:
            skipped.append(FileError(str(item.path), str(error)))
            continue
        image = decoded.image
        if max(image.size) > decode_side:
            width, height = image.size
            new_height, new_width = scaled_size(height, width, decode_side)
            image = image.resize((new_width, new_height), Image.Resampling.BILINEAR)
        images.append(image)
        names.append(item.instance)
        paths.append(item.path)
    instances = tuple(sorted(set(names)))
    if len(instances) < 2:
        raise ValueError(
            f"source: training needs photos of at least 2 instances, found {len(instances)} "
            f"({len(images)} photo(s) decoded, {len(skipped)} skipped)"
        )
    index = {name: position for position, name in enumerate(instances)}
    return TrainingSet(
        images=tuple(images),
        labels=tuple(index[name] for name in names),
        instances=instances,
        paths=tuple(paths),
        skipped=tuple(skipped),
    )
