"""The persistent instance index: references, their descriptors and the recipe that made them."""

from __future__ import annotations

from pyinstance.index.describer import Describer, FileError
from pyinstance.index.instance_index import AUTO_COMPACT_FRACTION, InstanceIndex
from pyinstance.index.neighbours import Neighbours
from pyinstance.index.processed import StalePostProcessingError
from pyinstance.index.recipe import DEFAULT_RECIPE, DTYPES, Recipe
from pyinstance.index.report import AddReport
from pyinstance.index.store import (
    FORMAT_VERSION,
    IndexBusyError,
    IndexFormatError,
    IndexNotFoundError,
    IndexWriteError,
)
from pyinstance.index.thresholds import StaleThresholdError

__all__ = [
    "AUTO_COMPACT_FRACTION",
    "DEFAULT_RECIPE",
    "DTYPES",
    "FORMAT_VERSION",
    "AddReport",
    "Describer",
    "FileError",
    "IndexBusyError",
    "IndexFormatError",
    "IndexNotFoundError",
    "IndexWriteError",
    "InstanceIndex",
    "Neighbours",
    "Recipe",
    "StalePostProcessingError",
    "StaleThresholdError",
]
