"""Training views: one photo and a seeded generator -> a normalised 1×3×H×W tensor.

A view is the photo augmented (:class:`~pyinstance.data.augment.Augmentation`: flip, axis
scales, rotation, colour jitter, multi-scale) and, with probability ``augment.composite``,
composited into a gallery scene beside other training photos
(:class:`~pyinstance.data.composite.SceneComposer`): what teaches one reference photo how
a visitor's shot of it looks. Views are deterministic in their generator, so every process
and every resumed run makes the same view for the same (seed, epoch, step, position).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from pyinstance.data.images import image_tensor, normalize
from pyinstance.train.config import AugmentConfig


def view_generator(seed: int, epoch: int, step: int, position: int) -> np.random.Generator:
    """The generator of one view of one batch (independent of processes and resumes)."""
    return np.random.default_rng([seed, epoch, step, position])


class ViewMaker:
    """Makes the training views of ``images`` (labelled ``labels``) for a backbone's input
    normalisation ``mean``/``std``."""

    def __init__(
        self,
        augment: AugmentConfig,
        images: Sequence[Image.Image],
        labels: Sequence[int],
        *,
        mean: Sequence[float],
        std: Sequence[float],
    ):
        self.augment = augment.augmentation()
        self.composite = augment.composite
        self.composer = augment.scene_composer()
        self.images = images
        self.labels = np.asarray(labels)
        self.mean, self.std = tuple(mean), tuple(std)

    def image(self, index: int, rng: np.random.Generator) -> Image.Image:
        """The view of photo ``index`` as a PIL image."""
        view = self.augment(self.images[index], rng)
        if rng.random() >= self.composite:
            return view
        strangers = np.flatnonzero(self.labels != self.labels[index])
        count = min(self.composer.others, strangers.size)
        others = [self.images[i] for i in rng.choice(strangers, size=count, replace=False)]
        return self.composer(view, rng, others=others).image

    def __call__(self, index: int, rng: np.random.Generator) -> torch.Tensor:
        """The normalised view 1×3×H×W of photo ``index``."""
        pixels = image_tensor(self.image(index, rng)).float()[None] / 255.0
        return normalize(pixels, self.mean, self.std)
