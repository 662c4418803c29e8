"""The review queue: visitor photos answered unknown or with a low confidence, kept for
curators for a limited number of days (opt-in), so that they can add them to an instance."""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
from pathlib import Path
from typing import Any

from pyinstance._files import write_atomic

_ITEM_ID = re.compile(r"[0-9a-f]{64}")


class ReviewQueue:
    """Photos in ``folder``: ``<sha256>.<ext>`` and ``<sha256>.json`` (the answer given).

    Args:
        days: how long an item is kept; older ones are deleted.
        below: photos answered with a lower confidence (or unknown) are kept.
    """

    def __init__(self, folder: Path, *, days: float, below: float):
        if not days > 0:
            raise ValueError(f"review_days: expected a positive number, got {days!r}")
        if not 0.0 <= below <= 1.0:
            raise ValueError(f"review_below: expected a number in [0, 1], got {below!r}")
        self.folder = folder
        self.days = float(days)
        self.below = float(below)
        self._lock = threading.Lock()
        folder.mkdir(exist_ok=True)
        self.purge()

    def wants(self, instance: str | None, confidence: float) -> bool:
        return instance is None or confidence < self.below

    def keep(self, item_id: str, data: bytes, ext: str, answer: dict[str, Any]) -> None:
        """Keep the photo ``data`` (id: its sha256) with the ``answer`` it got."""
        record = {
            "id": item_id,
            "ext": ext,
            "time": time.time(),
            "instance": answer["instance"],
            "confidence": answer["confidence"],
            "top_k": [{"instance": m["instance"], "score": m["score"]} for m in answer["top_k"]],
        }
        with self._lock:
            write_atomic(self.folder / f"{item_id}.{ext}", data)
            write_atomic(self.folder / f"{item_id}.json", json.dumps(record).encode())

    def items(self) -> list[dict[str, Any]]:
        """The kept items, newest first (expired ones deleted first)."""
        self.purge()
        found = []
        for path in self.folder.glob("*.json"):
            with contextlib.suppress(OSError, ValueError):
                found.append(json.loads(path.read_text()))
        return sorted(found, key=lambda item: item["time"], reverse=True)

    def get(self, item_id: str) -> tuple[dict[str, Any], Path] | None:
        """The item's record and photo, or None."""
        if not _ITEM_ID.fullmatch(item_id):
            return None
        try:
            record = json.loads((self.folder / f"{item_id}.json").read_text())
        except (OSError, ValueError):
            return None
        photo = self.folder / f"{item_id}.{record['ext']}"
        return (record, photo) if photo.is_file() else None

    def discard(self, item_id: str) -> bool:
        """Delete the item; whether it was there."""
        found = self.get(item_id)
        if found is None:
            return False
        with self._lock:
            for path in (found[1], self.folder / f"{item_id}.json"):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        return True

    def purge(self) -> int:
        """Delete the items older than :attr:`days`; how many."""
        limit = time.time() - self.days * 86400
        purged = 0
        with self._lock:
            for path in self.folder.iterdir():
                with contextlib.suppress(FileNotFoundError):
                    if path.stat().st_mtime < limit:
                        path.unlink()
                        purged += path.suffix == ".json"
        return purged
