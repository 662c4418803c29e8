"""The on-disk store of an index: one SQLite database and one append-only descriptor file.

Layout of an index directory::

    index.sqlite            metadata: format, recipe, settings, instances, images, and
                            the fitted post-processing state (table ``fitted``)
    descriptors-<G>.bin     the descriptors of generation G, one row per slot, raw
                            little-endian float32 / float16 / bfloat16 (as uint16)

Atomicity (every mutation is one SQLite transaction, the only commit point):

- A writer first takes SQLite's write lock (``BEGIN IMMEDIATE``; a second writer waits up
  to ``timeout`` seconds, then fails with :class:`IndexBusyError`). Under the lock it
  truncates the descriptor file to the committed slot count (dropping rows a crashed
  writer appended but never committed) and deletes descriptor files of other generations
  (left by a crash after a compaction).
- New descriptors are appended beyond the committed slots and fsynced *before* the
  transaction that records them (images, slot count) commits. A crash before the commit
  leaves rows that no committed metadata refers to: invisible, and truncated by the next
  writer. A crash after it leaves both in place.
- Removal deletes image records only: their slots become tombstones (never renumbered,
  excluded from search) until compaction.
- Compaction writes the live rows into a new generation file, fsyncs it and its folder,
  then switches generation and slots in one transaction; the old file is unlinked after
  the commit (readers that mapped it keep a valid mapping on POSIX).
- Post-processing state fitted on the collection (e.g. a whitening) is written by the
  ``refit`` callback of :meth:`Store.add` / :meth:`Store.remove` / :meth:`Store.refit`
  inside the transaction that changes the collection, stamped with the collection version
  it was fitted on: a reader gets descriptors and state of the same commit, and can tell
  a stale state (written by a writer that did not refit) by its stamp.
- Readers read metadata in one read transaction (WAL mode: a consistent snapshot while a
  writer works) and memory-map only the committed rows of that generation.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import json
import os
import re
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pyinstance.index.metadata import check_fields
from pyinstance.index.recipe import Recipe

#: Version of the on-disk format this code reads; newer ones are refused. Version 2 adds
#: the post-processing state (table ``fitted``) and rows of several descriptors per image;
#: it is written only for recipes with post-processing, so other indexes stay version 1
#: (readable by older pyinstance).
FORMAT_VERSION = 2
_FITTED_FORMAT_VERSION = 2
FORMAT_NAME = "pyinstance-index"
DATABASE = "index.sqlite"
_GENERATION_FILE = re.compile(r"descriptors-(\d+)\.bin")
_FILE_DTYPES = {"float32": np.dtype("<f4"), "float16": np.dtype("<f2"), "bfloat16": np.dtype("<u2")}
_COPY_ROWS = 4096

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE instances (id TEXT PRIMARY KEY, added REAL NOT NULL);
CREATE TABLE images (
    id TEXT PRIMARY KEY,
    instance TEXT NOT NULL REFERENCES instances(id),
    source TEXT,
    sha256 TEXT,
    added REAL NOT NULL,
    row INTEGER NOT NULL UNIQUE,
    slot INTEGER NOT NULL UNIQUE
);
CREATE INDEX images_sha256 ON images(sha256);
CREATE INDEX images_instance ON images(instance);
"""
_FITTED_SCHEMA = """
CREATE TABLE IF NOT EXISTS fitted (
    key TEXT PRIMARY KEY,
    collection INTEGER NOT NULL,
    value BLOB NOT NULL
);
"""

#: ``refit(descriptors, instances)``: the live rows (float32, ``N × row width``, by slot)
#: and their instance ids -> the state to store by key (``None``: no state for that key;
#: keys it does not name, e.g. a state fitted once at build, are kept).
Refit = Callable[[np.ndarray, list[str]], Mapping[str, bytes | None]]

