"""What to add to an index: image files, folders with one sub-folder per instance, or a
manifest CSV, resolved to (file, instance id, image id)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pyinstance.data.manifest import Manifest
from pyinstance.index.describer import FileError

Source = str | os.PathLike[str]


@dataclass(frozen=True)
class SourceImage:
    """One reference file and where it goes.

    ``image_id`` is stable: the path relative to the manifest's folder, or
    ``<instance>/<path relative to the instance's folder>``.
    """

    path: Path
    instance: str
    image_id: str


def collect(
    sources: Source | Sequence[Source], instance: str | None = None
) -> tuple[list[SourceImage], list[FileError]]:
    """The images of ``sources`` and the entries refused while listing them.

    Each source is a manifest ``.csv`` (its ``reference`` rows), a folder (one sub-folder
    per instance, or any files when ``instance`` names their instance) or an image file
    (``instance`` required). Raises ``ValueError``/``FileNotFoundError`` for a source that
    cannot be used at all, and when nothing at all was found.
    """
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    if not isinstance(sources, Sequence) or not sources:
        raise ValueError(f"source: expected one or more paths, got {sources!r}")
    if instance is not None and (not isinstance(instance, str) or not instance.strip()):
        raise ValueError(f"instance: expected a non-empty instance id, got {instance!r}")
    images: list[SourceImage] = []
    errors: list[FileError] = []
    for source in sources:
        path = Path(source)
        if not path.exists():
            raise FileNotFoundError(f"source: no such file or folder {str(path)!r}")
        if path.is_file() and path.suffix.lower() == ".csv":
            if instance is not None:
                raise ValueError(
                    f"instance: a manifest names the instances itself; drop instance for {str(path)!r}"
                )
            images.extend(_manifest(path))
        elif path.is_dir():
            images.extend(_folder(path, instance, errors))
        else:
            if instance is None:
                raise ValueError(
                    f"instance: image file {str(path)!r} needs an instance id (--instance)"
                )
            images.append(SourceImage(path, instance, f"{instance}/{path.name}"))
    if not images and not errors:
        shown = ", ".join(str(s) for s in sources)
        raise ValueError(f"source: no reference images found in {shown}")
    return _unique(images, errors), errors


def _manifest(path: Path) -> list[SourceImage]:
    # Manifest.read refuses a path leading outside the manifest's folder (``..``, links)
    manifest = Manifest.read(path, check_files=False).filter(split="reference")
    return [
        SourceImage(entry.path, entry.instance_id, entry.path.relative_to(manifest.root).as_posix())
        for entry in manifest
    ]


def _folder(path: Path, instance: str | None, errors: list[FileError]) -> list[SourceImage]:
    images = []
    if instance is not None:
        return [
            SourceImage(file, instance, f"{instance}/{file.relative_to(path).as_posix()}")
            for file in _files(path)
        ]
    for child in sorted(path.iterdir()):
        if child.name.startswith("."):
            continue
        if child.is_dir():
            images.extend(
                SourceImage(file, child.name, file.relative_to(path).as_posix())
                for file in _files(child)
            )
        else:
            errors.append(
                FileError(
                    str(child), "skipped: not inside an instance sub-folder (or use --instance)"
                )
            )
    return images


def _files(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def _unique(images: list[SourceImage], errors: list[FileError]) -> list[SourceImage]:
    seen: set[str] = set()
    unique = []
    for image in images:
        if image.image_id in seen:
            errors.append(
                FileError(str(image.path), f"skipped: image id {image.image_id!r} given twice")
            )
            continue
        seen.add(image.image_id)
        unique.append(image)
    return unique


def file_sha256(path: Path) -> str:
    """sha256 of a file's content."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
