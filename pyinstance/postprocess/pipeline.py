"""Post-processing as an index applies it: a configuration, its fitted state, and both sides.

A :class:`PostProcessConfig` (JSON, stored in an index's recipe) chooses the steps, each
optional, applied in this order:

1. ``whiten``: PCA-whitening (or the learnt whitening from matching pairs) fitted on the
   collection's descriptors, or (``fit_on: separate``) fitted once on a separate set.
2. ``dba``: database-side augmentation of the references.
3. ``qe``: query expansion against the (augmented) references.
4. ``multiscale``: similarity-matrix scoring; each image keeps its ``S`` per-scale
   descriptors and a query's set is scored against a reference's set with ``reduction``.

``scale_weights`` (fixed weights, one per scale, or ``"learnt"`` from pairs of references
of one instance, refitted with the collection) comes first: each image keeps its ``S``
per-scale descriptors and they are summed with the weights into one
(:class:`~pyinstance.postprocess.ScaleAggregation`) before the steps above.

Descriptors go in as ``(N, P, D)`` sets (``P`` descriptors per image: 1, or the ``S``
scales with ``multiscale``) and come out as ``(N, P, D_out)``.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pyinstance.postprocess._arrays import as_float_array, check_float, check_int
from pyinstance.postprocess.expansion import DatabaseAugmentation, QueryExpansion
from pyinstance.postprocess.multiscale import REDUCTIONS, ScaleAggregation
from pyinstance.postprocess.whitening import PCAWhitening

#: Whitening methods: unsupervised PCA, or learnt from pairs of references of one instance.
WHITENING_METHODS = ("pca", "pairs")
#: What a whitening is fitted on: the collection's references (refitted with it), or a
#: separate set of images described at build (fitted once, kept).
WHITENING_SETS = ("references", "separate")
_STEPS = ("whiten", "dba", "qe", "multiscale", "scale_weights")
#: ``scale_weights`` value for weights learnt from the collection.
LEARNT = "learnt"


def _keys(data: Any, name: str, allowed: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(data, Mapping):
        raise ValueError(f"{name}: expected a dict, got {type(data).__name__}")
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise ValueError(
            f"{name}: unknown key(s) {', '.join(map(str, unknown))}; expected {', '.join(allowed)}"
        )
    return dict(data)


def _checked(name: str, check: Any, *args: Any) -> Any:
    """``check(*args)`` with its error prefixed by ``name`` (the config path)."""
    try:
        return check(*args)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name}.{error}") from None


@dataclass(frozen=True)
class WhiteningConfig:
    """How to fit the whitening: see :meth:`PCAWhitening.fit` / :meth:`PCAWhitening.fit_pairs`.

    Attributes:
        dim: output dimensions (None: as many as the collection allows, ``min(D, N - 1)``;
            a larger ``dim`` is cut to that when the collection is small).
        power: shrinkage in [0, 1] (1: full whitening, 0: rotation only); ``pca`` only.
        ridge: eigenvalue regularisation (``ridge × λ_max`` added); ``pca`` only.
        method: ``pca`` or ``pairs`` (pairs of references of the same instance).
        fit_on: ``references`` (refitted with the collection) or ``separate`` (``pca``
            fitted once on a separate set, see :meth:`fit_separate`; not refitted).
        min_references: None (always fitted; at least 2 references), or the fewest
            reference images the collection must hold for the whitening to be fitted on it
            (``references`` only, at least 2). With fewer, the whitening
            of ``N`` descriptors has at most ``N - 1`` directions, each fitted on too few
            samples, and it hurts more than it helps: it is skipped (descriptors pass
            unwhitened) and the reason is stored as the state
            (:attr:`FittedPostProcessing.whitening_skipped`). Every commit that changes
            the collection refits, so the whitening starts in the commit that brings the
            collection to ``min_references`` and stops when removals take it below.
    """

    dim: int | None = None
    power: float = 1.0
    ridge: float = 0.0
    method: str = "pca"
    fit_on: str = "references"
    min_references: int | None = None

    def __post_init__(self) -> None:
        if self.dim is not None:
            check_int(self.dim, "dim", 1)
        check_float(self.power, "power", 0.0, 1.0)
        check_float(self.ridge, "ridge", 0.0)
        if self.method not in WHITENING_METHODS:
            raise ValueError(f"method: expected one of {WHITENING_METHODS}, got {self.method!r}")
        if self.method == "pairs" and (self.power != 1.0 or self.ridge != 0.0):
            raise ValueError("method: 'pairs' whitening takes no power or ridge")
        if self.fit_on not in WHITENING_SETS:
            raise ValueError(f"fit_on: expected one of {WHITENING_SETS}, got {self.fit_on!r}")
        if self.fit_on == "separate" and self.method != "pca":
            raise ValueError("fit_on: a whitening fitted on a separate set takes method 'pca'")
        if self.min_references is not None:
            check_int(self.min_references, "min_references", 2)
        if self.fit_on == "separate" and self.min_references is not None:
            raise ValueError(
                "min_references: only for a whitening fitted on the references (fit_on "
                "'references')"
            )

    def skip_reason(self, images: int) -> str | None:
        """Why the whitening is not fitted on a collection of ``images`` reference images
        (None: it is fitted)."""
        if self.min_references is None or images >= self.min_references:
            return None
        return (
            f"whitening skipped: the collection holds {images} reference image(s), fewer "
            f"than min_references {self.min_references}; descriptors are not whitened until "
            "it holds that many"
        )

    def fit_separate(self, rows: Any, name: str = "whiten_from") -> PCAWhitening:
        """The ``pca`` whitening of a separate set's raw descriptors ``rows`` (``(M, D)``);
        ``dim`` is never cut: a set too small for it is an error naming ``name``."""
        rows = as_float_array(rows, name, 2, "(M, D)")
        n, d = rows.shape
        dim = min(d, n - 1) if self.dim is None else self.dim
        if n < 2 or n - 1 < dim:
            wanted = "at least 2 images" if n < 2 else f"at least {dim + 1} images for dim {dim}"
            raise ValueError(f"{name}: the whitening set needs {wanted}, got {n} described")
        return PCAWhitening.fit(rows, dim=dim, power=self.power, ridge=self.ridge)

    def fit(self, rows: np.ndarray, instances: Sequence[str]) -> PCAWhitening:
        """The whitening of ``rows`` (``(M, D)``), ``instances[i]`` the instance of row ``i``."""
        n, d = rows.shape
        if n < 2:
            raise ValueError(
                f"whitening: needs at least 2 reference descriptors to fit, the index would hold {n}"
            )
        if self.method == "pca":
            dim = None if self.dim is None else min(self.dim, d, n - 1)
            return PCAWhitening.fit(rows, dim=dim, power=self.power, ridge=self.ridge)
        query_idx, positive_idx = _same_instance_pairs(instances)
        if query_idx.size == 0:
            raise ValueError(
                "whitening: method 'pairs' needs an instance with at least 2 reference "
                "descriptors; every instance has one"
            )
        return PCAWhitening.fit_pairs(
            rows, query_idx, positive_idx, dim=None if self.dim is None else min(self.dim, d)
        )


def _same_instance_pairs(instances: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Every ordered pair ``(i, j)``, ``i != j``, of rows of the same instance."""
    by_instance: dict[str, list[int]] = {}
    for row, instance in enumerate(instances):
        by_instance.setdefault(instance, []).append(row)
    pairs = [(i, j) for rows in by_instance.values() for i in rows for j in rows if i != j]
    array = np.array(pairs, dtype=np.int64).reshape(-1, 2)
    return array[:, 0], array[:, 1]


