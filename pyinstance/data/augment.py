"""Random views of one image for training: flip, independent axis scales, rotation by any
angle, colour jitter and a multi-scale output size with a capped aspect ratio.

The geometry is resampled at most twice: an axis that shrinks is resized (anti-aliased)
straight to its output scale, then one bilinear affine transform enlarges, rotates the
image about its centre and writes an output whose smaller side is exactly the drawn size;
when the rotated image is longer than ``max_aspect`` times that side, a window at a random
offset along the long axis is kept. Angles are counter-clockwise on screen, as in
``PIL.Image.rotate``. The colour jitter is one colour-matrix pass (:func:`jitter_colour`).

The corners that a rotation uncovers are filled with the image's mean colour: black (or
any fixed colour) would give every rotated view a hard-edged shape the network can learn
instead of the painting, and mirrored borders would invent copies of the painting's own
details; a flat mean colour adds neither an edge of extreme contrast nor content, and
pooled descriptors (GeM, MAC) are pulled only towards the image's own average.

Everything random is drawn from the ``numpy.random.Generator`` passed in, in a fixed order
(:meth:`Augmentation.draw`), so a seed gives the same view on every run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from PIL import Image, ImageStat

from pyinstance._validate import check_float, check_int

#: ITU-R 601 luma weights, as Pillow's ``convert("L")`` and torchvision use.
_LUMA = np.array([0.299, 0.587, 0.114])


def check_rgb_image(image: Any, name: str = "image") -> Image.Image:
    """``image`` if it is a non-empty PIL image in mode RGB; otherwise a clear error.

    Other modes are refused rather than converted: an alpha channel or a palette has no
    single right RGB meaning here, and the decoders (``pyinstance.data.images.load_image``)
    already return RGB.
    """
    if not isinstance(image, Image.Image):
        raise TypeError(f"{name}: expected a PIL image in mode RGB, got {type(image).__name__}")
    if image.mode != "RGB":
        raise ValueError(
            f"{name}: expected a PIL image in mode RGB, got mode {image.mode!r} "
            "(convert it with image.convert('RGB') or decode with pyinstance.data.images.load_image)"
        )
    if image.width == 0 or image.height == 0:
        raise ValueError(f"{name}: empty image of size {image.width}×{image.height}")
    return image


def check_rng(rng: Any, name: str = "rng") -> np.random.Generator:
    """``rng`` if it is a ``numpy.random.Generator`` (e.g. ``numpy.random.default_rng(seed)``)."""
    if not isinstance(rng, np.random.Generator):
        raise TypeError(
            f"{name}: expected a numpy.random.Generator (numpy.random.default_rng(seed)), "
            f"got {type(rng).__name__}"
        )
    return rng


def check_range(
    value: Any, name: str, *, minimum: float, maximum: float | None = None, positive: bool = False
) -> tuple[float, float]:
    """A pair ``(low, high)`` of numbers with ``minimum <= low <= high <= maximum``.

    ``positive`` makes the lower bound strict (``low > minimum``).
    """
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 2:
        raise TypeError(f"{name}: expected a pair (low, high) of numbers, got {value!r}")
    low = check_float(
        value[0], f"{name}[0]", minimum=minimum, maximum=maximum, exclusive_minimum=positive
    )
    high = check_float(
        value[1], f"{name}[1]", minimum=minimum, maximum=maximum, exclusive_minimum=positive
    )
    if low > high:
        raise ValueError(f"{name}: expected low <= high, got ({low}, {high})")
    return low, high


@dataclass(frozen=True)
class ViewParams:
    """The random choices of one view; :meth:`Augmentation.apply` turns them into pixels.

    ``crop`` in [0, 1] places the kept window along the long axis when the aspect ratio is
    capped (0: start, 1: end). Colour factors multiply (1 is no change); ``hue`` is a
    shift in turns of the hue circle (0 is no change).
    """

    flip: bool
    angle: float
    scale_x: float
    scale_y: float
    size: int
    crop: float
    brightness: float = 1.0
    contrast: float = 1.0
    saturation: float = 1.0
    hue: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.flip, (bool, np.bool_)):
            raise TypeError(f"flip: expected a bool, got {self.flip!r}")
        checked = {
            "flip": bool(self.flip),
            "angle": check_float(self.angle, "angle"),
            "scale_x": check_float(self.scale_x, "scale_x", minimum=0.0, exclusive_minimum=True),
            "scale_y": check_float(self.scale_y, "scale_y", minimum=0.0, exclusive_minimum=True),
            "size": check_int(self.size, "size", minimum=1),
            "crop": check_float(self.crop, "crop", minimum=0.0, maximum=1.0),
            "brightness": check_float(self.brightness, "brightness", minimum=0.0),
            "contrast": check_float(self.contrast, "contrast", minimum=0.0),
            "saturation": check_float(self.saturation, "saturation", minimum=0.0),
            "hue": check_float(self.hue, "hue", minimum=-0.5, maximum=0.5),
        }
        for name, value in checked.items():
            object.__setattr__(self, name, value)


@dataclass(frozen=True)
class Augmentation:
    """Draws random training views of an image (see the module docstring for the order).

    ``rotation``: max |angle| in degrees, the angle uniform in [-rotation, rotation];
    ``axis_scale``: range of the independent factor of each axis; ``flip``: probability of
    a horizontal flip; ``brightness``, ``contrast``, ``saturation``: the factor is uniform
    in [1 - x, 1 + x]; ``hue``: the shift is uniform in [-hue, hue] turns; ``sizes``: the
    smaller side of the output, one drawn uniformly per view; ``max_aspect``: the longer
    side is at most this times the smaller.
    """

    rotation: float = 180.0
    axis_scale: tuple[float, float] = (0.75, 1.25)
    flip: float = 0.5
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2
    hue: float = 0.02
    sizes: tuple[int, ...] = (224, 448)
    max_aspect: float = 2.0

    def __post_init__(self) -> None:
        checked = {
            "rotation": check_float(self.rotation, "rotation", minimum=0.0, maximum=180.0),
            "axis_scale": check_range(self.axis_scale, "axis_scale", minimum=0.0, positive=True),
            "flip": check_float(self.flip, "flip", minimum=0.0, maximum=1.0),
            "brightness": check_float(self.brightness, "brightness", minimum=0.0, maximum=1.0),
            "contrast": check_float(self.contrast, "contrast", minimum=0.0, maximum=1.0),
            "saturation": check_float(self.saturation, "saturation", minimum=0.0, maximum=1.0),
            "hue": check_float(self.hue, "hue", minimum=0.0, maximum=0.5),
            "sizes": _check_sizes(self.sizes),
            "max_aspect": check_float(self.max_aspect, "max_aspect", minimum=1.0),
        }
        for name, value in checked.items():
            object.__setattr__(self, name, value)

    def __call__(self, image: Image.Image, rng: np.random.Generator) -> Image.Image:
        """One random view of ``image`` (PIL RGB), drawn from ``rng``."""
        image = check_rgb_image(image)
        return self.apply(image, self.draw(check_rng(rng)))

    def draw(self, rng: np.random.Generator) -> ViewParams:
        """The random choices of one view, drawn from ``rng`` in a fixed order."""
        rng = check_rng(rng)
        flip = bool(rng.random() < self.flip)
        angle = float(rng.uniform(-self.rotation, self.rotation))
        scale_x, scale_y = (float(value) for value in rng.uniform(*self.axis_scale, size=2))
        size = int(self.sizes[int(rng.integers(len(self.sizes)))])
        crop = float(rng.random())
        brightness, contrast, saturation = (
            float(rng.uniform(1.0 - amount, 1.0 + amount))
            for amount in (self.brightness, self.contrast, self.saturation)
        )
        hue = float(rng.uniform(-self.hue, self.hue))
        return ViewParams(
            flip, angle, scale_x, scale_y, size, crop, brightness, contrast, saturation, hue
        )

    def apply(self, image: Image.Image, params: ViewParams) -> Image.Image:
        """``image`` transformed by ``params``: geometry first, then colour."""
        image = check_rgb_image(image)
        if not isinstance(params, ViewParams):
            raise TypeError(f"params: expected a ViewParams, got {type(params).__name__}")
        if params.flip:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        image = _rotate_scaled(image, params, self.max_aspect)
        return jitter_colour(
            image, params.brightness, params.contrast, params.saturation, params.hue
        )


def _check_sizes(sizes: Any) -> tuple[int, ...]:
    if isinstance(sizes, (str, bytes)) or not isinstance(sizes, Sequence):
        raise TypeError(f"sizes: expected a sequence of integers >= 1, got {sizes!r}")
    if not sizes:
        raise ValueError("sizes: expected at least one size, got an empty sequence")
    return tuple(check_int(size, f"sizes[{index}]", minimum=1) for index, size in enumerate(sizes))


def _cos_sin(degrees: float) -> tuple[float, float]:
    """Cosine and sine of an angle, exact (0, ±1) at quarter turns so that they resample
    pixel for pixel."""
    radians = math.radians(degrees)
    return round(math.cos(radians), 12), round(math.sin(radians), 12)


class _Layout(NamedTuple):
    """Where a view's pixels come from: output size, full rotated extent, resize factor."""

    width: int
    height: int
    full_width: float
    full_height: float
    factor: float


