"""Query photos for the demo: the collection's objects seen differently, and unknown objects.

Each reference photo is changed the way a visitor's photo differs from the collection's:
cropped, rotated, smaller in a larger scene, under other light and colour, and seen at an
angle (a perspective warp). Pillow only, deterministic for a given ``seed``.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from PIL import Image, ImageEnhance, ImageFilter

from pyinstance.data.images import load_image
from pyinstance.demo import COLLECTION_DIR, UNKNOWN_DIR

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
_BACKGROUND = (128, 122, 112)  # a grey-beige "wall"


class DemoQuery(NamedTuple):
    """A generated query photo and the instance it shows (None: not in the collection)."""

    path: Path
    truth: str | None


def crop(image: Image.Image, rng: random.Random) -> Image.Image:
    """A tight crop keeping 55-70 % of each side, off-centre."""
    width, height = image.size
    keep = rng.uniform(0.55, 0.7)
    w, h = round(width * keep), round(height * keep)
    left = rng.randint(0, width - w)
    top = rng.randint(0, height - h)
    return image.crop((left, top, left + w, top + h))


def rotate(image: Image.Image, rng: random.Random) -> Image.Image:
    """Rotated by 12-25 degrees either way, corners filled with the wall colour."""
    angle = rng.uniform(12, 25) * rng.choice((-1, 1))
    return image.rotate(
        angle, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=_BACKGROUND
    )


def smaller(image: Image.Image, rng: random.Random) -> Image.Image:
    """The object at 45-60 % of the photo's size, placed off-centre on a wall."""
    width, height = image.size
    factor = rng.uniform(0.45, 0.6)
    small = image.resize((round(width * factor), round(height * factor)), Image.Resampling.LANCZOS)
    canvas = Image.new("RGB", (width, height), _BACKGROUND)
    canvas.paste(
        small,
        (rng.randint(0, width - small.width), rng.randint(0, height - small.height)),
    )
    return canvas


def lighting(image: Image.Image, rng: random.Random) -> Image.Image:
    """Other light: brightness, contrast and saturation changed, a colour cast, slight blur."""
    brightness = rng.choice((rng.uniform(0.55, 0.75), rng.uniform(1.25, 1.45)))
    image = ImageEnhance.Brightness(image).enhance(brightness)
    image = ImageEnhance.Contrast(image).enhance(rng.uniform(0.7, 1.3))
    image = ImageEnhance.Color(image).enhance(rng.uniform(0.5, 1.5))
    cast = [rng.uniform(0.85, 1.15) for _ in range(3)]
    channels = [
        band.point(lambda value, gain=gain: min(255, round(value * gain)))
        for band, gain in zip(image.split(), cast, strict=True)
    ]
    return Image.merge("RGB", channels).filter(ImageFilter.GaussianBlur(0.8))


def perspective(image: Image.Image, rng: random.Random) -> Image.Image:
    """Seen from one side: one vertical edge shrunk by 15-25 %, a projective warp."""
    width, height = image.size
    squeeze = rng.uniform(0.15, 0.25) * height / 2
    # corners of the source quadrilateral that map to the output's corners (UL, LL, LR, UR)
    if rng.random() < 0.5:
        quad = (0, -squeeze, 0, height + squeeze, width, height, width, 0)
    else:
        quad = (0, 0, 0, height, width, height + squeeze, width, -squeeze)
    return image.transform(
        (width, height),
        Image.Transform.QUAD,
        quad,
        resample=Image.Resampling.BICUBIC,
        fillcolor=_BACKGROUND,
    )


#: The changes applied to every reference photo, by name.
CHANGES: dict[str, Callable[[Image.Image, random.Random], Image.Image]] = {
    "crop": crop,
    "rotate": rotate,
    "smaller": smaller,
    "lighting": lighting,
    "perspective": perspective,
}


def image_files(folder: Path) -> list[Path]:
    """The image files directly in ``folder``, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def make_queries(
    out_dir: str | os.PathLike[str],
    *,
    collection: str | os.PathLike[str] = COLLECTION_DIR,
    unknown: str | os.PathLike[str] | None = UNKNOWN_DIR,
    seed: int = 0,
) -> list[DemoQuery]:
    """Write query photos into ``out_dir`` and say what each shows.

    For the first image of every instance folder of ``collection``, one JPEG per change of
    :data:`CHANGES` (``<instance>-<change>.jpg``); for every image of ``unknown``, one
    lightly changed copy (``unknown-<name>.jpg``, truth None). The same ``seed`` gives the
    same photos.
    """
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed: expected an int, got {type(seed).__name__}")
    collection = Path(collection)
    if not collection.is_dir():
        raise FileNotFoundError(f"collection: no such folder {str(collection)!r}")
    instances = sorted(p for p in collection.iterdir() if p.is_dir() and image_files(p))
    if not instances:
        raise ValueError(
            f"collection: {str(collection)!r} has no instance sub-folder with an image"
        )
    unknown_files: list[Path] = []
    if unknown is not None:
        unknown = Path(unknown)
        if not unknown.is_dir():
            raise FileNotFoundError(f"unknown: no such folder {str(unknown)!r}")
        unknown_files = image_files(unknown)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    queries = []
    for number, folder in enumerate(instances):
        reference = load_image(image_files(folder)[0])
        for change_number, (change, apply) in enumerate(CHANGES.items()):
            rng = random.Random(f"{seed}:{number}:{change_number}")
            path = out / f"{folder.name}-{change}.jpg"
            _save(apply(reference, rng), path)
            queries.append(DemoQuery(path, folder.name))
    for number, file in enumerate(unknown_files):
        rng = random.Random(f"{seed}:unknown:{number}")
        path = out / f"unknown-{file.stem}.jpg"
        _save(crop(load_image(file), rng), path)
        queries.append(DemoQuery(path, None))
    return queries


def _save(image: Image.Image, path: Path) -> None:
    partial = path.with_name(path.name + ".partial")
    image.convert("RGB").save(partial, "JPEG", quality=90)
    os.replace(partial, path)