@dataclass(frozen=True)
class PostProcessConfig:
    """Which post-processing an index applies (each step optional; see the module)."""

    whiten: WhiteningConfig | None = None
    dba: DatabaseAugmentation | None = None
    qe: QueryExpansion | None = None
    reduction: str | None = None
    scale_weights: tuple[float, ...] | str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.scale_weights, str) and self.scale_weights != LEARNT:
            raise ValueError(
                f"scale_weights: expected a list of weights (one per scale) or {LEARNT!r}, "
                f"got {self.scale_weights!r}"
            )
        if self.scale_weights is not None and not isinstance(self.scale_weights, str):
            weights = self.scale_weights
            if isinstance(weights, Mapping) or not isinstance(weights, Sequence):
                raise ValueError(
                    f"scale_weights: expected a list of weights (one per scale) or {LEARNT!r}, "
                    f"got {weights!r}"
                )
            if not all(isinstance(w, (int, float)) and not isinstance(w, bool) for w in weights):
                raise ValueError(f"scale_weights: expected numbers, got {list(weights)!r}")
            _checked("scale_weights", ScaleAggregation, np.asarray(weights, dtype=np.float64))
            object.__setattr__(self, "scale_weights", tuple(float(w) for w in weights))
        if self.reduction is not None and self.scale_weights is not None:
            raise ValueError(
                "scale_weights: sums the scales into one descriptor; it cannot be combined "
                "with multiscale similarity-matrix scoring"
            )
        if self.reduction is not None:
            if self.reduction not in REDUCTIONS:
                raise ValueError(
                    f"multiscale.reduction: expected one of {REDUCTIONS}, got {self.reduction!r}"
                )
            if self.dba is not None or self.qe is not None:
                raise ValueError(
                    "multiscale: similarity-matrix scoring keeps several descriptors per image; "
                    "it cannot be combined with dba or qe"
                )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PostProcessConfig:
        """Parse a recipe's ``postprocess`` dict; errors name the key at fault."""
        data = _keys(data, "postprocess", _STEPS)
        whiten = dba = qe = reduction = None
        weights = data.get("scale_weights")
        if data.get("whiten") is not None:
            values = _keys(
                data["whiten"],
                "postprocess.whiten",
                ("dim", "power", "ridge", "method", "fit_on", "min_references"),
            )
            whiten = _checked("postprocess.whiten", lambda: WhiteningConfig(**values))
        if data.get("dba") is not None:
            values = _keys(data["dba"], "postprocess.dba", ("k", "alpha"))
            dba = _checked("postprocess.dba", lambda: DatabaseAugmentation(**values))
        if data.get("qe") is not None:
            values = _keys(data["qe"], "postprocess.qe", ("k", "alpha"))
            qe = _checked("postprocess.qe", lambda: QueryExpansion(**values))
        if data.get("multiscale") is not None:
            values = _keys(data["multiscale"], "postprocess.multiscale", ("reduction",))
            if "reduction" not in values:
                raise ValueError("postprocess.multiscale: missing key reduction")
            reduction = values["reduction"]
        return _checked("postprocess", lambda: cls(whiten, dba, qe, reduction, weights))

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (steps that are off are left out)."""
        out: dict[str, Any] = {}
        if self.whiten is not None:
            w = self.whiten
            out["whiten"] = {"dim": w.dim, "power": w.power, "ridge": w.ridge, "method": w.method}
            if w.fit_on != "references":
                out["whiten"]["fit_on"] = w.fit_on
            if w.min_references is not None:
                out["whiten"]["min_references"] = w.min_references
        if self.dba is not None:
            out["dba"] = {"k": self.dba.k, "alpha": self.dba.alpha}
        if self.qe is not None:
            out["qe"] = {"k": self.qe.k, "alpha": self.qe.alpha}
        if self.reduction is not None:
            out["multiscale"] = {"reduction": self.reduction}
        if self.scale_weights is not None:
            w = self.scale_weights
            out["scale_weights"] = w if isinstance(w, str) else list(w)
        return out

    def __bool__(self) -> bool:
        return bool(self.to_dict())

    @property
    def learnt(self) -> bool:
        """Whether a step has state fitted on the collection (refitted when it changes)."""
        return self.learnt_whitening or self.scale_weights == LEARNT

    @property
    def learnt_whitening(self) -> bool:
        """Whether the whitening is fitted on the collection's references."""
        return self.whiten is not None and self.whiten.fit_on == "references"

    @property
    def separate_whitening(self) -> bool:
        """Whether the whitening was fitted once on a separate set (stored, not refitted)."""
        return self.whiten is not None and self.whiten.fit_on == "separate"

    def fit_aggregation(self, references: Any, instances: Sequence[str]) -> ScaleAggregation | None:
        """The scale weights (fixed, or learnt from the pairs of ``references`` of one
        instance) of ``(N, S, D)`` references; None without ``scale_weights``."""
        if self.scale_weights is None:
            return None
        if self.scale_weights != LEARNT:
            return ScaleAggregation(np.asarray(self.scale_weights))
        sets = _sets(references, instances)
        query_idx, positive_idx = _same_instance_pairs(instances)
        if query_idx.size == 0:
            raise ValueError(
                f"scale_weights: {LEARNT!r} needs an instance with at least 2 references; "
                "every instance has one"
            )
        return ScaleAggregation.fit_pairs(sets, query_idx, positive_idx)

    def fit(
        self,
        references: Any,
        instances: Sequence[str],
        aggregation: ScaleAggregation | None = None,
    ) -> FittedPostProcessing:
        """The state of this configuration fitted on ``references`` (``(N, P, D)``) whose
        ``instances[i]`` is the instance of image ``i`` (``aggregation``: the scale weights
        already fitted by :meth:`fit_aggregation`, else fitted here)."""
        sets = _sets(references, instances)
        if self.separate_whitening:
            raise ValueError("whiten: a whitening fitted on a separate set is not refitted")
        if aggregation is None:
            aggregation = self.fit_aggregation(sets, instances)
        if aggregation is not None:
            sets = aggregation.apply(sets)[:, None, :]
        whitening, skipped = None, None
        if self.whiten is not None:
            skipped = self.whiten.skip_reason(sets.shape[0])
        if self.whiten is not None and skipped is None:
            per_row = [instance for instance in instances for _ in range(sets.shape[1])]
            whitening = self.whiten.fit(sets.reshape(-1, sets.shape[2]), per_row)
        return FittedPostProcessing(self, whitening, aggregation, skipped)