def _layout(width: int, height: int, params: ViewParams, max_aspect: float) -> _Layout:
    """The view of a ``width``×``height`` image: its smaller side is ``params.size``, its
    longer side at most ``max_aspect`` times that; ``factor`` scales the input so."""
    cos, sin = (abs(value) for value in _cos_sin(params.angle))
    scaled_w, scaled_h = width * params.scale_x, height * params.scale_y
    rotated_w = scaled_w * cos + scaled_h * sin
    rotated_h = scaled_w * sin + scaled_h * cos
    factor = params.size / min(rotated_w, rotated_h)
    full_w, full_h = rotated_w * factor, rotated_h * factor
    longest = min(max(params.size, round(max(full_w, full_h))), int(max_aspect * params.size))
    if rotated_w <= rotated_h:
        return _Layout(params.size, longest, full_w, full_h, factor)
    return _Layout(longest, params.size, full_w, full_h, factor)


def _rotate_scaled(image: Image.Image, params: ViewParams, max_aspect: float) -> Image.Image:
    """Scale each axis, rotate about the centre (mean-colour corners), size and crop.

    An axis that shrinks is first resized (anti-aliased) to its final scale; what is left
    (rotation, enlargement, the crop) is one bilinear affine transform at no reduction, so
    no step aliases and the picture is resampled at most twice.
    """
    layout = _layout(image.width, image.height, params, max_aspect)
    fill = tuple(round(value) for value in ImageStat.Stat(image).mean)
    scale_x, scale_y = params.scale_x * layout.factor, params.scale_y * layout.factor
    reduced = (
        max(1, round(image.width * min(scale_x, 1.0))),
        max(1, round(image.height * min(scale_y, 1.0))),
    )
    # What the affine transform still enlarges, per axis, after the reduction.
    rest_x, rest_y = scale_x * image.width / reduced[0], scale_y * image.height / reduced[1]
    if reduced != image.size:
        image = image.resize(reduced, Image.Resampling.BICUBIC)
    # Offset of the kept window inside the full rotated extent (only one axis is cropped).
    offset_x = params.crop * max(0.0, layout.full_width - layout.width)
    offset_y = params.crop * max(0.0, layout.full_height - layout.height)
    unchanged = (layout.width, layout.height) == image.size and rest_x == rest_y == 1.0
    if unchanged and params.angle == 0.0:
        return image
    cos, sin = _cos_sin(params.angle)
    shift_x, shift_y = offset_x - layout.full_width / 2, offset_y - layout.full_height / 2
    # Output (u, v) -> input: the inverse of a counter-clockwise rotation about the centres,
    # then of the enlargement.
    data = (
        cos / rest_x,
        -sin / rest_x,
        image.width / 2 + (cos * shift_x - sin * shift_y) / rest_x,
        sin / rest_y,
        cos / rest_y,
        image.height / 2 + (sin * shift_x + cos * shift_y) / rest_y,
    )
    return image.transform(
        (layout.width, layout.height),
        Image.Transform.AFFINE,
        data,
        Image.Resampling.BILINEAR,
        fillcolor=fill,
    )


