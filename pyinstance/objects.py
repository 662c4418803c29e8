"""Every collection object in a photo: region descriptors of one feature map, each searched.

The photo goes once through the backbone (at the recipe's query side). Boxes of several
sizes and aspect ratios slide over its feature map, each pooled by the recipe's head into
a descriptor (a summed-area table makes that cheap for GeM and SPoC), and every box's
nearest reference is searched. A box whose similarity reaches the acceptance threshold is
a candidate; candidates are taken best first, skipping an instance already found and a
box that mostly overlaps one already taken (non-maximum suppression), so each instance is
reported once and a region of one painting never becomes a second painting.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from pyinstance.classify.openset import threshold_for_far
from pyinstance.data.images import decode_image, scaled_size
from pyinstance.index import InstanceIndex
from pyinstance.models.regions import pool_boxes

#: The smallest box side, in feature-map cells (32 px each for the built-in backbones).
MIN_CELLS = 3
#: Box sides grow by this factor from :data:`MIN_CELLS` to the whole map.
SIZE_STEP = 1.4
#: Boxes slide by this fraction of their side.
STRIDE = 1 / 3
#: A box covering more than this share of the smaller of it and a box already taken is
#: the same object seen again.
OVERLAP = 0.5
#: References of other instances averaged into a reference's hubness.
HUB_NEIGHBOURS = 10
#: Setting of the index holding the acceptance threshold (``pyinstance calibrate --objects``).
THRESHOLD_SETTING = "objects_threshold"

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class DetectedObject:
    """One collection object found in a photo.

    Attributes:
        instance: its instance id.
        confidence: the similarity of its box to its nearest reference, in [0, 1].
        box: ``(left, top, right, bottom)`` in the photo's pixel coordinates.
        image_id: that nearest reference image.
    """

    instance: str
    confidence: float
    box: tuple[int, int, int, int]
    image_id: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "instance": self.instance,
            "confidence": self.confidence,
            "box": list(self.box),
            "image_id": self.image_id,
        }


def candidate_boxes(height: int, width: int) -> list[Box]:
    """``(top, left, bottom, right)`` boxes (cells) of an ``height × width`` feature map:
    every side from :data:`MIN_CELLS` to the whole map by :data:`SIZE_STEP`, both
    directions independently, sliding by :data:`STRIDE` of the side."""
    if height < 1 or width < 1:
        raise ValueError(f"feature map: expected at least 1×1 cells, got {height}×{width}")
    boxes = []
    for box_h in _sides(height):
        for box_w in _sides(width):
            for top in _starts(height, box_h):
                for left in _starts(width, box_w):
                    boxes.append((top, left, top + box_h, left + box_w))
    return boxes


def _sides(size: int) -> list[int]:
    sides, side = [], float(min(MIN_CELLS, size))
    while round(side) < size:
        sides.append(round(side))
        side *= SIZE_STEP
    return sorted(set(sides)) + [size]


def _starts(size: int, box: int) -> list[int]:
    step = max(1, round(box * STRIDE))
    starts = list(range(0, size - box + 1, step))
    if starts[-1] != size - box:
        starts.append(size - box)
    return starts


def region_matches(
    index: InstanceIndex, features: torch.Tensor, full: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Each candidate box of a photo's ``1 × C × H × W`` feature map: its nearest
    reference's instance code, similarity and row id, and the boxes as ``R × 4`` pixels
    (left, top, right, bottom) of the ``full`` (height, width) photo."""
    with torch.inference_mode():
        boxes = candidate_boxes(*features.shape[2:])
        descriptors = pool_boxes(features, index.describer.head, boxes)[0].float().cpu().numpy()
    neighbours = index.search(index.postprocess_queries(descriptors[:, None, :]), 1)
    cells = (int(features.shape[2]), int(features.shape[3]))
    pixels = np.array([to_pixels(box, cells, full) for box in boxes], dtype=np.int64)
    return neighbours.labels[:, 0], neighbours.scores[:, 0], neighbours.rows[:, 0], pixels


