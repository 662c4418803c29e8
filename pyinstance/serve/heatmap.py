"""Where a photo matches a reference: per-location similarity of the photo's feature map to
the reference's descriptor, drawn over the photo (curator test page)."""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

from pyinstance.data.images import image_tensor, normalize, resize, scaled_size
from pyinstance.index import InstanceIndex
from pyinstance.models.backbone import IMAGENET_MEAN, IMAGENET_STD
from pyinstance.viz import render_region_heatmap

#: Feature-map cells outlined (the most similar ones).
OUTLINED = 3
#: Longest side of the returned picture.
LONGEST = 640


def similarity_heatmap(view: InstanceIndex, image: Image.Image, image_id: str) -> bytes:
    """A JPEG of ``image`` (at most :data:`LONGEST` pixels) with the similarity of each feature-map cell to reference
    ``image_id``'s descriptor (blue low, red high), its best cells outlined.

    Raises ``KeyError`` for an image id not in ``view``, ``ValueError`` when the recipe's
    descriptors are not in the feature map's space (head output ≠ backbone channels).
    """
    ids = view.image_ids()
    if image_id not in ids:
        raise KeyError(image_id)
    describer = view.describer
    channels = describer.backbone.out_channels
    if view.recipe.dim != channels:
        raise ValueError(
            f"heat maps need descriptors in the feature space ({channels} channels); this "
            f"recipe's are {view.recipe.dim}-dimensional"
        )
    # the stored (raw) descriptor lives in the feature map's space; post-processed ones do not
    raw = view.raw_descriptors()[ids.index(image_id)]
    if raw.ndim == 2:  # one descriptor per scale: their normalised mean
        raw = raw.mean(axis=0) / max(float(np.linalg.norm(raw.mean(axis=0))), 1e-12)
    reference = torch.from_numpy(np.ascontiguousarray(raw, dtype=np.float32))
    mean = getattr(describer.backbone, "input_mean", IMAGENET_MEAN)
    std = getattr(describer.backbone, "input_std", IMAGENET_STD)
    with torch.inference_mode():
        pixels = image_tensor(image, "image").to(describer.device)
        size = scaled_size(*pixels.shape[1:], view.recipe.max_side)
        features = describer.backbone(normalize(resize(pixels, size)[None], mean, std))[0]
        features = torch.nn.functional.normalize(features.float().clamp_min(0), dim=0)
        scores = torch.einsum("chw,c->hw", features.cpu(), reference).numpy()
    best = np.argsort(scores.reshape(-1))[::-1][:OUTLINED]
    picture = render_region_heatmap(image, best, scores.shape, scores=scores, alpha=0.5)
    picture.thumbnail((LONGEST, LONGEST))
    out = io.BytesIO()
    picture.save(out, "JPEG", quality=85)
    return out.getvalue()
