"""Training views: one photo, a seeded random generator -> a normalised 1×3×H×W tensor.

A view is the photo augmented (scale of the longest side drawn from ``augment.sizes``,
horizontal flip), deterministic in its generator, so that every process and every resumed
run makes the same view for the same (seed, epoch, batch, position).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from pyinstance.data.images import image_tensor, normalize, scaled_size
from pyinstance.train.config import AugmentConfig


def view_generator(seed: int, epoch: int, batch: int, position: int) -> np.random.Generator:
    """The generator of one view of one batch (independent of processes and resumes)."""
    return np.random.default_rng([seed, epoch, batch, position])


class ViewMaker:
    """Makes the training views of ``images`` for a backbone's input normalisation."""

    def __init__(
        self,
        augment: AugmentConfig,
        images: Sequence[Image.Image],
        *,
        mean: Sequence[float],
        std: Sequence[float],
    ):
        self.augment = augment
        self.images = images
        self.mean, self.std = tuple(mean), tuple(std)

    def image(self, index: int, rng: np.random.Generator) -> Image.Image:
        """The augmented photo ``index`` as a PIL image."""
        photo = self.images[index]
        side = int(rng.choice(self.augment.sizes))
        height, width = scaled_size(photo.height, photo.width, side)
        view = photo.resize((width, height), Image.Resampling.BILINEAR)
        if rng.random() < self.augment.flip:
            view = view.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return view

    def __call__(self, index: int, rng: np.random.Generator) -> torch.Tensor:
        """The normalised view 1×3×H×W of photo ``index``."""
        pixels = image_tensor(self.image(index, rng)).float()[None] / 255.0
        return normalize(pixels, self.mean, self.std)