def select_objects(
    codes: np.ndarray, scores: np.ndarray, boxes: np.ndarray, threshold: float
) -> list[int]:
    """Positions of the boxes kept, best first: similarity ``>= threshold``, an instance
    not yet kept, not mostly overlapping a kept box (see :data:`OVERLAP`)."""
    kept: list[int] = []
    seen: set[int] = set()
    for position in np.argsort(-scores, kind="stable"):
        if scores[position] < threshold:
            break
        code = int(codes[position])
        if code < 0 or code in seen:
            continue
        if any(_overlap(boxes[position], boxes[k]) > OVERLAP for k in kept):
            continue
        kept.append(int(position))
        seen.add(code)
    return kept


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over the smaller box's area (boxes: left, top, right, bottom)."""
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    if height <= 0 or width <= 0:
        return 0.0
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return float(height * width / max(smaller, 1))


def to_pixels(box: Box, cells: tuple[int, int], full: tuple[int, int]) -> tuple[int, ...]:
    """A ``(top, left, bottom, right)`` cell box as ``(left, top, right, bottom)`` pixels of
    the ``full`` (height, width) photo."""
    scale_y, scale_x = full[0] / cells[0], full[1] / cells[1]
    top, left, bottom, right = box
    return (
        round(left * scale_x),
        round(top * scale_y),
        min(full[1], round(right * scale_x)),
        min(full[0], round(bottom * scale_y)),
    )


class ObjectFinder:
    """Finds every collection object in photos against ``index``.

    A box's score is its similarity to its nearest reference minus that reference's
    *hubness* (see :func:`hubness`): plain, grey or busy paintings that resemble everything, and so
    every patch of wall, must match clearly better than they match other paintings. The
    score, clipped to [0, 1], is the object's confidence.

    Args:
        index: an open index (its describer's backbone and head make the regions).
        threshold: the score a box needs to be an object; default: the index's
            ``objects_threshold`` setting (see :func:`calibrate_objects`).
    """

    def __init__(self, index: InstanceIndex, *, threshold: float | None = None):
        if not isinstance(index, InstanceIndex):
            raise TypeError(f"index: expected an InstanceIndex, got {type(index).__name__}")
        if len(index) == 0:
            raise ValueError(f"index: {str(index.path)!r} holds no reference images")
        if threshold is None:
            threshold = index.get_setting(THRESHOLD_SETTING)
        if threshold is None:
            raise ValueError(
                f"threshold: the index {str(index.path)!r} has no fitted objects threshold; "
                "run 'pyinstance calibrate INDEX --objects' or give one"
            )
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
            raise TypeError(f"threshold: expected a number in [0, 1], got {threshold!r}")
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold: expected a number in [0, 1], got {threshold!r}")
        self.index = index
        self.threshold = float(threshold)
        self._image_ids = dict(zip(index.rows().tolist(), index.image_ids(), strict=True))
        self._hub_rows, self._hub_values = hubness(index)

    def scores(self, image: Any, name: str = "image") -> tuple[np.ndarray, ...]:
        """Every candidate box of one photo: instance codes, scores, reference rows, and
        the boxes as ``R × 4`` pixels (left, top, right, bottom)."""
        features, full = self.index.describer.query_features(image, name)
        return self.scores_of(features, full)

    def scores_of(self, features: torch.Tensor, full: tuple[int, int]) -> tuple[np.ndarray, ...]:
        """:meth:`scores` from a photo's feature map and full (height, width)."""
        codes, similarities, rows, pixels = region_matches(self.index, features, full)
        scores = similarities - self._hub_values[np.searchsorted(self._hub_rows, rows)]
        return codes, scores, rows, pixels

    def find(self, image: Any, name: str = "image") -> list[DetectedObject]:
        """The objects in one photo (path, PIL image, array or decoded image), best first;
        empty when nothing is recognised."""
        features, full = self.index.describer.query_features(image, name)
        return self.find_in(features, full)

    def find_in(self, features: torch.Tensor, full: tuple[int, int]) -> list[DetectedObject]:
        """:meth:`find` from a photo's feature map and full (height, width)."""
        codes, scores, rows, pixels = self.scores_of(features, full)
        instances = self.index.instances
        return [
            DetectedObject(
                instance=instances[int(codes[k])],
                confidence=float(np.clip(scores[k], 0.0, 1.0)),
                box=tuple(int(v) for v in pixels[k]),  # type: ignore[arg-type]
                image_id=self._image_ids.get(int(rows[k])),
            )
            for k in select_objects(codes, scores, pixels, self.threshold)
        ]