def _sets(references: Any, instances: Sequence[str]) -> np.ndarray:
    sets = as_float_array(references, "references", 3, "(N, P, D)")
    if len(instances) != sets.shape[0]:
        raise ValueError(
            f"instances: expected {sets.shape[0]} ids (one per image), got {len(instances)}"
        )
    return sets


@dataclass(frozen=True, eq=False)
class FittedPostProcessing:
    """A configuration with its fitted state, applied to references and to queries.

    ``whitening_skipped``: why a configured whitening was not fitted (the collection was
    smaller than ``min_references``, see :class:`WhiteningConfig`); descriptors then pass
    unwhitened.
    """

    config: PostProcessConfig
    whitening: PCAWhitening | None = None
    aggregation: ScaleAggregation | None = None
    whitening_skipped: str | None = None

    def __post_init__(self) -> None:
        configured = self.config.whiten is not None
        given = (self.whitening is not None) + (self.whitening_skipped is not None)
        if given != (1 if configured else 0):
            raise ValueError(
                "whitening: expected a fitted whitening (or the reason it was skipped) exactly "
                "when configured"
            )
        weights = self.config.scale_weights
        if self.aggregation is None and weights is not None and weights != LEARNT:
            object.__setattr__(self, "aggregation", ScaleAggregation(np.asarray(weights)))
        if (self.aggregation is None) != (weights is None):
            raise ValueError("aggregation: expected scale weights exactly when configured")

    def _aggregate(self, sets: np.ndarray) -> np.ndarray:
        if self.aggregation is None:
            return sets
        return self.aggregation.apply(sets)[:, None, :]

    def _whiten(self, sets: np.ndarray) -> np.ndarray:
        if self.whitening is None:
            return sets
        n, p, d = sets.shape
        return self.whitening.apply(sets.reshape(n * p, d)).reshape(n, p, -1)

    def references(self, references: Any, *, threads: int | None = None) -> np.ndarray:
        """``(N, P, D)`` reference sets -> ``(N, P, D_out)``: summed over scales with the
        scale weights (``P`` -> 1), whitened, then augmented (DBA with ``k`` cut to ``N - 1``
        in a small collection)."""
        sets = as_float_array(references, "references", 3, "(N, P, D)")
        sets = self._whiten(self._aggregate(sets))
        dba = self.config.dba
        if dba is None or sets.shape[0] < 2:
            return sets
        step = DatabaseAugmentation(min(dba.k, sets.shape[0] - 1), dba.alpha)
        return step.apply(sets[:, 0], threads=threads)[:, None, :]

    def queries(
        self,
        queries: Any,
        references: np.ndarray,
        *,
        threads: int | None = None,
        scale_sets: bool = False,
    ) -> np.ndarray:
        """``(Q, R, D)`` query sets -> ``(Q, R, D_out)``: whitened, then each of the ``R``
        descriptors expanded with its top references (``references``: the output of
        :meth:`references`, ``(N, 1, D_out)``; ``k`` cut to ``N``). ``scale_sets``: the
        ``R`` descriptors are the scales, summed with the scale weights first (``R`` -> 1);
        else (e.g. window descriptors) they are left as they are."""
        sets = as_float_array(queries, "queries", 3, "(Q, R, D)")
        if scale_sets:
            sets = self._aggregate(sets)
        sets = self._whiten(sets)
        qe = self.config.qe
        if qe is None or references.shape[0] == 0:
            return sets
        n, r, d = sets.shape
        step = QueryExpansion(min(qe.k, references.shape[0]), qe.alpha)
        return step.apply(sets.reshape(n * r, d), references[:, 0], threads=threads).reshape(
            n, r, d
        )

    def state_bytes(self) -> bytes | None:
        """The learnt whitening (or the reason it was skipped) as bytes to store (None when
        nothing is learnt)."""
        if self.whitening_skipped is not None:
            return json.dumps({"skipped": self.whitening_skipped}).encode()
        return None if self.whitening is None else whitening_state(self.whitening)

    @classmethod
    def from_state(
        cls, config: PostProcessConfig, state: bytes | None, weights: bytes | None = None
    ) -> FittedPostProcessing:
        """Rebuild from :meth:`state_bytes` and :func:`scale_weights_state` (a damaged or
        missing state is a ``ValueError``)."""
        aggregation = None
        if config.scale_weights == LEARNT:
            if weights is None:
                raise ValueError("post-processing state: no learnt scale weights are stored")
            try:
                aggregation = ScaleAggregation.from_dict(json.loads(weights))
            except (KeyError, ValueError, TypeError) as error:
                raise ValueError(
                    f"post-processing state: damaged scale weights ({error})"
                ) from None
        if state is None:
            return cls(config, None, aggregation)
        skipped = whitening_skipped(state)
        if skipped is not None:
            if config.whiten is None:
                raise ValueError(
                    "post-processing state: a whitening is stored, the recipe has none"
                )
            return cls(config, None, aggregation, skipped)
        try:
            with np.load(io.BytesIO(state), allow_pickle=False) as stored:
                header = json.loads(str(stored["header"]))
                whitening = PCAWhitening(
                    stored["mean"],
                    stored["projection"],
                    header["method"],
                    header["power"],
                    header["ridge"],
                )
        except (OSError, KeyError, ValueError, TypeError) as error:
            raise ValueError(f"post-processing state: damaged ({error})") from error
        _check_matches(config, whitening)
        return cls(config, whitening, aggregation)


