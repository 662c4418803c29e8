"""Real photos for quantising a graph and checking it: the package's bundled sample photos.

An int8 graph is calibrated on, and checked against torch with, photos rather than noise:
quantisation fits the value ranges of natural images, and on standard-normal noise the
int8 EfficientNet-Lite0 + GeM gives descriptors whose cosine with torch's is only 0.79–0.90,
against 0.97–0.99 on photos (measured, ``benchmarks/engine.py --int8``). The photos are
the eight public-domain images of ``pyinstance/demo/collection`` (scikit-image's samples,
licences beside them), read as data files.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from pyinstance.data.images import image_tensor, normalize, resize, scaled_size

#: The bundled sample photos, one folder per object.
SAMPLE_FOLDER = Path(__file__).resolve().parent.parent / "demo" / "collection"
#: Longest sides the calibration photos are resized to: the sizes the recipes describe at.
CALIBRATION_SIDES: tuple[int, ...] = (448, 640)
#: Probe batches of the check: (height, width) and how many photos each batch holds. Odd
#: and uneven sides, as the fp32 check's noise probes, so that a shape frozen at export shows.
PROBE_SHAPES: tuple[tuple[int, int, int], ...] = ((2, 448, 336), (1, 321, 449), (2, 385, 512))


def sample_photos() -> list[Path]:
    """The bundled sample photos, sorted; a FileNotFoundError when the package lacks them."""
    photos = sorted(SAMPLE_FOLDER.glob("*/*.jpg"))
    if not photos:
        raise FileNotFoundError(
            f"no sample photos in {SAMPLE_FOLDER}: the pyinstance installation is incomplete"
        )
    return photos


def calibration_batches(
    mean: Sequence[float], std: Sequence[float], sides: Sequence[int] = CALIBRATION_SIDES
) -> list[np.ndarray]:
    """Every sample photo at every longest side in ``sides``, and mirrored: normalised
    float32 1×3×H×W arrays, in that order (photo, side, then mirrored)."""
    batches = []
    for path in sample_photos():
        image = image_tensor(path)
        for side in sides:
            resized = normalize(resize(image, scaled_size(*image.shape[1:], side))[None], mean, std)
            batches += [resized.numpy(), resized.flip(-1).numpy()]
    return batches


def probe_batches(mean: Sequence[float], std: Sequence[float]) -> list[torch.Tensor]:
    """The check's probe batches (:data:`PROBE_SHAPES`): consecutive sample photos resized
    to each shape, normalised float32 B×3×H×W."""
    photos = sample_photos()
    batches = []
    first = 0
    for count, height, width in PROBE_SHAPES:
        images = [
            resize(image_tensor(photos[(first + i) % len(photos)]), (height, width))
            for i in range(count)
        ]
        first += count
        batches.append(normalize(torch.stack(images), mean, std))
    return batches
