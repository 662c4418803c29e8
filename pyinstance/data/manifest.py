"""The manifest format of image collections: a CSV with ``path,instance_id,split[,query_set]``.

``path`` is relative to the manifest's folder, ``split`` is ``reference`` or ``query`` and
the optional ``query_set`` names the kind of query (``-`` or empty for none).

The file is UTF-8, with or without the byte-order mark spreadsheets write. A path may not
lead outside the manifest's folder, through ``..`` or through a symbolic link, and each
image file is listed once: two spellings of one file (a folder reached through a link)
are duplicates.

A query photo of an object that is not in the collection (what open-set evaluation needs)
has an empty ``instance_id``; :meth:`Manifest.read` accepts such rows only when asked
(``unknown_queries=True``), as entries whose ``instance_id`` is None. With
``skip_bad_rows=True`` a bad row (empty path, bad split, a path leading outside, a
repeated file) is set aside in :attr:`Manifest.skipped` with its reason, and the others
are read.
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
    """One image of a collection.

    ``instance_id`` is None only for a query of an unknown object (read with
    ``unknown_queries=True``). ``row`` is ``file:line`` where it was read.
    """

    path: Path
    instance_id: str | None
    split: str
    query_set: str | None = None
    row: str | None = None


@dataclass(frozen=True)
class RowProblem:
    """A CSV row set aside (e.g. by ``Manifest.read(..., skip_bad_rows=True)``) or only
    partly used, and why."""

    row: str
    reason: str

    def __str__(self) -> str:
        return f"{self.row}: {self.reason}"


class Manifest(Sequence[ManifestEntry]):
    """The images of a collection, read and validated from a manifest CSV."""

    def __init__(
        self, entries: Sequence[ManifestEntry], root: Path, skipped: Sequence[RowProblem] = ()
    ):
        self._entries = tuple(entries)
        self.root = Path(root)
        self.skipped = tuple(skipped)

    @classmethod
    def read(
        cls,
        path: str | os.PathLike[str],
        *,
        check_files: bool = True,
        unknown_queries: bool = False,
        skip_bad_rows: bool = False,
    ) -> Manifest:
        """Read ``path``; errors name the file, the line and the problem.

        ``check_files`` verifies that every image file exists (the error lists the missing).
        ``unknown_queries``: a query row with an empty ``instance_id`` is a photo of an
        object not in the collection (entry ``instance_id`` None) instead of an error.
        ``skip_bad_rows``: bad rows and repeats of a file go to :attr:`skipped` (each with
        its line and reason) instead of raising; a missing column still raises.
        """
        path = Path(path)
        root = path.parent
        entries, skipped = _read_entries(path, root, unknown_queries, skip_bad_rows)
        by_file: dict[Path, list[ManifestEntry]] = {}
        for entry in entries:
            by_file.setdefault(entry.path.resolve(), []).append(entry)
        if skip_bad_rows:
            repeats = {id(e) for same in by_file.values() for e in same[1:]}
            skipped += [
                RowProblem(
                    e.row or str(path),
                    f"duplicate: {e.path.relative_to(root)} is listed first at {same[0].row}",
                )
                for same in by_file.values()
                for e in same[1:]
            ]
            entries = [e for e in entries if id(e) not in repeats]
        duplicates = sorted(
            " = ".join(dict.fromkeys(str(e.path.relative_to(root)) for e in same))
            for same in by_file.values()
            if len(same) > 1
        )
        if duplicates and not skip_bad_rows:
            raise ValueError(f"manifest {str(path)!r}: duplicate paths: {_listing(duplicates)}")
        if check_files:
            missing = [str(e.path.relative_to(root)) for e in entries if not e.path.is_file()]
            if missing:
                raise FileNotFoundError(
                    f"manifest {str(path)!r}: {len(missing)} image file(s) not found under "
                    f"{str(root)!r}: {_listing(missing)}"
                )
        return cls(entries, root, skipped)

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
        return Manifest(kept, self.root, self.skipped)

    @property
    def paths(self) -> list[Path]:
        return [entry.path for entry in self._entries]

    @property
    def instance_ids(self) -> list[str | None]:
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
            return Manifest(self._entries[index], self.root, self.skipped)
        return self._entries[index]

    def __iter__(self) -> Iterator[ManifestEntry]:
        return iter(self._entries)

    def __repr__(self) -> str:
        return f"Manifest({len(self)} images under {str(self.root)!r})"


def read_csv_rows(
    path: Path, what: str, required: Sequence[str], optional: Sequence[str] = ()
) -> list[tuple[int, dict[str, str]]]:
    """The rows of the CSV file ``path`` as ``(line, {column: stripped value})``.

    The file is UTF-8, with or without a byte-order mark. Errors start with ``what`` (the
    argument that named the file) and the file: a missing file, a missing column of
    ``required`` (``optional`` columns are named in the expected header), text that is not
    UTF-8, malformed CSV (with the last line read).
    """
    if not path.is_file():
        raise FileNotFoundError(f"{what}: no such file {str(path)!r}")
    label = f"{what} {str(path)!r}"
    line = 1
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = reader.fieldnames or []
            absent = [column for column in required if column not in columns]
            if absent:
                header = ",".join(required) + "".join(f"[,{column}]" for column in optional)
                raise ValueError(
                    f"{label}: missing column(s) {', '.join(absent)}; found "
                    f"{', '.join(columns) or 'none'} (expected {header})"
                )
            rows = []
            for row in reader:
                line = reader.line_num
                rows.append((line, {k: (v or "").strip() for k, v in row.items() if k}))
            return rows
    except UnicodeDecodeError as error:
        raise ValueError(
            f"{label}: not UTF-8 text ({error}); save it as UTF-8 (Latin-1, UTF-16 and other "
            "encodings are not read)"
        ) from error
    except csv.Error as error:
        hint = " (a NUL byte: is it UTF-16? save it as UTF-8)" if "NUL" in str(error) else ""
        raise ValueError(f"{label}: malformed CSV after line {line}: {error}{hint}") from error


def _read_entries(
    path: Path, root: Path, unknown_queries: bool, skip_bad_rows: bool
) -> tuple[list[ManifestEntry], list[RowProblem]]:
    """Parse the rows of ``path``; a bad row raises or, with ``skip_bad_rows``, is set aside."""
    entries, skipped = [], []
    for line, row in read_csv_rows(path, "manifest", REQUIRED_COLUMNS, ("query_set",)):
        where = f"{path}:{line}"
        try:
            entries.append(_entry(row, root, where, unknown_queries))
        except ValueError as error:
            if not skip_bad_rows:
                raise
            skipped.append(RowProblem(where, str(error).split(": ", 1)[1]))
    return entries, skipped


def _entry(row: dict[str, str], root: Path, where: str, unknown_queries: bool) -> ManifestEntry:
    values = {key: row.get(key, "") for key in (*REQUIRED_COLUMNS, "query_set")}
    unknown = unknown_queries and values["split"] == "query"
    for column in ("path", "instance_id"):
        if not values[column] and not (column == "instance_id" and unknown):
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
        instance_id=values["instance_id"] or None,
        split=values["split"],
        query_set=None if query_set in _NO_QUERY_SET else query_set,
        row=where,
    )


def _listing(items: Sequence[str]) -> str:
    more = f", ... and {len(items) - _LISTED} more" if len(items) > _LISTED else ""
    return ", ".join(items[:_LISTED]) + more