def hubness(index: InstanceIndex) -> tuple[np.ndarray, np.ndarray]:
    """Row ids (sorted) of the live references and each one's hubness: the mean similarity
    to its :data:`HUB_NEIGHBOURS` nearest references of other instances (0 when there is
    no other instance)."""
    labels, rows = index.labels(), index.rows()
    most = int(np.bincount(labels).max())
    k = min(len(labels), HUB_NEIGHBOURS + most)
    neighbours = index.search(index.descriptors()[:, None, :], k)
    other = (neighbours.labels != labels[:, None]) & (neighbours.labels >= 0)
    ranked = np.sort(np.where(other, neighbours.scores, -np.inf), axis=1)[:, ::-1]
    ranked = ranked[:, :HUB_NEIGHBOURS]
    finite = np.isfinite(ranked)
    values = np.where(finite, ranked, 0.0).sum(axis=1) / np.maximum(finite.sum(axis=1), 1)
    order = np.argsort(rows)
    return rows[order], values[order].astype(np.float32)


@dataclass(frozen=True)
class ObjectsFit:
    """The fitted acceptance threshold of :class:`ObjectFinder` and what it was fitted on."""

    threshold: float
    target_far: float
    far: float
    photos: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def calibrate_objects(
    index: InstanceIndex,
    *,
    target_far: float = 0.05,
    distractors: Sequence[str | os.PathLike[str]] = (),
    max_references: int | None = None,
    progress: bool = False,
) -> ObjectsFit:
    """Fit and store (setting ``objects_threshold``) the score an object needs.

    Every reference photo (``max_references``: an even sample of them) is searched as a
    visitor photo: its best box matching *another* instance is an object that is not
    there; so is any box of a ``distractors`` photo (things not in the collection). The
    threshold is the smallest that accepts at most ``target_far`` of those photos' best
    false boxes.
    """
    if not isinstance(index, InstanceIndex):
        raise TypeError(f"index: expected an InstanceIndex, got {type(index).__name__}")
    if isinstance(target_far, bool) or not isinstance(target_far, (int, float)):
        raise TypeError(f"target_far: expected a number in [0, 1), got {target_far!r}")
    if not 0.0 <= target_far < 1.0:
        raise ValueError(f"target_far: expected a number in [0, 1), got {target_far!r}")
    if max_references is not None and (
        isinstance(max_references, bool)
        or not isinstance(max_references, int)
        or max_references < 1
    ):
        raise ValueError(f"max_references: expected an int >= 1 or None, got {max_references!r}")
    finder = ObjectFinder(index, threshold=0.0)
    code_of = {name: code for code, name in enumerate(index.instances)}
    photos = [
        (image["source"], code_of[image["instance"]])
        for image in index.images()
        if image["source"] and os.path.isfile(image["source"])
    ]
    if max_references is not None and len(photos) > max_references:
        photos = [photos[i] for i in np.linspace(0, len(photos) - 1, max_references).astype(int)]
    photos += [(str(path), -1) for path in distractors]
    if not photos:
        raise ValueError("calibrate_objects: no reference file is readable and no distractor given")
    side = index.recipe.query_side
    false_best = []
    for path, own in tqdm(photos, desc="calibrate objects", unit="img", disable=not progress):
        image = decode_image(path, lambda height, width: scaled_size(height, width, side))
        codes, scores, _, _ = finder.scores(image, str(path))
        others = scores[codes != own]
        false_best.append(float(others.max()) if others.size else 0.0)
    values = np.clip(np.array(false_best, dtype=np.float32), 0.0, 1.0)
    threshold = threshold_for_far(values, float(target_far))
    fit = ObjectsFit(
        threshold=threshold,
        target_far=float(target_far),
        far=float((values >= threshold).mean()),
        photos=len(photos),
    )
    index.set_setting(THRESHOLD_SETTING, threshold)
    index.set_setting(THRESHOLD_SETTING + "_fit", fit.to_dict())
    return fit
