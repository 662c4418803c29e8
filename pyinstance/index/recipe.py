"""The recipe of an index: everything that decides what a descriptor means.

Two descriptors can be compared only when the same recipe made them; an index stores its
recipe and refuses descriptors of another one.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from pyinstance.models.regions import check_windows
from pyinstance.postprocess import PostProcessConfig

#: Storage dtypes of descriptors.
DTYPES = ("float32", "float16", "bfloat16")

_SHA256 = re.compile(r"[0-9a-f]{64}")


def _version() -> str:
    from pyinstance import __version__

    return __version__


@dataclass(frozen=True)
class Recipe:
    """How the descriptors of an index are made (and how queries must be made).

    Attributes:
        backbone: registered backbone name (resolved by :class:`~pyinstance.index.Describer`).
        weights_sha256: sha256 of the backbone's and head's state-dict bytes, or ``None``
            when not pinned (an index filled only from descriptors); a Describer refuses
            weights that differ from a pinned hash.
        head: registered pooling head name.
        head_params: keyword arguments of the head (JSON values).
        backbone_params: keyword arguments of the backbone (JSON values).
        scales: factors of ``max_side`` for references (aggregated by mean when several).
        max_side: longest image side in pixels at scale 1.
        query_max_side: longest side of query photos (one scale), when it differs from
            ``max_side``: a query photo often shows the object smaller than a reference
            does, so describing it larger compensates. ``None``: queries are described
            exactly as references (every scale, averaged; ``index build --query-max-side
            same``).
        query_windows: ``None``, or a window layout (``(fraction, count)`` pairs, see
            :mod:`pyinstance.models.regions`): each query then gets one descriptor per
            window from one backbone pass at the query side.
        postprocess: which post-processing the index applies to references and queries
            (a :class:`~pyinstance.postprocess.PostProcessConfig` as JSON: ``whiten``,
            ``dba``, ``qe``, ``multiscale``, ``scale_weights``); the fitted state lives in the index, refitted
            in the commit of every change of the collection. Stored descriptors stay raw.
        dim: descriptor dimension D.
        dtype: storage dtype, one of ``float32``, ``float16``, ``bfloat16``.
        model: absolute path of a trained model file (``pyinstance train``) whose weights
            replace the backbone's and head's after they are built; ``None``: as built.
        pyinstance_version: the version that wrote the recipe (informative; not compared).
    """

    backbone: str
    head: str
    dim: int
    weights_sha256: str | None = None
    head_params: Mapping[str, Any] = field(default_factory=dict)
    backbone_params: Mapping[str, Any] = field(default_factory=dict)
    scales: tuple[float, ...] = (1.0,)
    max_side: int = 448
    query_max_side: int | None = None
    query_windows: tuple[tuple[float, int], ...] | None = None
    postprocess: Mapping[str, Any] = field(default_factory=dict)
    dtype: str = "float32"
    model: str | None = None
    pyinstance_version: str = field(default_factory=_version)

    def __post_init__(self) -> None:
        for name in ("backbone", "head"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ValueError(f"recipe.{name}: expected a non-empty name, got {value!r}")
        if self.weights_sha256 is not None and (
            not isinstance(self.weights_sha256, str) or not _SHA256.fullmatch(self.weights_sha256)
        ):
            raise ValueError(
                f"recipe.weights_sha256: expected None or 64 lowercase hex digits, got "
                f"{self.weights_sha256!r}"
            )
        for name in ("head_params", "backbone_params", "postprocess"):
            value = getattr(self, name)
            if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
                raise ValueError(f"recipe.{name}: expected a dict with str keys, got {value!r}")
            try:
                json.dumps(dict(value), allow_nan=False)
            except (TypeError, ValueError) as error:
                raise ValueError(f"recipe.{name}: not JSON-serialisable: {error}") from error
            object.__setattr__(self, name, dict(value))
        try:
            config = PostProcessConfig.from_dict(self.postprocess)
        except ValueError as error:
            raise ValueError(f"recipe.{error}") from error
        object.__setattr__(self, "postprocess", config.to_dict())
        if isinstance(self.scales, (int, float)) or not isinstance(self.scales, Sequence):
            raise ValueError(f"recipe.scales: expected a sequence of numbers, got {self.scales!r}")
        scales = tuple(self.scales)
        if not scales or not all(
            isinstance(s, (int, float)) and not isinstance(s, bool) and math.isfinite(s) and s > 0
            for s in scales
        ):
            raise ValueError(
                f"recipe.scales: expected a non-empty sequence of positive numbers, got {scales!r}"
            )
        object.__setattr__(self, "scales", tuple(float(s) for s in scales))
        weights = config.scale_weights
        if weights is not None and (
            len(scales) < 2 or (weights != "learnt" and len(weights) != len(scales))
        ):
            raise ValueError(
                f"recipe.postprocess.scale_weights: expected one weight per scale of at least "
                f"2 scales, got {weights!r} for scales {self.scales!r}"
            )
        for name in ("max_side", "dim", "query_max_side"):
            value = getattr(self, name)
            if name == "query_max_side" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"recipe.{name}: expected a positive int, got {value!r}")
        if self.query_windows is not None:
            try:
                windows = check_windows(self.query_windows)
            except ValueError as error:
                raise ValueError(f"recipe.query_{error}") from error
            object.__setattr__(self, "query_windows", windows)
        if self.dtype not in DTYPES:
            raise ValueError(
                f"recipe.dtype: expected one of {', '.join(DTYPES)}, got {self.dtype!r}"
            )
        if self.model is not None and (not isinstance(self.model, str) or not self.model):
            raise ValueError(
                f"recipe.model: expected None or a model file path, got {self.model!r}"
            )
        if not isinstance(self.pyinstance_version, str):
            raise ValueError(
                f"recipe.pyinstance_version: expected a str, got {self.pyinstance_version!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (tuples become lists)."""
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, allow_nan=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Recipe:
        """The recipe of :meth:`to_dict`; unknown or missing keys are a clear error."""
        if not isinstance(data, Mapping):
            raise ValueError(f"recipe: expected a dict, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"recipe: unknown field(s) {', '.join(unknown)}")
        values = dict(data)
        if values.get("query_windows") is not None:
            values["query_windows"] = tuple(tuple(w) for w in values["query_windows"])
        if "scales" in values and isinstance(values["scales"], list):
            values["scales"] = tuple(values["scales"])
        try:
            return cls(**values)
        except TypeError as error:
            raise ValueError(f"recipe: {error}") from error

    @classmethod
    def from_json(cls, text: str) -> Recipe:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"recipe: not valid JSON: {error}") from error
        return cls.from_dict(data)

    def same_descriptors(self, other: Recipe) -> bool:
        """Whether descriptors of ``other`` are comparable with ours (version ignored)."""
        mine = self.to_dict()
        theirs = other.to_dict()
        mine.pop("pyinstance_version")
        theirs.pop("pyinstance_version")
        return mine == theirs

    def describe(self) -> str:
        """A one-line summary for messages."""
        windows = "" if self.query_windows is None else f", windows {list(self.query_windows)}"
        sha = (self.weights_sha256 or "unpinned")[:12]
        params = f"({json.dumps(dict(self.head_params))})" if self.head_params else ""
        return (
            f"{self.backbone} (weights {sha}) + {self.head}{params}, scales {list(self.scales)}, "
            f"max_side {self.max_side}"
            + (f", queries at {self.query_max_side}" if self.query_max_side else "")
            + f"{windows}, D={self.dim} {self.dtype}"
            + (f", postprocess {json.dumps(self.postprocess)}" if self.postprocess else "")
            + (f", trained model {self.model}" if self.model else "")
        )

    @property
    def postprocessing(self) -> PostProcessConfig:
        """The post-processing configuration (``postprocess`` parsed)."""
        return PostProcessConfig.from_dict(self.postprocess)

    @property
    def descriptors_per_image(self) -> int:
        """Descriptors stored per reference image: one per scale with similarity-matrix
        scoring (``postprocess["multiscale"]``) or weighted scales
        (``postprocess["scale_weights"]``), else 1 (the scales' mean)."""
        kept = "multiscale" in self.postprocess or "scale_weights" in self.postprocess
        return len(self.scales) if kept else 1

    @property
    def query_side(self) -> int:
        """The longest side query photos are described at."""
        return self.query_max_side or self.max_side

    def with_(self, **changes: Any) -> Recipe:
        """A copy with ``changes`` (validated)."""
        return replace(self, **changes)