#: Version of the instance metadata table (created at the first metadata write, so indexes
#: made before it open unchanged; a newer version is refused when read).
METADATA_SCHEMA = 1
_METADATA_TABLE = """
CREATE TABLE IF NOT EXISTS instance_metadata (
    instance TEXT PRIMARY KEY REFERENCES instances(id),
    fields TEXT NOT NULL
)
"""


class IndexNotFoundError(FileNotFoundError):
    """The path given as an index does not exist."""


class IndexFormatError(ValueError):
    """The path is not a pyinstance index, is damaged, or was written by a newer version."""


class IndexBusyError(RuntimeError):
    """Another writer holds the index for longer than the timeout."""


class IndexWriteError(OSError):
    """A write failed (e.g. the disk is full); the index is unchanged."""


@dataclass(frozen=True)
class ImageRecord:
    """One reference image to insert."""

    id: str
    instance: str
    source: str | None
    sha256: str | None


@dataclass(frozen=True)
class Snapshot:
    """The committed content of an index at one moment, descriptors memory-mapped.

    ``slots``, ``rows``, ``labels`` and ``image_ids`` are aligned and ordered by slot;
    ``descriptors`` maps every committed slot (live or tombstoned) of the generation.
    ``collection`` is the collection version (images ever added + images ever removed);
    ``fitted`` the stored post-processing state by key, with the collection version it was
    fitted on.
    """

    version: int
    generation: int
    descriptors: np.ndarray
    slots: np.ndarray
    rows: np.ndarray
    labels: np.ndarray
    image_ids: tuple[str, ...]
    instances: tuple[str, ...]
    dtype: str
    collection: int = 0
    fitted: Mapping[str, tuple[int, bytes]] = dataclasses.field(default_factory=dict)

    @property
    def dead(self) -> int:
        return int(self.descriptors.shape[0]) - int(self.slots.shape[0])

    def refs(self) -> np.ndarray | torch.Tensor:
        """The mapped descriptors as ``knn_dot`` takes them (bfloat16 as a torch view)."""
        if self.dtype == "bfloat16":
            return _bf16_view(self.descriptors)
        return self.descriptors

    @functools.cached_property
    def position_of_slot(self) -> np.ndarray:
        """For every slot, its position among the live rows, or -1 for a tombstone."""
        position = np.full(self.descriptors.shape[0], -1, dtype=np.int64)
        position[self.slots] = np.arange(self.slots.shape[0])
        return position


def _bf16_view(array: np.ndarray) -> torch.Tensor:
    import warnings

    with warnings.catch_warnings():  # a read-only mapping: the kernels never write to it
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(array).view(torch.bfloat16)


def to_storage(descriptors: np.ndarray, dtype: str) -> np.ndarray:
    """float32 rows as the bytes of the storage dtype (bfloat16 rounded, as uint16)."""
    if dtype == "bfloat16":
        return torch.from_numpy(descriptors).to(torch.bfloat16).view(torch.int16).numpy()
    return descriptors.astype(_FILE_DTYPES[dtype], copy=False)


def from_storage(rows: np.ndarray, dtype: str) -> np.ndarray:
    """Stored rows as float32."""
    if dtype == "bfloat16":
        return _bf16_view(np.ascontiguousarray(rows)).float().numpy()
    return np.asarray(rows, dtype=np.float32)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: memoryview) -> None:
    while data:
        written = os.write(fd, data)
        data = data[written:]


