"""Rebuild a post-processing step from its stored state (``to_dict()``)."""

from __future__ import annotations

from typing import Any

from pyinstance.postprocess.expansion import DatabaseAugmentation, QueryExpansion
from pyinstance.postprocess.multiscale import ScaleAggregation
from pyinstance.postprocess.whitening import PCAWhitening

PostProcessing = PCAWhitening | DatabaseAugmentation | QueryExpansion | ScaleAggregation

_KINDS: dict[str, type[PostProcessing]] = {
    cls.kind: cls for cls in (PCAWhitening, DatabaseAugmentation, QueryExpansion, ScaleAggregation)
}


def from_dict(data: Any) -> PostProcessing:
    """The step that ``data`` (a ``to_dict()`` result, e.g. read back from JSON) describes."""
    if not isinstance(data, dict):
        raise TypeError(f"data: expected a dict, got {type(data).__name__}")
    kind = data.get("kind")
    if kind not in _KINDS:
        raise ValueError(
            f"data: unknown post-processing kind {kind!r}; expected one of {sorted(_KINDS)}"
        )
    return _KINDS[kind].from_dict(data)
