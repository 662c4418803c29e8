"""The int8 screens (:class:`~pyinstance.ops.KnnScreen`) that index searches read.

A screen of a descriptor file's generation is kept in memory (the last few), extended as
rows are appended (rows of a generation are only ever appended; compaction starts a new
generation), and saved beside the descriptors as ``screens/screen-<G>.bin``, so that the
next process that opens the index loads it (checked: size, checksum, and rows
re-quantised from the descriptors) instead of building it. A file that fails those checks
is deleted and rebuilt, never used. Without a file, the first search of a generation
scans plainly (a one-off search does not pay for a build) and the second builds one.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import OrderedDict
from pathlib import Path

from pyinstance.index.store import Snapshot
from pyinstance.ops import KnnScreen
from pyinstance.ops.knn_screen import ScreenFileError

#: Descriptor arrays smaller than this (bytes) are scanned as they are.
SCREEN_MIN_BYTES = 8 << 20
#: Screens kept in memory (the most recently used).
SCREEN_CACHE_SIZE = 4
#: A screen is saved again once it covers this many times the rows of the saved one.
RESAVE_GROWTH = 1.25
#: Temporary files older than this (seconds) are left by a crashed save: deleted.
STALE_TEMPORARY_SECONDS = 600.0
#: The folder of an index directory that holds the screen files.
SCREEN_FOLDER = "screens"


def screen_path(descriptor_file: str | Path, generation: int) -> Path:
    """Where the screen of ``generation`` of the descriptor file ``descriptor_file`` lives."""
    return Path(descriptor_file).parent / SCREEN_FOLDER / f"screen-{generation}.bin"


class ScreenCache:
    """Screens by descriptor file and generation, loaded, built, extended and saved."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._screens: OrderedDict[tuple, KnnScreen] = OrderedDict()
        self._seen: OrderedDict[tuple, None] = OrderedDict()
        self._saved: dict[tuple, int] = {}
        self._lock = threading.Lock()

    def get(self, snapshot: Snapshot) -> KnnScreen | None:
        """The screen of ``snapshot``'s descriptors, or ``None`` where a plain scan is due."""
        descriptors = snapshot.descriptors
        filename = getattr(descriptors, "filename", None)
        if filename is None or descriptors.nbytes < SCREEN_MIN_BYTES:
            return None
        key = (str(filename), snapshot.generation, descriptors.shape[1], snapshot.dtype)
        rows = descriptors.shape[0]
        with self._lock:
            screen = self._screens.get(key)
            if screen is not None:
                self._screens.move_to_end(key)  # used now: the last to be dropped
            first = screen is None and key not in self._seen
            if first:
                self._remember(self._seen, key, None)
        if screen is not None and screen.rows >= rows:  # an older snapshot: a prefix
            return screen if screen.rows == rows else screen.prefix(rows)
        # loaded or built outside the lock: searches of other snapshots go on meanwhile
        path = screen_path(filename, snapshot.generation)
        if screen is None:
            screen = self._load(path, snapshot, key)
        if screen is None and first:
            return None  # first search: no build cost
        if screen is None:
            screen = KnnScreen.of(snapshot.refs())
        elif screen.rows < rows:
            screen = screen.extended(snapshot.refs())
        with self._lock:
            cached = self._screens.get(key)
            if cached is None or cached.rows <= screen.rows:
                self._remember(self._screens, key, screen)
            due = screen.rows >= RESAVE_GROWTH * self._saved.get(key, 0)
            if due:
                self._saved[key] = screen.rows
        if due:
            _save(screen, path, snapshot.generation)
        return screen

    def _load(self, path: Path, snapshot: Snapshot, key: tuple) -> KnnScreen | None:
        """The saved screen at ``path`` if it checks out; a damaged or stale one is deleted."""
        try:
            screen = KnnScreen.load(path, snapshot.refs())
        except FileNotFoundError:
            return None
        except ScreenFileError:
            with contextlib.suppress(OSError):
                path.unlink()
            return None
        except OSError:  # unreadable: build instead
            return None
        with self._lock:
            self._saved[key] = max(self._saved.get(key, 0), screen.rows)
        return screen

    def _remember(self, cache: OrderedDict, key: tuple, value: object) -> None:
        cache[key] = value
        cache.move_to_end(key)
        while len(cache) > self._size:
            cache.popitem(last=False)


def _save(screen: KnnScreen, path: Path, generation: int) -> None:
    """Save ``screen`` at ``path`` (unless a newer generation has a screen: the index was
    compacted since this snapshot) and delete the screens of older generations and stale
    temporary files; a read-only or full disk only leaves the screen unsaved."""
    with contextlib.suppress(OSError):
        path.parent.mkdir(exist_ok=True)
        entries = {entry: _generation(entry.name) for entry in path.parent.iterdir()}
        if any(other is not None and other > generation for other in entries.values()):
            return
        screen.save(path)
        now = time.time()
        for entry, other in entries.items():
            with contextlib.suppress(OSError):
                if (other is not None and other < generation) or (
                    entry.name.endswith(".tmp")
                    and now - entry.stat().st_mtime > STALE_TEMPORARY_SECONDS
                ):
                    entry.unlink()


def _generation(name: str) -> int | None:
    """The generation whose screen file is named ``name``, or ``None``."""
    stem = name.removeprefix("screen-").removesuffix(".bin")
    return int(stem) if name != stem and stem.isdigit() else None


screens = ScreenCache(SCREEN_CACHE_SIZE)