def _locked(method: Callable[..., Any]) -> Callable[..., Any]:
    """Serialise a Store method on the store's lock (one connection, many threads)."""

    @functools.wraps(method)
    def run(self: Store, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return method(self, *args, **kwargs)

    return run


def _connect(database: Path, timeout: float) -> sqlite3.Connection:
    connection = sqlite3.connect(
        f"file:{database}?mode=rw",
        uri=True,
        timeout=timeout,
        isolation_level=None,
        check_same_thread=False,  # shared by threads, serialised by Store's lock
    )
    connection.execute("PRAGMA synchronous=FULL")
    return connection


class Store:
    """An open index directory. Use :meth:`create` or the constructor (opens)."""

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = 30.0):
        self.path = Path(path)
        self.timeout = float(timeout)
        if not self.path.exists():
            raise IndexNotFoundError(f"index: no such directory {str(self.path)!r}")
        database = self.path / DATABASE
        if not self.path.is_dir() or not database.is_file():
            raise IndexFormatError(
                f"index: {str(self.path)!r} is not a pyinstance index (no {DATABASE} inside)"
            )
        try:
            self._db = _connect(database, self.timeout)
        except sqlite3.DatabaseError as error:
            raise IndexFormatError(
                f"index: {str(database)!r} is not a pyinstance index database ({error})"
            ) from error
        try:
            meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
            if meta.get("format") != FORMAT_NAME:
                raise IndexFormatError(f"index: {str(self.path)!r} is not a pyinstance index")
            version = int(meta.get("format_version", "0"))
            if version > FORMAT_VERSION:
                raise IndexFormatError(
                    f"index: {str(self.path)!r} has format version {version}, newer than the "
                    f"{FORMAT_VERSION} this pyinstance reads; upgrade pyinstance"
                )
            self.recipe = Recipe.from_json(meta.get("recipe", "null"))
        except sqlite3.DatabaseError as error:
            self._db.close()
            raise IndexFormatError(
                f"index: {str(database)!r} is not a pyinstance index database ({error})"
            ) from error
        except ValueError as error:
            self._db.close()
            if isinstance(error, IndexFormatError):
                raise
            raise IndexFormatError(
                f"index: {str(self.path)!r} has a damaged recipe: {error}"
            ) from error
        self.format_version = version
        self._file_dtype = _FILE_DTYPES[self.recipe.dtype]
        self._width = self.recipe.dim * self.recipe.descriptors_per_image
        self._row_bytes = self._width * self._file_dtype.itemsize
        self._snapshot: Snapshot | None = None
        self._lock = threading.RLock()

    # -- creation -------------------------------------------------------------------------

    @classmethod
    def create(
        cls, path: str | os.PathLike[str], recipe: Recipe, *, timeout: float = 30.0
    ) -> Store:
        """Create an empty index at ``path`` (absent or an empty folder), atomically."""
        path = Path(path)
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise FileExistsError(f"index: {str(path)!r} already exists and is not an empty folder")
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
        try:
            connection = sqlite3.connect(staging / DATABASE, isolation_level=None)
            try:
                connection.execute("PRAGMA journal_mode=WAL")
                connection.executescript(_SCHEMA + _FITTED_SCHEMA)
                version = _FITTED_FORMAT_VERSION if recipe.postprocess else 1
                connection.executemany(
                    "INSERT INTO meta VALUES (?, ?)",
                    [
                        ("format", FORMAT_NAME),
                        ("format_version", str(version)),
                        ("recipe", recipe.to_json()),
                        ("generation", "0"),
                        ("slots", "0"),
                        ("next_row", "0"),
                        ("created", repr(time.time())),
                    ],
                )
                connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                connection.close()
            (staging / "descriptors-0.bin").touch()
            staging.chmod(0o755)
            for name in os.listdir(staging):
                with open(staging / name, "rb") as handle:
                    os.fsync(handle.fileno())
            _fsync_dir(staging)
            if path.exists():
                path.rmdir()
            os.rename(staging, path)
            _fsync_dir(path.parent)
        except BaseException:
            for name in os.listdir(staging) if staging.exists() else ():
                (staging / name).unlink()
            if staging.exists():
                staging.rmdir()
            raise
        return cls(path, timeout=timeout)

    @_locked
    def close(self) -> None:
        self._db.close()

    @property
    def row_width(self) -> int:
        """Values per stored row: D times the recipe's descriptors per image."""
        return self._width

    def pinned(self) -> PinnedStore:
        """A read-only view of what is committed now (see :class:`PinnedStore`)."""
        return PinnedStore(self)

    # -- reading --------------------------------------------------------------------------

    @_locked
    def snapshot(self) -> Snapshot:
        """The committed content now (cached until another commit)."""
        version = self._db.execute("PRAGMA data_version").fetchone()[0]
        if self._snapshot is not None and self._snapshot.version == version:
            return self._snapshot
        for _ in range(100):
            try:
                self._snapshot = self._read_snapshot(version)
                return self._snapshot
            except FileNotFoundError:  # compacted between our read and the mapping: again
                time.sleep(0.01)
                version = self._db.execute("PRAGMA data_version").fetchone()[0]
        raise IndexFormatError(f"index: {str(self.path)!r}: descriptor file keeps vanishing")

    def _read_snapshot(self, version: int) -> Snapshot:
        self._db.execute("BEGIN")
        try:
            meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
            records = self._db.execute(
                "SELECT slot, row, instance, id FROM images ORDER BY slot"
            ).fetchall()
            generation, slots = int(meta["generation"]), int(meta["slots"])
            descriptors = self._map(generation, slots)
            fitted = self._read_fitted()
        finally:
            self._db.execute("COMMIT")
        instances = tuple(sorted({record[2] for record in records}))
        code = {instance: i for i, instance in enumerate(instances)}
        return Snapshot(
            version=version,
            generation=generation,
            descriptors=descriptors,
            slots=np.array([r[0] for r in records], dtype=np.int64),
            rows=np.array([r[1] for r in records], dtype=np.int64),
            labels=np.array([code[r[2]] for r in records], dtype=np.int64),
            image_ids=tuple(r[3] for r in records),
            instances=instances,
            dtype=self.recipe.dtype,
            collection=2 * int(meta["next_row"]) - len(records),
            fitted=fitted,
        )

    def _read_fitted(self) -> dict[str, tuple[int, bytes]]:
        """The stored post-processing state (none in an index of format version 1)."""
        has_table = self._db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'fitted'"
        ).fetchone()
        if not has_table:
            return {}
        rows = self._db.execute("SELECT key, collection, value FROM fitted").fetchall()
        return {key: (int(collection), bytes(value)) for key, collection, value in rows}

    def _file(self, generation: int) -> Path:
        return self.path / f"descriptors-{generation}.bin"

    def _checked_size(self, path: Path, slots: int) -> int:
        """The descriptor file's size in bytes; refused when it holds fewer rows than the
        ``slots`` committed."""
        size = path.stat().st_size
        if size < slots * self._row_bytes:
            raise IndexFormatError(
                f"index: {str(path)!r} holds {size // self._row_bytes} rows, but the metadata "
                f"commits {slots}: the descriptor file was damaged"
            )
        return size

    def _truncate(self, generation: int, committed: int) -> None:
        """Cut rows past the ``committed`` ones (never extends: a short file stays damaged)."""
        current = self._file(generation)
        if self._checked_size(current, committed) != committed * self._row_bytes:
            os.truncate(current, committed * self._row_bytes)

    def _map(self, generation: int, slots: int) -> np.ndarray:
        path = self._file(generation)
        self._checked_size(path, slots)
        if slots == 0:
            return np.empty((0, self._width), dtype=self._file_dtype)
        return np.memmap(path, dtype=self._file_dtype, mode="r", shape=(slots, self._width))

    @_locked
    def images(self) -> list[dict[str, Any]]:
        """Every live image record (id, instance, source, sha256, added, row)."""
        cursor = self._db.execute(
            "SELECT id, instance, source, sha256, added, row FROM images ORDER BY row"
        )
        columns = [c[0] for c in cursor.description]
        return [dict(zip(columns, values, strict=True)) for values in cursor.fetchall()]

    @_locked
    def image_by_sha(self, sha256s: Sequence[str]) -> dict[str, str]:
        """Existing image id of each given content hash that is in the index."""
        return self._images_with("sha256", "id", sha256s)

    @_locked
    def image_sha(self, image_ids: Sequence[str]) -> dict[str, str | None]:
        """Content hash of each given image id that is in the index."""
        return self._images_with("id", "sha256", image_ids)

    def _images_with(self, key: str, value: str, keys: Sequence[str]) -> dict[str, Any]:
        """``{key: value}`` of the images whose column ``key`` is one of ``keys``, asked
        500 keys at a time (under SQLite's limit of bound parameters)."""
        found: dict[str, Any] = {}
        for start in range(0, len(keys), 500):
            chunk = list(keys[start : start + 500])
            marks = ",".join("?" * len(chunk))
            found.update(
                self._db.execute(
                    f"SELECT {key}, {value} FROM images WHERE {key} IN ({marks})", chunk
                ).fetchall()
            )
        return found

    @_locked
    def get_setting(self, key: str, default: Any = None) -> Any:
        found = self._db.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return default if found is None else json.loads(found[0])

    @_locked
    def settings(self) -> dict[str, Any]:
        return {k: json.loads(v) for k, v in self._db.execute("SELECT key, value FROM settings")}

    @_locked
    def meta(self) -> dict[str, str]:
        return dict(self._db.execute("SELECT key, value FROM meta").fetchall())

    def size_on_disk(self) -> int:
        return sum(p.stat().st_size for p in self.path.iterdir() if p.is_file())

    # -- writing --------------------------------------------------------------------------

    @contextlib.contextmanager
    def _writing(self) -> Iterator[dict[str, str]]:
        """One write transaction (the writer lock); yields the metadata under the lock."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as error:
            if "locked" in str(error) or "busy" in str(error):
                raise IndexBusyError(
                    f"index: {str(self.path)!r} is being written by another process; gave up "
                    f"after waiting {self.timeout:g} s"
                ) from error
            raise
        meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        committed = int(meta["slots"])
        try:
            self._clean(int(meta["generation"]), committed)
            yield meta
            self._db.execute("COMMIT")
        except BaseException as error:
            self._db.execute("ROLLBACK")
            with contextlib.suppress(OSError, IndexFormatError):  # else the next writer does
                self._truncate(int(meta["generation"]), committed)
            if isinstance(error, OSError) and not isinstance(error, IndexWriteError):
                raise IndexWriteError(
                    error.errno,
                    f"index: writing {str(self.path)!r} failed ({error.strerror or error}); "
                    "the index is unchanged",
                ) from error
            if isinstance(error, sqlite3.OperationalError) and "full" in str(error):
                raise IndexWriteError(
                    errno.ENOSPC,
                    f"index: writing {str(self.path)!r} failed ({error}); the index is unchanged",
                ) from error
            raise
        finally:
            self._snapshot = None

    def _clean(self, generation: int, committed: int) -> None:
        """Drop what a crashed writer left: uncommitted tail rows, other generations; refuse
        a descriptor file shorter than the committed rows (damage, never padded)."""
        self._truncate(generation, committed)
        for entry in os.listdir(self.path):
            match = _GENERATION_FILE.fullmatch(entry)
            if match and int(match.group(1)) != generation:
                (self.path / entry).unlink()

    @_locked
    def add(
        self,
        descriptors: np.ndarray,
        records: Sequence[ImageRecord],
        *,
        replace: bool = False,
        refit: Refit | None = None,
        metadata: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> list[int]:
        """Append float32 ``descriptors`` (N × row width: D times the recipe's descriptors
        per image) for ``records``; returns their new row ids.

        ``replace=False``: an image id already in the index is a ``ValueError``.
        ``replace=True``: images with those ids are tombstoned in the same commit.
        ``refit``: called in the commit on the resulting collection; its state is stored.
        ``metadata``: instance metadata merged in the same commit (see
        :meth:`set_instance_metadata`).
        """
        if descriptors.shape != (len(records), self._width):
            raise ValueError(
                f"descriptors: expected shape ({len(records)}, {self._width}), got "
                f"{descriptors.shape}"
            )
        data = np.ascontiguousarray(to_storage(descriptors, self.recipe.dtype))
        with self._writing() as meta:
            if not records:
                return []
            if replace:
                self._db.executemany("DELETE FROM images WHERE id = ?", [(r.id,) for r in records])
            else:
                present = self.image_sha([r.id for r in records])
                if present:
                    raise ValueError(
                        f"image ids already in the index: {', '.join(sorted(present)[:10])}"
                    )
            generation, slots = int(meta["generation"]), int(meta["slots"])
            next_row = int(meta["next_row"])
            fd = os.open(self._file(generation), os.O_WRONLY | os.O_APPEND)
            try:
                _write_all(fd, memoryview(data).cast("B"))
                os.fsync(fd)
            finally:
                os.close(fd)
            now = time.time()
            self._db.executemany(
                "INSERT OR IGNORE INTO instances VALUES (?, ?)",
                [(instance, now) for instance in sorted({r.instance for r in records})],
            )
            rows = list(range(next_row, next_row + len(records)))
            self._db.executemany(
                "INSERT INTO images VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (r.id, r.instance, r.source, r.sha256, now, row, slots + i)
                    for i, (r, row) in enumerate(zip(records, rows, strict=True))
                ],
            )
            if metadata:
                self._write_metadata(metadata, replace=False)
            self._drop_empty_instances()
            self._set_meta(slots=slots + len(records), next_row=next_row + len(records))
            self._refit(refit)
        return rows

    @_locked
    def remove(
        self,
        *,
        instances: Sequence[str] = (),
        images: Sequence[str] = (),
        refit: Refit | None = None,
    ) -> int:
        """Tombstone the images of ``instances`` and the ``images``; returns how many.

        ``refit``: as for :meth:`add`."""
        with self._writing():
            removed = 0
            for column, values in (("instance", instances), ("id", images)):
                for value in values:
                    removed += self._db.execute(
                        f"DELETE FROM images WHERE {column} = ?", (value,)
                    ).rowcount
            self._drop_empty_instances()
            self._refit(refit)
        return removed

    @_locked
    def refit(self, refit: Refit) -> None:
        """Fit the post-processing state on the live collection again, in one commit."""
        with self._writing():
            self._refit(refit)

    @_locked
    def put_fitted(self, state: Mapping[str, bytes]) -> None:
        """Store post-processing state that does not depend on the collection (e.g. a
        whitening fitted on a separate set), in one commit; :meth:`refit` keeps it."""
        with self._writing() as meta:
            collection = 2 * int(meta["next_row"]) - int(
                self._db.execute("SELECT COUNT(*) FROM images").fetchone()[0]
            )
            self._store_fitted(state, collection, meta)

    def _refit(self, refit: Refit | None) -> None:
        """Inside a write transaction: store ``refit``'s state of the collection as it now is."""
        if refit is None:
            return
        meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        records = self._db.execute("SELECT slot, instance FROM images ORDER BY slot").fetchall()
        mapped = self._map(int(meta["generation"]), int(meta["slots"]))
        live = from_storage(mapped[[slot for slot, _ in records]], self.recipe.dtype)
        state = refit(live, [instance for _, instance in records])
        self._store_fitted(state, 2 * int(meta["next_row"]) - len(records), meta)

    def _store_fitted(
        self, state: Mapping[str, bytes | None], collection: int, meta: Mapping[str, str]
    ) -> None:
        """Inside a write transaction: replace the keys of ``state``, stamped ``collection``."""
        self._db.execute(_FITTED_SCHEMA)  # one statement: stays inside the transaction
        self._db.executemany("DELETE FROM fitted WHERE key = ?", [(key,) for key in state])
        self._db.executemany(
            "INSERT INTO fitted VALUES (?, ?, ?)",
            [(key, collection, value) for key, value in state.items() if value is not None],
        )
        if int(meta.get("format_version", "1")) < _FITTED_FORMAT_VERSION:
            self._set_meta(format_version=_FITTED_FORMAT_VERSION)

    def _drop_empty_instances(self) -> None:
        self._db.execute(
            "DELETE FROM instances WHERE id NOT IN (SELECT DISTINCT instance FROM images)"
        )
        if self._has_metadata():
            self._db.execute(
                "DELETE FROM instance_metadata WHERE instance NOT IN (SELECT id FROM instances)"
            )

    @_locked
    def compact(self) -> int:
        """Rewrite the live rows into a new generation; returns the tombstones reclaimed."""
        with self._writing() as meta:
            generation, slots = int(meta["generation"]), int(meta["slots"])
            live = [s for (s,) in self._db.execute("SELECT slot FROM images ORDER BY slot")]
            reclaimed = slots - len(live)
            if reclaimed == 0:
                return 0
            old = self._map(generation, slots)
            target = self._file(generation + 1)
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                for start in range(0, len(live), _COPY_ROWS):
                    chunk = np.ascontiguousarray(old[live[start : start + _COPY_ROWS]])
                    _write_all(fd, memoryview(chunk).cast("B"))
                os.fsync(fd)
            finally:
                os.close(fd)
            _fsync_dir(self.path)
            self._db.executemany(
                "UPDATE images SET slot = ? WHERE slot = ?",
                [(new, slot) for new, slot in enumerate(live)],  # ascending: never collides
            )
            self._set_meta(generation=generation + 1, slots=len(live))
        with contextlib.suppress(OSError):  # else the next writer deletes it
            self._file(generation).unlink()
        return reclaimed

    @_locked
    def set_settings(self, values: Mapping[str, Any]) -> None:
        """Store JSON ``values`` by key (``None`` deletes the key), in one commit."""
        encoded = {}
        for key, value in values.items():
            if not isinstance(key, str) or not key:
                raise ValueError(f"setting key: expected a non-empty str, got {key!r}")
            try:
                encoded[key] = None if value is None else json.dumps(value, allow_nan=False)
            except (TypeError, ValueError) as error:
                raise ValueError(f"setting {key!r}: not JSON-serialisable: {error}") from error
        with self._writing():
            for key, text in encoded.items():
                if text is None:
                    self._db.execute("DELETE FROM settings WHERE key = ?", (key,))
                else:
                    self._db.execute(
                        "INSERT INTO settings VALUES (?, ?) "
                        "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                        (key, text),
                    )

    def _set_meta(self, **values: int) -> None:
        self._db.executemany(
            "UPDATE meta SET value = ? WHERE key = ?", [(str(v), k) for k, v in values.items()]
        )

    # -- instance metadata ------------------------------------------------------------------

    def _has_metadata(self) -> bool:
        return (
            self._db.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'instance_metadata'"
            ).fetchone()
            is not None
        )

    @_locked
    def instance_metadata(self) -> dict[str, dict[str, Any]]:
        """The metadata fields of every instance that has some (none in an index made
        before metadata existed)."""
        self._db.execute("BEGIN")
        try:
            if not self._has_metadata():
                return {}
            found = self._db.execute(
                "SELECT value FROM meta WHERE key = 'metadata_schema'"
            ).fetchone()
            schema = int(found[0]) if found else METADATA_SCHEMA
            if schema > METADATA_SCHEMA:
                raise IndexFormatError(
                    f"index: {str(self.path)!r} has instance metadata of version {schema}, newer "
                    f"than the {METADATA_SCHEMA} this pyinstance reads; upgrade pyinstance"
                )
            rows = self._db.execute("SELECT instance, fields FROM instance_metadata").fetchall()
        finally:
            self._db.execute("COMMIT")
        return {instance: json.loads(fields) for instance, fields in rows}

    def metadata_changes(self) -> int:
        """How many metadata commits were ever made (tells a reader to read it again)."""
        return int(self.meta().get("metadata_changes", "0"))

    @_locked
    def set_instance_metadata(
        self, updates: Mapping[str, Mapping[str, Any]], *, replace: bool = False
    ) -> list[str]:
        """Merge ``updates`` (``{instance: {field: value}}``, ``None`` deletes a field) into
        the instances' metadata, or replace it (``replace=True``), in one commit. Returns the
        instances left out because they are not in the index."""
        with self._writing():
            return self._write_metadata(updates, replace=replace)

    def _write_metadata(
        self, updates: Mapping[str, Mapping[str, Any]], *, replace: bool
    ) -> list[str]:
        self._db.execute(_METADATA_TABLE)
        self._db.execute(
            "INSERT OR IGNORE INTO meta VALUES ('metadata_schema', ?)", (str(METADATA_SCHEMA),)
        )
        present = {instance for (instance,) in self._db.execute("SELECT id FROM instances")}
        missing = []
        for instance, fields in updates.items():
            if instance not in present:
                missing.append(instance)
                continue
            found = self._db.execute(
                "SELECT fields FROM instance_metadata WHERE instance = ?", (instance,)
            ).fetchone()
            merged = {} if replace or found is None else json.loads(found[0])
            merged.update(fields)
            kept = check_fields(
                instance, {k: v for k, v in merged.items() if v is not None}, allow_none=False
            )
            if kept:
                self._db.execute(
                    "INSERT INTO instance_metadata VALUES (?, ?) "
                    "ON CONFLICT(instance) DO UPDATE SET fields = excluded.fields",
                    (instance, json.dumps(kept, ensure_ascii=False, allow_nan=False)),
                )
            else:
                self._db.execute("DELETE FROM instance_metadata WHERE instance = ?", (instance,))
        changes = self._db.execute(
            "SELECT value FROM meta WHERE key = 'metadata_changes'"
        ).fetchone()
        self._db.execute(
            "INSERT OR REPLACE INTO meta VALUES ('metadata_changes', ?)",
            (str(int(changes[0]) + 1 if changes else 1),),
        )
        return missing


