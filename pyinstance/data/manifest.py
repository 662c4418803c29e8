"""The manifest format of image collections: a CSV with ``path,instance_id,split[,query_set]``.

``path`` is relative to the manifest's folder, ``split`` is ``reference`` or ``query`` and
the optional ``query_set`` names the kind of query (``-`` or empty for none).

The file is UTF-8, with or without the byte-order mark spreadsheets write. A path may not
lead outside the manifest's folder, through ``..`` or through a symbolic link, and each
image file is listed once: two spellings of one file (a folder reached through a link)
are duplicates.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import overload

REQUIRED_COLUMNS = ("path", "instance_id", "split")
SPLITS = ("reference", "query")
_NO_QUERY_SET = {"", "-"}
_LISTED = 10


@dataclass(frozen=True)
class ManifestEntry:
    """One image of a collection."""

    path: Path
    instance_id: str
    split: str
    query_set: str | None = None


class Manifest(Sequence[ManifestEntry]):
    """The images of a collection, read and validated from a manifest CSV."""

    def __init__(self, entries: Sequence[ManifestEntry], root: Path):
        self._entries = tuple(entries)
        self.root = Path(root)

    @classmethod
    def read(cls, path: str | os.PathLike[str], *, check_files: bool = True) -> Manifest:
        """Read ``path``; errors name the file, the line and the problem.

        ``check_files`` verifies that every image file exists (the error lists the missing).
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"manifest: no such file {str(path)!r}")
        root = path.parent
        entries = _read_entries(path, root)
        by_file: dict[Path, list[str]] = {}
        for entry in entries:
            relative = str(entry.path.relative_to(root))
            by_file.setdefault(entry.path.resolve(), []).append(relative)
        duplicates = sorted(
            " = ".join(dict.fromkeys(names)) for names in by_file.values() if len(names) > 1
        )
        if duplicates:
            raise ValueError(f"manifest {str(path)!r}: duplicate paths: {_listing(duplicates)}")
        if check_files:
            missing = [str(e.path.relative_to(root)) for e in entries if not e.path.is_file()]
            if missing:
                raise FileNotFoundError(
                    f"manifest {str(path)!r}: {len(missing)} image file(s) not found under "
                    f"{str(root)!r}: {_listing(missing)}"
                )
        return cls(entries, root)

    def filter(self, *, split: str | None = None, query_set: str | None = None) -> Manifest:
        """The entries of one ``split`` and/or one ``query_set``."""
        if split is not None and split not in SPLITS:
            raise ValueError(f"split: expected one of {', '.join(SPLITS)}, got {split!r}")
        kept = [
            entry
            for entry in self._entries
            if (split is None or entry.split == split)
            and (query_set is None or entry.query_set == query_set)
        ]
        return Manifest(kept, self.root)

    @property
    def paths(self) -> list[Path]:
        return [entry.path for entry in self._entries]

    @property
    def instance_ids(self) -> list[str]:
        return [entry.instance_id for entry in self._entries]

    @property
    def query_sets(self) -> list[str | None]:
        return [entry.query_set for entry in self._entries]

    def __len__(self) -> int:
        return len(self._entries)

    @overload
    def __getitem__(self, index: int) -> ManifestEntry: ...
    @overload
    def __getitem__(self, index: slice) -> Manifest: ...
    def __getitem__(self, index: int | slice) -> ManifestEntry | Manifest:
        if isinstance(index, slice):
            return Manifest(self._entries[index], self.root)
        return self._entries[index]

    def __iter__(self) -> Iterator[ManifestEntry]:
        return iter(self._entries)

    def __repr__(self) -> str:
        return f"Manifest({len(self)} images under {str(self.root)!r})"


def _read_entries(path: Path, root: Path) -> list[ManifestEntry]:
    """Parse the rows of ``path`` (UTF-8, with or without a byte-order mark)."""
    line = 1
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = reader.fieldnames or []
            absent = [column for column in REQUIRED_COLUMNS if column not in columns]
            if absent:
                raise ValueError(
                    f"manifest {str(path)!r}: missing column(s) {', '.join(absent)}; found "
                    f"{', '.join(columns) or 'none'} (expected {','.join(REQUIRED_COLUMNS)}"
                    "[,query_set])"
                )
            entries = []
            for row in reader:
                line = reader.line_num
                entries.append(_entry(row, root, f"{path}:{line}"))
            return entries
    except UnicodeDecodeError as error:
        raise ValueError(
            f"manifest {str(path)!r}: not UTF-8 text ({error}); save it as UTF-8 (Latin-1, "
            "UTF-16 and other encodings are not read)"
        ) from error
    except csv.Error as error:
        hint = " (a NUL byte: is it UTF-16? save it as UTF-8)" if "NUL" in str(error) else ""
        raise ValueError(
            f"manifest {str(path)!r}: malformed CSV after line {line}: {error}{hint}"
        ) from error


def _entry(row: dict[str, str | None], root: Path, where: str) -> ManifestEntry:
    values = {key: (row.get(key) or "").strip() for key in (*REQUIRED_COLUMNS, "query_set")}
    for column in ("path", "instance_id"):
        if not values[column]:
            raise ValueError(f"manifest {where}: empty {column}")
    if values["split"] not in SPLITS:
        raise ValueError(
            f"manifest {where}: split must be one of {', '.join(SPLITS)}, got {values['split']!r}"
        )
    relative = Path(values["path"])
    if relative.is_absolute() or ".." in relative.parts:
        raise ValueError(
            f"manifest {where}: path must be relative to the manifest's folder, got {values['path']!r}"
        )
    if not (root / relative).resolve().is_relative_to(root.resolve()):
        raise ValueError(
            f"manifest {where}: {values['path']!r} leads outside the manifest's folder through a "
            "symbolic link"
        )
    query_set = values["query_set"]
    return ManifestEntry(
        path=root / relative,
        instance_id=values["instance_id"],
        split=values["split"],
        query_set=None if query_set in _NO_QUERY_SET else query_set,
    )


def _listing(items: Sequence[str]) -> str:
    more = f", ... and {len(items) - _LISTED} more" if len(items) > _LISTED else ""
    return ", ".join(items[:_LISTED]) + more