#: The fewest references the default recipe fits its whitening on. On random
#: sub-collections of the museum set (``benchmarks/whitening_size.py``, 30 draws per size,
#: results in ``benchmarks/results/whitening_size.md``) the whitening lowered P@1 with 64
#: references or fewer and raised it from 96 on; below, the collection is searched
#: unwhitened (and the reason is stored in the index, see ``pyinstance index info``).
WHITEN_MIN_REFERENCES = 96

#: The recipe used when none is given: the best row without training of the comparison
#: table on the museum set (``benchmarks/results/quality.md``). Lite0 + MAC; references and
#: queries described alike at 448 px and at 1/√2 and 1/2 of it, the three averaged; then
#: PCA-whitening fitted on the collection's own references once it holds
#: :data:`WHITEN_MIN_REFERENCES` of them (refitted in every commit that changes it). MAC
#: rather than GeM: with 3 scales and whitening it is ahead on Lite0 and Lite1 (one gallery
#: shot each) and one behind on Lite2; the torch run of the table had it ahead or equal on
#: all three. DBA, one gallery shot more on Lite0, is left out: it lowers AUROC (unknowns).
DEFAULT_RECIPE = Recipe(
    backbone="efficientnet_lite0",
    head="mac",
    dim=1280,
    scales=(1.0, 2**-0.5, 0.5),
    max_side=448,
    postprocess={"whiten": {"min_references": WHITEN_MIN_REFERENCES}},
)