class PinnedStore(Store):
    """A read-only view of a store as committed at one moment.

    Everything is read once at creation (a snapshot, its image records, settings and
    metadata); afterwards no SQL runs, so the view can be used from any thread, and it
    never changes, whatever commits later. Writes raise ``PermissionError``.
    """

    def __init__(self, store: Store):  # deliberately not Store.__init__: nothing to open
        self.path = store.path
        self.timeout = store.timeout
        self.recipe = store.recipe
        self.format_version = store.format_version
        self._file_dtype = store._file_dtype
        self._width = store._width
        self._row_bytes = store._row_bytes
        self._snapshot = store.snapshot()
        live = set(self._snapshot.rows.tolist())
        self._images = [image for image in store.images() if image["row"] in live]
        self._settings = store.settings()
        self._metadata = store.instance_metadata()
        self._meta = store.meta()
        self._size = store.size_on_disk()
        self._lock = threading.RLock()  # Store's methods serialise on it; writes then refuse

    def close(self) -> None:
        pass

    def pinned(self) -> PinnedStore:
        return self

    def snapshot(self) -> Snapshot:
        return self._snapshot

    def images(self) -> list[dict[str, Any]]:
        return [dict(image) for image in self._images]

    def image_by_sha(self, sha256s: Sequence[str]) -> dict[str, str]:
        wanted = set(sha256s)
        return {i["sha256"]: i["id"] for i in self._images if i["sha256"] in wanted}

    def image_sha(self, image_ids: Sequence[str]) -> dict[str, str | None]:
        wanted = set(image_ids)
        return {i["id"]: i["sha256"] for i in self._images if i["id"] in wanted}

    def get_setting(self, key: str, default: Any = None) -> Any:
        return self._settings.get(key, default)

    def settings(self) -> dict[str, Any]:
        return dict(self._settings)

    def meta(self) -> dict[str, str]:
        return dict(self._meta)

    def instance_metadata(self) -> dict[str, dict[str, Any]]:
        return {instance: dict(fields) for instance, fields in self._metadata.items()}

    def size_on_disk(self) -> int:
        return self._size

    @contextlib.contextmanager
    def _writing(self) -> Iterator[dict[str, str]]:
        raise PermissionError(f"index: a pinned view of {str(self.path)!r} is read-only")
        yield {}  # pragma: no cover - makes this a generator
