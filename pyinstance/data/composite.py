"""Synthetic gallery shots: a reference photo composited into a wall scene, region known.

A collection often holds one photo per painting, a tight crop; visitors photograph the
painting on its wall, in its frame, at an angle, beside other works. :class:`SceneComposer`
makes such a photo from the reference alone: a procedural wall (flat colour, gradient,
plaster texture, sometimes a floor band), the reference warped by a random perspective
(``PIL.Image.transform`` with ``PERSPECTIVE``) at a random scale, optionally in a frame
(wood, black, gold, white or silver, sometimes with a white mat) with a soft drop shadow,
other references hung beside it (never overlapping it), sometimes a wall label, then
uneven lighting, a colour cast, a little sensor noise and sometimes a slight blur over the whole scene.
The reference's corners and bounding box in the scene are returned with the image.

Everything random comes from the ``numpy.random.Generator`` passed in, so a seed gives the
same scene on every run.
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from pyinstance._validate import check_float, check_int
from pyinstance.data.augment import check_range, check_rgb_image, check_rng

Box = tuple[int, int, int, int]

#: Supersampling factor of the polygon masks (anti-aliased painting edges).
_SUPERSAMPLE = 4

#: Frame colours (RGB): dark wood, light wood, black, gold, white, silver.
_FRAME_COLOURS = np.array(
    [(92, 60, 36), (186, 146, 98), (28, 27, 26), (176, 142, 72), (232, 230, 224), (168, 168, 172)],
    dtype=np.float64,
)


@dataclass(frozen=True, eq=False)
class Scene:
    """A composited scene: ``box`` (x0, y0, x1, y1, x1 and y1 exclusive) bounds the
    reference's pixels, ``corners`` (4×2, x then y) are where its top-left, top-right,
    bottom-right and bottom-left corners landed, ``other_boxes`` bound the other references
    (clipped to the scene)."""

    image: Image.Image
    box: Box
    corners: np.ndarray
    other_boxes: tuple[Box, ...] = ()


@dataclass(frozen=True)
class SceneComposer:
    """Composes gallery-like scenes around a reference (see the module docstring).

    ``size``: longest side of the scene in pixels; ``scale``: range of the reference's
    longest side (of its bounding box, after perspective) as a fraction of the scene's;
    ``perspective``: max displacement of each corner along each axis, as a fraction of the
    reference's side along that axis; ``others``: at most this many other references placed
    beside it; ``frame``: probability of a frame; ``aspect``: the scene's longer side is up
    to this times its shorter side (its orientation follows the reference's).
    """

    size: int = 448
    scale: tuple[float, float] = (0.3, 0.8)
    perspective: float = 0.15
    others: int = 2
    frame: float = 0.5
    aspect: float = 4 / 3

    def __post_init__(self) -> None:
        checked = {
            "size": check_int(self.size, "size", minimum=32),
            "scale": check_range(self.scale, "scale", minimum=0.0, maximum=1.0, positive=True),
            "perspective": check_float(self.perspective, "perspective", minimum=0.0, maximum=0.4),
            "others": check_int(self.others, "others", minimum=0),
            "frame": check_float(self.frame, "frame", minimum=0.0, maximum=1.0),
            "aspect": check_float(self.aspect, "aspect", minimum=1.0, maximum=4.0),
        }
        for name, value in checked.items():
            object.__setattr__(self, name, value)

    def __call__(
        self,
        reference: Image.Image,
        rng: np.random.Generator,
        others: Sequence[Image.Image] = (),
    ) -> Scene:
        """A scene around ``reference`` (PIL RGB), with up to ``self.others`` of ``others``
        hung beside it, drawn from ``rng``."""
        reference = check_rgb_image(reference, "reference")
        rng = check_rng(rng)
        pool = _check_others(others)

        quad = self._quad(reference.size, rng)
        width, height = self._scene_size(quad, rng)
        quad = _place(quad, width, height, rng)
        main = _Hanging(reference, quad, _random_frame(rng, self.frame))
        footprints = [main.footprint()]
        hung = []
        count = int(rng.integers(0, min(self.others, len(pool)) + 1))
        for index in rng.choice(len(pool), size=count, replace=False):
            other = self._beside(pool[int(index)], main, footprints, width, height, rng)
            if other is not None:
                hung.append(other)
                footprints.append(other.footprint())
        label = _label_box(main, footprints, width, height, rng)

        wall = (
            _wall(width, height, rng)
            * _shadow_light((*hung, main), width, height, self.size, rng)[..., None]
        )
        canvas = Image.fromarray(_to_uint8(wall), "RGB")
        for item in (*hung, main):
            item.draw(canvas)
        if label is not None:
            _draw_label(canvas, label, rng)
        image = _camera(canvas, quad, rng)
        return Scene(
            image=image,
            box=_bounds(quad, width, height),
            corners=quad,
            other_boxes=tuple(_bounds(other.quad, width, height) for other in hung),
        )

    def _quad(self, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
        """The reference's corners after a random perspective, scaled so that the longest
        side of their bounding box is the drawn fraction of the scene, at the origin."""
        width, height = size
        quad = _perspective_quad(width, height, self.perspective, rng)
        extent = quad.max(axis=0) - quad.min(axis=0)
        fraction = float(rng.uniform(*self.scale))
        return (quad - quad.min(axis=0)) * (fraction * self.size / extent.max())

    def _scene_size(self, quad: np.ndarray, rng: np.random.Generator) -> tuple[int, int]:
        """(width, height): the longest side ``size``, oriented like the quad, the shorter
        one from a random aspect but never shorter than the quad needs."""
        extent = quad.max(axis=0)
        aspect = float(rng.uniform(1.0, self.aspect))
        shortest = min(self.size, max(round(self.size / aspect), math.ceil(extent.min()) + 2))
        return (self.size, shortest) if extent[0] >= extent[1] else (shortest, self.size)

    def _beside(
        self,
        image: Image.Image,
        main: _Hanging,
        footprints: list[np.ndarray],
        width: int,
        height: int,
        rng: np.random.Generator,
    ) -> _Hanging | None:
        """Another reference hung left, right, above or below the main one's footprint, at
        a similar scale; ``None`` when it would overlap a footprint or not be seen."""
        quad = _perspective_quad(*image.size, self.perspective / 2, rng)
        main_extent = np.ptp(main.quad, axis=0)
        quad = quad - quad.min(axis=0)
        quad *= main_extent.max() * float(rng.uniform(0.6, 1.2)) / np.ptp(quad, axis=0).max()
        frame = _random_frame(rng, self.frame)
        other = _Hanging(image, quad, frame)
        mine = other.footprint()
        x0, y0, x1, y1 = main.footprint()
        gap = float(rng.uniform(0.04, 0.25)) * main_extent.max()
        side = int(rng.choice(4, p=[0.4, 0.4, 0.1, 0.1]))
        jitter = float(rng.uniform(-0.3, 0.3))
        centre_x = (x0 + x1) / 2 + jitter * (x1 - x0) - (mine[0] + mine[2]) / 2
        centre_y = (y0 + y1) / 2 + jitter * (y1 - y0) - (mine[1] + mine[3]) / 2
        shift = {
            0: (x0 - gap - mine[2], centre_y),  # left
            1: (x1 + gap - mine[0], centre_y),  # right
            2: (centre_x, y0 - gap - mine[3]),  # above
            3: (centre_x, y1 + gap - mine[1]),  # below
        }[side]
        other = _Hanging(image, quad + np.array(shift), frame)
        box = other.footprint()
        seen = _bounds(other.quad, width, height)  # of the picture, not just its frame
        visible = seen[2] - seen[0] >= 4 and seen[3] - seen[1] >= 4
        if not visible or any(_intersect(box, taken) for taken in footprints):
            return None
        return other


def _check_others(others: Any) -> list[Image.Image]:
    if isinstance(others, (str, bytes, Image.Image)) or not isinstance(others, Sequence):
        raise TypeError(
            f"others: expected a sequence of PIL RGB images, got {type(others).__name__}"
        )
    return [check_rgb_image(image, f"others[{index}]") for index, image in enumerate(others)]


@dataclass(frozen=True)
class _Frame:
    """A frame's look: border and mat widths as fractions of the picture's longest side."""

    border: float
    mat: float
    colour: tuple[int, int, int]


@dataclass(frozen=True, eq=False)
class _Hanging:
    """A picture on the wall: its image, the scene position of its corners, its frame."""

    image: Image.Image
    quad: np.ndarray
    frame: _Frame | None

    def outline(self, margin: float) -> np.ndarray:
        """The picture's rectangle grown by ``margin`` (fraction of its longest side), in
        the scene through the picture's perspective."""
        width, height = self.image.size
        grow = margin * max(width, height)
        rectangle = np.array(
            [
                [-grow, -grow],
                [width + grow, -grow],
                [width + grow, height + grow],
                [-grow, height + grow],
            ]
        )
        return _apply(_homography(_corners(width, height), self.quad), rectangle)

    def outer(self) -> np.ndarray:
        return self.outline(self.frame.border + self.frame.mat) if self.frame else self.quad

    def footprint(self) -> np.ndarray:
        """(x0, y0, x1, y1) bounding the picture and its frame, one pixel larger."""
        outer = self.outer()
        return np.concatenate([outer.min(axis=0) - 1.0, outer.max(axis=0) + 1.0])

    def draw(self, canvas: Image.Image) -> None:
        if self.frame is not None:
            _paint_frame(canvas, self)
        _paste_warped(canvas, self.image, self.quad)


def _random_frame(rng: np.random.Generator, probability: float) -> _Frame | None:
    """A random frame with the given probability (random values are drawn either way)."""
    framed = rng.random() < probability
    border = float(rng.uniform(0.015, 0.07))
    mat = float(rng.uniform(0.03, 0.12)) if rng.random() < 0.3 else 0.0
    # A shade of one of the frame colours, its hue barely moved (a white frame stays white).
    shade = float(rng.uniform(-20.0, 20.0)) + rng.uniform(-6.0, 6.0, 3)
    colour = _FRAME_COLOURS[int(rng.integers(len(_FRAME_COLOURS)))] + shade
    rgb = tuple(int(value) for value in np.clip(np.rint(colour), 0, 255))
    return _Frame(border, mat, rgb) if framed else None


def _paint_frame(canvas: Image.Image, item: _Hanging) -> None:
    """The frame as nested polygons (dark outer rim, body, light inner lip) and the mat."""
    frame = item.frame
    draw = ImageDraw.Draw(canvas)
    colour = np.array(frame.colour, dtype=np.float64)
    inner = frame.mat + frame.border * 0.15
    for margin, shade in (
        (frame.mat + frame.border, 0.7),
        (frame.mat + frame.border * 0.85, 1.0),
        (inner, 1.25),
    ):
        fill = tuple(int(value) for value in np.clip(colour * shade, 0, 255))
        draw.polygon([tuple(point) for point in item.outline(margin)], fill=fill)
    if frame.mat:
        draw.polygon([tuple(point) for point in item.outline(frame.mat)], fill=(236, 234, 228))


def _perspective_quad(
    width: int, height: int, amount: float, rng: np.random.Generator
) -> np.ndarray:
    """The corners (TL, TR, BR, BL) of a ``width``×``height`` rectangle seen at an angle:
    a turn about the vertical axis (one side shorter and nearer the middle), a smaller tilt
    about the horizontal axis, and jitter; no corner moves more than ``amount`` times the
    side along either axis."""
    size = np.array([width, height], dtype=np.float64)
    quad = _corners(width, height)
    turn, tilt = float(rng.uniform(-amount, amount)), float(rng.uniform(-amount, amount)) / 2
    moves = rng.uniform(-amount / 4, amount / 4, size=(4, 2))
    far_x = [1, 2] if turn > 0 else [0, 3]  # the side that turns away shrinks
    for corner in far_x:
        inward_y = 1.0 if corner in (0, 1) else -1.0
        inward_x = 1.0 if corner in (0, 3) else -1.0
        moves[corner, 1] += inward_y * abs(turn) / 2
        moves[corner, 0] += inward_x * abs(turn) / 4
    far_y = [2, 3] if tilt > 0 else [0, 1]
    for corner in far_y:
        moves[corner, 0] += (1.0 if corner in (0, 3) else -1.0) * abs(tilt) / 2
    moves = np.clip(moves, -amount, amount)
    return quad + moves * size


def _corners(width: float, height: float) -> np.ndarray:
    return np.array([[0.0, 0.0], [width, 0.0], [width, height], [0.0, height]])


def _homography(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The 3×3 projective map taking the 4 ``source`` points to the 4 ``target`` points."""
    rows, values = [], []
    for (x, y), (u, v) in zip(source, target, strict=True):
        rows.append([x, y, 1.0, 0.0, 0.0, 0.0, -u * x, -u * y])
        rows.append([0.0, 0.0, 0.0, x, y, 1.0, -v * x, -v * y])
        values.extend([u, v])
    solution = np.linalg.solve(np.array(rows), np.array(values))
    return np.append(solution, 1.0).reshape(3, 3)


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    mapped = np.c_[points, np.ones(len(points))] @ matrix.T
    return mapped[:, :2] / mapped[:, 2:]


def _place(quad: np.ndarray, width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """``quad`` moved to a random position inside the scene, biased towards the middle
    (the mean of two uniform draws), as photographers centre what they photograph."""
    extent = quad.max(axis=0)
    room = np.maximum(np.array([width, height]) - extent, 0.0)
    return quad + room * rng.uniform(0.0, 1.0, size=(2, 2)).mean(axis=0)


def _bounds(quad: np.ndarray, width: int, height: int) -> Box:
    low = np.floor(quad.min(axis=0)).astype(int)
    high = np.ceil(quad.max(axis=0)).astype(int)
    return (
        int(np.clip(low[0], 0, width)),
        int(np.clip(low[1], 0, height)),
        int(np.clip(high[0], 0, width)),
        int(np.clip(high[1], 0, height)),
    )


def _intersect(first: np.ndarray, second: np.ndarray) -> bool:
    return bool(
        first[0] < second[2]
        and second[0] < first[2]
        and first[1] < second[3]
        and second[1] < first[3]
    )


def _paste_warped(canvas: Image.Image, image: Image.Image, quad: np.ndarray) -> None:
    """Paste ``image`` onto ``canvas`` with its corners at ``quad`` (bicubic perspective warp,
    anti-aliased edges), drawing only inside the canvas."""
    x0, y0 = (max(0, int(value)) for value in np.floor(quad.min(axis=0)))
    x1 = min(canvas.width, int(np.ceil(quad[:, 0].max())))
    y1 = min(canvas.height, int(np.ceil(quad[:, 1].max())))
    if x1 <= x0 or y1 <= y0:
        return
    # Resample from a copy about the size it will have, so the warp does not alias.
    longest = max(np.ptp(quad, axis=0))
    factor = min(1.0, 1.25 * longest / max(image.size))
    source = image.resize(
        (max(1, round(image.width * factor)), max(1, round(image.height * factor))),
        Image.Resampling.BILINEAR,
        reducing_gap=2.0,
    )
    padded = Image.fromarray(np.pad(np.asarray(source), ((2, 2), (2, 2), (0, 0)), mode="edge"))
    local = quad - np.array([x0, y0])
    to_source = _homography(local, _corners(source.width, source.height) + 2.0)
    coefficients = tuple((to_source / to_source[2, 2]).ravel()[:8])
    patch = padded.transform(
        (x1 - x0, y1 - y0), Image.Transform.PERSPECTIVE, coefficients, Image.Resampling.BICUBIC
    )
    canvas.paste(patch, (x0, y0), _polygon_mask(local, x1 - x0, y1 - y0))


def _polygon_mask(polygon: np.ndarray, width: int, height: int) -> Image.Image:
    """An anti-aliased coverage mask (mode L) of ``polygon`` in a ``width``×``height`` patch."""
    mask = Image.new("L", (width * _SUPERSAMPLE, height * _SUPERSAMPLE), 0)
    ImageDraw.Draw(mask).polygon([tuple(point) for point in polygon * _SUPERSAMPLE], fill=255)
    return mask.reduce(_SUPERSAMPLE)


def _wall(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """A wall-like background (H×W×3 float32, 0..255): a light neutral or muted colour, a linear
    gradient, low-frequency mottling, fine grain and sometimes a floor band."""
    if rng.random() < 0.8:  # off-white or light grey, slightly warm or cool
        hue = rng.uniform(0.06, 0.16) if rng.random() < 0.6 else rng.uniform(0.5, 0.66)
        hsv = (hue, rng.uniform(0.0, 0.07), rng.uniform(0.7, 0.96))
    else:
        hsv = (rng.random(), rng.uniform(0.08, 0.35), rng.uniform(0.25, 0.85))
    base = np.array(colorsys.hsv_to_rgb(*hsv), dtype=np.float32) * 255.0
    xs, ys = _coarse_grid(width, height)
    direction = rng.uniform(0.0, 2.0 * math.pi)
    along = xs * math.cos(direction) + ys * math.sin(direction)
    gradient = float(rng.uniform(0.0, 0.2)) * (along - along.mean())
    cells = rng.standard_normal((int(rng.integers(3, 9)), int(rng.integers(3, 9))))
    mottle = float(rng.uniform(0.0, 0.025)) * _upsample(cells, *xs.shape[::-1], smooth=True)
    light = _upsample(1.0 + gradient + mottle, width, height)
    light = light + float(rng.uniform(0.0, 0.06)) * _grain(width, height, rng)
    wall = base * light[..., None]
    if rng.random() < 0.15:
        top = int(height * (1.0 - rng.uniform(0.05, 0.2)))
        floor = _FRAME_COLOURS[int(rng.integers(len(_FRAME_COLOURS)))] * rng.uniform(0.5, 1.0)
        wall[top:] = floor.astype(np.float32) * light[top:, :, None]
        wall[max(0, top - max(2, height // 80)) : top] *= 0.8  # skirting board
    return wall


#: Smooth fields (gradients, mottling, lighting) are computed on a grid this much coarser.
_COARSE = 8


def _coarse_grid(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """x and y of a coarse grid over the scene, in units of its longest side (2-D arrays)."""
    columns, rows = max(2, width // _COARSE), max(2, height // _COARSE)
    longest = max(width, height)
    xs = (np.arange(columns, dtype=np.float32) + 0.5) * (width / columns) / longest
    ys = (np.arange(rows, dtype=np.float32) + 0.5) * (height / rows) / longest
    return np.broadcast_to(xs, (rows, columns)), np.broadcast_to(ys[:, None], (rows, columns))


def _upsample(field: np.ndarray, width: int, height: int, *, smooth: bool = False) -> np.ndarray:
    """A 2-D field resized to ``height``×``width`` (float32): bilinearly, or bicubically when
    ``smooth`` (a few cells become blobs instead of ridges)."""
    image = Image.fromarray(np.ascontiguousarray(field, dtype=np.float32), "F")
    method = Image.Resampling.BICUBIC if smooth else Image.Resampling.BILINEAR
    return np.asarray(image.resize((width, height), method), dtype=np.float32)


def _grain(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """Fine zero-mean noise in [-0.5, 0.5] (H×W float32); uniform, as it is much cheaper to
    draw than Gaussian noise and looks the same at these amplitudes."""
    return rng.random((height, width), dtype=np.float32) - np.float32(0.5)


def _to_uint8(pixels: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


def _shadow_light(
    items: Sequence[_Hanging], width: int, height: int, size: int, rng: np.random.Generator
) -> np.ndarray:
    """The light (H×W float32, 1 where nothing falls) left on the wall by the soft drop
    shadows of ``items`` cast by a light from above; the blur runs on a mask reduced 4
    times, as a shadow has no detail to lose."""
    offset = np.array([rng.uniform(-0.015, 0.015), rng.uniform(0.005, 0.03)]) * size
    radius = float(rng.uniform(2.0, 8.0)) * size / 448
    opacity = float(rng.uniform(0.15, 0.45))
    shadows = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(shadows)
    for item in items:
        draw.polygon([tuple(point) for point in item.outer() + offset], fill=255)
    small = shadows.reduce(4).filter(ImageFilter.GaussianBlur(radius / 4))
    return 1.0 - opacity / 255.0 * _upsample(np.asarray(small, dtype=np.float32), width, height)


def _label_box(
    main: _Hanging, footprints: list[np.ndarray], width: int, height: int, rng: np.random.Generator
) -> np.ndarray | None:
    """Sometimes a small wall label beside the main picture, where nothing else hangs."""
    wanted = rng.random() < 0.5
    x0, y0, x1, y1 = main.footprint()
    label_w = float(rng.uniform(0.05, 0.1)) * max(x1 - x0, y1 - y0)
    label_h = label_w * float(rng.uniform(0.5, 0.9))
    gap = float(rng.uniform(0.02, 0.08)) * (x1 - x0)
    left = x1 + gap if rng.random() < 0.7 else x0 - gap - label_w
    top = y0 + float(rng.uniform(0.4, 0.8)) * (y1 - y0)
    box = np.array([left, top, left + label_w, top + label_h])
    inside = box[0] >= 0 and box[1] >= 0 and box[2] <= width and box[3] <= height
    if not wanted or not inside or any(_intersect(box, taken) for taken in footprints):
        return None
    return box


def _draw_label(canvas: Image.Image, box: np.ndarray, rng: np.random.Generator) -> None:
    """A light card with a few dark lines of 'text'."""
    draw = ImageDraw.Draw(canvas)
    shade = int(rng.integers(225, 250))
    draw.rectangle(tuple(box), fill=(shade, shade, shade - 4))
    x0, y0, x1, y1 = box
    lines = int(rng.integers(2, 5))
    for line in range(lines):
        y = y0 + (line + 1) * (y1 - y0) / (lines + 1)
        end = x0 + (x1 - x0) * float(rng.uniform(0.5, 0.9))
        draw.line([(x0 + 0.1 * (x1 - x0), y), (end, y)], fill=(70, 70, 70), width=1)


def _camera(canvas: Image.Image, quad: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """Uneven lighting (a spot above the main picture falling off with distance), a colour
    cast, sensor noise and, sometimes, a slight blur over the whole scene."""
    width, height = canvas.size
    longest = max(width, height)
    xs, ys = _coarse_grid(width, height)
    spot_x = float(quad[:, 0].mean() + rng.uniform(-0.3, 0.3) * np.ptp(quad[:, 0])) / longest
    spot_y = float(quad[:, 1].min() - rng.uniform(0.0, 0.5) * np.ptp(quad[:, 1])) / longest
    squared = np.minimum((xs - spot_x) ** 2 + (ys - spot_y) ** 2, 1.5)
    light = _upsample(1.05 - float(rng.uniform(0.0, 0.25)) * squared, width, height)
    noise = float(rng.uniform(0.0, 10.0)) * _grain(width, height, rng)
    cast = 1.0 + rng.uniform(-0.05, 0.05, size=3).astype(np.float32)  # white balance
    pixels = np.asarray(canvas, dtype=np.float32) * (light[..., None] * cast) + noise[..., None]
    image = Image.fromarray(_to_uint8(pixels), "RGB")
    radius = float(rng.uniform(0.3, 0.8))
    if rng.random() < 0.3:
        image = image.filter(ImageFilter.BoxBlur(radius))
    return image