def _check_matches(config: PostProcessConfig, whitening: PCAWhitening) -> None:
    """A stored whitening made for another configuration is a ``ValueError``."""
    w = config.whiten
    if w is None:
        raise ValueError("post-processing state: a whitening is stored, the recipe has none")
    stored = (whitening.method, whitening.power, whitening.ridge)
    wanted = (w.method, w.power, w.ridge)
    exact_dim = w.dim is not None and w.fit_on == "separate"
    if stored != wanted or (exact_dim and whitening.projection.shape[1] != w.dim):
        raise ValueError(
            f"post-processing state: the stored whitening (method, power, ridge {stored}, "
            f"{whitening.projection.shape[1]} dims) is not the recipe's {w}"
        )


def whitening_state(whitening: PCAWhitening, fitted_on: Mapping[str, Any] | None = None) -> bytes:
    """A whitening as bytes to store (read back by :meth:`FittedPostProcessing.from_state`);
    ``fitted_on``: a JSON-able description of the set it was fitted on (see
    :func:`state_fitted_on`)."""
    w = whitening
    header = json.dumps(
        {"method": w.method, "power": w.power, "ridge": w.ridge, "fitted_on": fitted_on}
    )
    buffer = io.BytesIO()
    np.savez(buffer, header=np.array(header), mean=w.mean, projection=w.projection)
    return buffer.getvalue()


def scale_weights_state(aggregation: ScaleAggregation) -> bytes:
    """Learnt scale weights as bytes to store (read back by :meth:`FittedPostProcessing.from_state`)."""
    return json.dumps(aggregation.to_dict()).encode()


def whitening_skipped(state: bytes) -> str | None:
    """The reason stored instead of a whitening that was skipped (None: a whitening is
    stored; see :attr:`FittedPostProcessing.whitening_skipped`)."""
    if not state.startswith(b"{"):
        return None
    try:
        reason = json.loads(state)["skipped"]
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"post-processing state: damaged ({error})") from None
    if not isinstance(reason, str):
        raise ValueError(f"post-processing state: damaged (skipped: {reason!r})")
    return reason


def state_fitted_on(state: bytes) -> Any:
    """The ``fitted_on`` description stored with a state (None when none was given)."""
    try:
        with np.load(io.BytesIO(state), allow_pickle=False) as stored:
            return json.loads(str(stored["header"])).get("fitted_on")
    except (OSError, KeyError, ValueError, TypeError) as error:
        raise ValueError(f"post-processing state: damaged ({error})") from error