def jitter_colour(
    image: Image.Image,
    brightness: float = 1.0,
    contrast: float = 1.0,
    saturation: float = 1.0,
    hue: float = 0.0,
) -> Image.Image:
    """``image`` with its colours changed, in this order:

    brightness (pixels × factor), contrast (blend with the mean grey level), saturation
    (blend with each pixel's grey level), hue (rotation by ``hue`` turns about the grey
    axis, keeping each pixel's Rec. 709 luma: the hue-rotate matrix of CSS and SVG filters;
    positive turns go from red towards yellow and green, as an HSV hue increase does).
    All four are linear, so they are composed into one colour matrix that Pillow applies
    in a single pass, clipping to 0..255 once at the end. Factors of 1 and a hue of 0 leave
    the image unchanged.
    """
    image = check_rgb_image(image)
    for name, value in (
        ("brightness", brightness),
        ("contrast", contrast),
        ("saturation", saturation),
    ):
        check_float(value, name, minimum=0.0)
    hue = check_float(hue, "hue", minimum=-0.5, maximum=0.5)
    if brightness == contrast == saturation == 1.0 and hue == 0.0:
        return image.copy()
    grey = np.outer(np.ones(3), _LUMA.astype(np.float64))  # each row: the grey level
    matrix = brightness * np.eye(3)
    mean_grey = brightness * float(_LUMA @ np.array(ImageStat.Stat(image).mean))
    matrix = contrast * matrix
    offset = np.full(3, (1.0 - contrast) * mean_grey)
    saturate = saturation * np.eye(3) + (1.0 - saturation) * grey
    matrix, offset = saturate @ matrix, saturate @ offset
    rotate = _hue_rotation(hue)
    matrix, offset = rotate @ matrix, rotate @ offset
    coefficients = np.c_[matrix, offset].ravel()  # Pillow rounds to the nearest level
    return image.convert("RGB", tuple(float(value) for value in coefficients))


def _hue_rotation(turns: float) -> np.ndarray:
    """The 3×3 matrix rotating colours by ``turns`` about the grey axis (luma kept)."""
    cos, sin = math.cos(2.0 * math.pi * turns), math.sin(2.0 * math.pi * turns)
    return np.array(
        [
            [
                0.213 + 0.787 * cos - 0.213 * sin,
                0.715 - 0.715 * cos - 0.715 * sin,
                0.072 - 0.072 * cos + 0.928 * sin,
            ],
            [
                0.213 - 0.213 * cos + 0.143 * sin,
                0.715 + 0.285 * cos + 0.140 * sin,
                0.072 - 0.072 * cos - 0.283 * sin,
            ],
            [
                0.213 - 0.213 * cos - 0.787 * sin,
                0.715 - 0.715 * cos + 0.715 * sin,
                0.072 + 0.928 * cos + 0.072 * sin,
            ],
        ]
    )
