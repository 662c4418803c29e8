"""Descriptor post-processing: whitening, DBA, query expansion, multi-scale scoring.

Each step is a small frozen object: built by ``fit``/``fit_pairs`` (whitening, scale
weights) or from its parameters (DBA, query expansion), applied with ``apply`` to numpy
descriptors, stored with ``to_dict()`` (JSON-able) and rebuilt with :func:`from_dict`.
:class:`PostProcessConfig` chains them as an index applies them (its recipe's
``postprocess``): fitted on the references (:class:`FittedPostProcessing`), applied to
references and queries. Nothing here knows about the index.
"""

from __future__ import annotations

from pyinstance.postprocess.expansion import DatabaseAugmentation, QueryExpansion
from pyinstance.postprocess.multiscale import (
    REDUCTIONS,
    ScaleAggregation,
    multiscale_scores,
    multiscale_search,
)
from pyinstance.postprocess.pipeline import (
    FittedPostProcessing,
    PostProcessConfig,
    WhiteningConfig,
)
from pyinstance.postprocess.state import PostProcessing, from_dict
from pyinstance.postprocess.whitening import PCAWhitening

__all__ = [
    "REDUCTIONS",
    "DatabaseAugmentation",
    "FittedPostProcessing",
    "PCAWhitening",
    "PostProcessConfig",
    "PostProcessing",
    "QueryExpansion",
    "ScaleAggregation",
    "WhiteningConfig",
    "from_dict",
    "multiscale_scores",
    "multiscale_search",
]
