"""What an ``add``/``update``/``build`` did."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pyinstance.index.describer import FileError


@dataclass(frozen=True)
class AddReport:
    """Outcome of adding files to an index.

    Attributes:
        added: images newly added.
        updated: images whose content changed and were re-extracted (``update`` only).
        unchanged: files already in the index with identical content (no-ops).
        skipped: files refused, each with its reason.
        instances: instances in the index afterwards.
        seconds: wall time.
    """

    added: int
    updated: int = 0
    unchanged: int = 0
    skipped: tuple[FileError, ...] = field(default_factory=tuple)
    instances: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "added": self.added,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "skipped": [{"path": e.path, "reason": e.reason} for e in self.skipped],
            "instances": self.instances,
            "seconds": self.seconds,
        }
