"""The folder of uploaded reference photos (``INDEX/uploads``), kept free of orphans.

A photo is written (atomically, as ``<sha256>.<ext>``) before the commit that records its
image: a crash or a failed commit in between leaves a file no image refers to. Such
orphans are removed when the service starts, after a failed commit and after removals.

Several processes may serve one index: each holds a shared lock on ``uploads/.lock`` from
writing its photos until their commit ends, and orphans are removed only under the
exclusive lock, so a file another process is about to commit is never taken for one.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from pyinstance._files import write_atomic

_LOCK = ".lock"


class UploadFolder:
    """``path`` (created on first write): uploaded photos by content hash."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Hold the shared lock: photos written inside are not orphans until it is left."""
        self.path.mkdir(exist_ok=True)
        with open(self.path / _LOCK, "a+b") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_SH)
            yield

    def write(self, name: str, data: bytes) -> Path:
        """Keep ``data`` as ``name`` (atomic; an existing file of that name is kept)."""
        path = self.path / name
        if not path.exists():
            write_atomic(path, data)
        return path

    def clean(self, referenced: Iterable[str | os.PathLike[str]], *, wait: float = 0.0) -> int:
        """Remove every file that is not in ``referenced`` (image sources) and every
        temporary file a cut-short write left; returns how many were removed.

        Waits up to ``wait`` seconds for other processes' writes to end; when they have not
        ended, removes nothing (the next clean will) and returns 0.
        """
        if not self.path.is_dir():
            return 0
        kept = {os.path.realpath(path) for path in referenced}
        with open(self.path / _LOCK, "a+b") as handle:
            deadline = time.monotonic() + wait
            while True:
                try:
                    fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        return 0
                    time.sleep(0.05)
            removed = 0
            for entry in self.path.iterdir():
                if entry.name == _LOCK or not entry.is_file():
                    continue
                if os.path.realpath(entry) not in kept:
                    entry.unlink(missing_ok=True)
                    removed += 1
            return removed
