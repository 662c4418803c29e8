"""Evaluate identification on an index with labelled query photos.

The queries are a manifest's ``split=query`` rows (``path,instance_id,split[,query_set]``;
an empty ``instance_id`` marks a photo of an object not in the collection) plus, optionally,
an extra CSV (``path,instance_ids,kind[,query_set]``: ``instance_ids`` separated by ``;``,
any of which is a right answer; ``kind`` ``not_in_collection`` marks an unknown object).
Paths are relative to their CSV's folder.

Each query runs through :class:`~pyinstance.identify.Identifier` (its answer, confidence,
top-k matches and timing) and, for the ranking metrics, is searched against *every*
reference of the index, so AP, mAP@R and R-precision are the full, untruncated ones.

Definitions chosen:

- A query's *truth* is the set of its instance ids that the index holds. An id that the
  index lacks is reported (one problem per row) and dropped from the set; a query left
  with none counts as **unknown** (its right answer is "unknown"), as the metrics define
  it (``n_relevant == 0``).
- The manifest is read by :class:`~pyinstance.data.Manifest` (unknown queries allowed,
  bad rows set aside). A file listed twice (also across the two CSVs) is evaluated once;
  each repeat is a problem. A row without a path, with a ``split`` other than
  ``reference``/``query`` or a path leading outside its folder is a problem and skipped.
  A missing column is an error (nothing can be evaluated).
- Besides ``groups`` (per ``query_set``), ``kinds`` holds the metrics per kind of query
  (``query`` for the manifest's rows, the extra CSV's ``kind`` for the others) and
  ``named_groups`` per named group of query sets (``groups=`` of :func:`evaluate`, e.g.
  the museum set's crops and gallery shots).
- A query that cannot be decoded (missing, corrupt, too small) is a problem, counted in
  ``failed_queries`` and left out of the metrics; the others are evaluated.
- ``recall_at_5`` is recall at ``min(5, references)``.
- ``ms_per_query`` is the mean of the Identifier's total (decode, extract, search,
  classify) per query; the full-ranking search (which reuses the Identifier's query
  descriptors) is not counted.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from pyinstance.data.images import ImageDecodeError
from pyinstance.data.manifest import Manifest, RowProblem, read_csv_rows
from pyinstance.eval.metrics import (
    count_relevant,
    hits_from_labels,
    identification_metrics,
    metrics_by_group,
)
from pyinstance.eval.objects import object_metrics
from pyinstance.identification import DEFAULT_CLASSIFIER, Identifier, Match
from pyinstance.index import InstanceIndex
from pyinstance.objects import DetectedObject

EXTRA_COLUMNS = ("path", "instance_ids", "kind")
#: ``kind`` of an extra row whose object is not in the collection.
UNKNOWN_KIND = "not_in_collection"
#: ``kind`` of the manifest's query rows in the ``kinds`` breakdown.
MANIFEST_KIND = "query"
#: The metrics of every group, in table order (the JSON holds more).
SUMMARY_KEYS = (
    "queries",
    "p_at_1",
    "map",
    "map_at_r",
    "micro_ap",
    "recall_at_5",
    "auroc_unknown",
    "far",
    "frr",
    "ms_per_query",
)
_RECALL_K = 5


@dataclass(frozen=True)
class QuerySpec:
    """One labelled query photo, as read from a CSV.

    Attributes:
        path: the photo.
        instance_ids: the right answers (any of them); empty: an unknown object.
        query_set: its group, or None.
        kind: the extra CSV's ``kind`` (None for manifest rows).
        row: ``file:line`` where it was read.
    """

    path: Path
    instance_ids: tuple[str, ...]
    query_set: str | None
    kind: str | None
    row: str


#: A row that was skipped or only partly used, and why.
Problem = RowProblem


@dataclass(frozen=True)
class QueryOutcome:
    """What identification answered for one query.

    ``truth`` holds the query's instance ids that the index holds (empty: unknown);
    ``correct`` is True when the answer is one of them, or when an unknown query was
    answered "unknown" (``answer`` None).
    """

    spec: QuerySpec
    truth: tuple[str, ...]
    answer: str | None
    confidence: float
    top_k: tuple[Match, ...]
    ms: float
    objects: tuple[DetectedObject, ...] | None = None

    @property
    def known(self) -> bool:
        return bool(self.truth)

    @property
    def correct(self) -> bool:
        return self.answer in self.truth if self.known else self.answer is None

    @property
    def verdict(self) -> str:
        """``right``, ``wrong`` (a wrong instance, or any instance for an unknown query) or
        ``rejected`` (a known query answered "unknown")."""
        if self.correct:
            return "right"
        return "rejected" if self.answer is None else "wrong"

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.spec.path),
            "row": self.spec.row,
            "query_set": self.spec.query_set,
            "kind": self.spec.kind,
            "truth": list(self.truth),
            "answer": self.answer,
            "confidence": self.confidence,
            "verdict": self.verdict,
            "top_k": [
                {"instance": m.instance, "score": m.score, "image": m.image_path}
                for m in self.top_k
            ],
            "ms": self.ms,
            **({} if self.objects is None else {"objects": [f.to_dict() for f in self.objects]}),
        }


@dataclass
class EvaluationResult:
    """The metrics (overall and ``groups`` per ``query_set``), each query's outcome, the
    problems met, and the set-up that was measured."""

    metrics: dict[str, Any]
    outcomes: list[QueryOutcome]
    problems: list[Problem]
    failed_queries: int
    index: str
    recipe: dict[str, Any]
    classifier: str
    threshold: float | None
    reranker: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: undefined metrics (NaN) become None."""
        return _nan_to_none(
            {
                **self.metrics,
                "failed_queries": self.failed_queries,
                "index": self.index,
                "recipe": self.recipe,
                "classifier": self.classifier,
                "threshold": self.threshold,
                "reranker": self.reranker,
                "problems": [str(p) for p in self.problems],
                "per_query": [o.to_dict() for o in self.outcomes],
            }
        )


def _nan_to_none(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_nan_to_none(v) for v in value]
    return value


# --------------------------------------------------------------------------- reading


def _query_set(value: str) -> str | None:
    return None if value in ("", "-") else value


def read_queries(
    manifest: str | os.PathLike[str], extra: str | os.PathLike[str] | None = None
) -> tuple[list[QuerySpec], list[Problem]]:
    """The labelled queries of ``manifest`` (its ``split=query`` rows) and ``extra``, and the
    rows that were skipped. Raises ``ValueError`` for a missing column, and when there is no
    query at all."""
    specs: list[QuerySpec] = []
    problems: list[Problem] = []
    seen: dict[Path, str] = {}

    def add(spec: QuerySpec) -> None:
        key = spec.path.resolve()
        if key in seen:
            problems.append(Problem(spec.row, f"duplicate query {str(spec.path)!r} (first at "
                                    f"{seen[key]}); evaluated once"))  # fmt: skip
            return
        seen[key] = spec.row
        specs.append(spec)

    manifest = Path(manifest)
    rows = Manifest.read(manifest, check_files=False, unknown_queries=True, skip_bad_rows=True)
    problems.extend(rows.skipped)
    for entry in rows.filter(split="query"):
        ids = () if entry.instance_id is None else (entry.instance_id,)
        add(QuerySpec(entry.path, ids, entry.query_set, None, entry.row or str(manifest)))
    if extra is not None:
        extra = Path(extra)
        for line, row in read_csv_rows(extra, "extra", EXTRA_COLUMNS, ("query_set",)):
            where = f"{extra}:{line}"
            if not row.get("path"):
                problems.append(Problem(where, "empty path"))
                continue
            kind = row.get("kind") or None
            ids = () if kind == UNKNOWN_KIND else _split_ids(row.get("instance_ids", ""))
            add(
                QuerySpec(
                    extra.parent / row["path"],
                    ids,
                    _query_set(row.get("query_set", "")),
                    kind,
                    where,
                )
            )
    if not specs:
        raise ValueError(f"manifest: no query rows in {str(manifest)!r}" + (
            f" or {str(extra)!r}" if extra is not None else ""))  # fmt: skip
    return specs, problems


def _split_ids(value: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(part.strip() for part in value.split(";") if part.strip()))


# --------------------------------------------------------------------------- evaluating


def evaluate(
    index: InstanceIndex,
    manifest: str | os.PathLike[str],
    extra: str | os.PathLike[str] | None = None,
    *,
    classifier: str | Any | None = None,
    classifier_options: dict[str, Any] | None = None,
    threshold: float | None = None,
    top_k: int = 5,
    groups: Mapping[str, Sequence[str]] | None = None,
    progress: bool = False,
    multi: bool = False,
    reranker: Any = None,
) -> EvaluationResult:
    """Identify every labelled query of ``manifest`` (and ``extra``) and measure the answers.

    Args:
        index: an open index.
        manifest: the collection's manifest CSV (its ``split=query`` rows are the queries).
        extra: an optional CSV of more queries (``path,instance_ids,kind[,query_set]``).
        classifier, classifier_options, threshold, top_k: as for
            :class:`~pyinstance.identify.Identifier`.
        groups: named groups of query sets, each measured apart (``named_groups``), e.g.
            ``{"crop": ["qsd1_w1", "qsd1_w3"], "gallery": ["qsd2_w2", "qsd2_w3", "qsd1_w4"]}``.
        progress: show a progress bar over the queries.
        multi: also find every object in each photo and measure those answers
            (``metrics["objects"]``, see :mod:`pyinstance.eval.objects`).
        reranker: a verification re-ranker, as for the Identifier (default: the index's
            stored one; ``False``: none). Its order of the first ``k`` references also
            ranks them for the ranking metrics (P@k, AP).

    Returns:
        the metrics (:data:`SUMMARY_KEYS` and more, overall and per ``query_set`` in
        ``groups``), every query's outcome and the problems met (see the module's
        docstring for what counts as a problem).
    """
    if not isinstance(index, InstanceIndex):
        raise TypeError(f"index: expected an InstanceIndex, got {type(index).__name__}")
    named = _check_groups(groups)
    specs, problems = read_queries(manifest, extra)
    identifier = Identifier(
        index,
        classifier=classifier,
        classifier_options=classifier_options,
        threshold=threshold,
        top_k=top_k,
        multi=multi,
        reranker=reranker,
    )
    held = set(index.instances)
    code_of = {name: code for code, name in enumerate(index.instances)}
    n_refs = len(index)
    outcomes: list[QueryOutcome] = []
    ranked: list[np.ndarray] = []
    failed = 0
    for spec in tqdm(specs, desc="evaluate", unit="query", disable=not progress):
        missing = [i for i in spec.instance_ids if i not in held]
        if missing:
            problems.append(
                Problem(
                    spec.row,
                    f"instance id(s) {', '.join(missing)} not in the index"
                    + ("" if len(missing) < len(spec.instance_ids) else "; counted as unknown"),
                )
            )
        try:
            ((answer, described),) = identifier.identify_described([spec.path])
            neighbours = index.search(described[None], n_refs)
            if identifier.reranking is not None:
                neighbours = identifier.reranking.reorder(described[None], neighbours)
        except (ImageDecodeError, OSError, ValueError) as error:
            failed += 1
            problems.append(Problem(spec.row, f"not evaluated: {error}"))
            continue
        truth = tuple(i for i in spec.instance_ids if i in held)
        outcomes.append(
            QueryOutcome(
                spec,
                truth,
                answer.instance,
                answer.confidence,
                answer.top_k,
                answer.ms["total"],
                answer.objects,
            )
        )
        ranked.append(neighbours.labels[0])
    if not outcomes:
        raise ValueError(f"manifest: none of the {len(specs)} queries could be evaluated")
    metrics = _metrics(outcomes, np.stack(ranked), index.labels(), code_of, n_refs, named)
    if multi:
        metrics["objects"] = object_metrics(outcomes)
    if classifier is None:
        classifier = index.get_setting("classifier") or DEFAULT_CLASSIFIER
    return EvaluationResult(
        metrics=metrics,
        outcomes=outcomes,
        problems=problems,
        failed_queries=failed,
        index=str(index.path),
        recipe=index.recipe.to_dict(),
        classifier=classifier if isinstance(classifier, str) else type(classifier).__name__,
        threshold=identifier.threshold,
        reranker=identifier.reranker_name,
    )


def summary_rows(metrics: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    """The rows of a summary table: overall, each query set, each named group, each kind."""
    return [
        ("all", metrics),
        *sorted(metrics.get("groups", {}).items()),
        *metrics.get("named_groups", {}).items(),
        *((f"kind {kind}", values) for kind, values in sorted(metrics.get("kinds", {}).items())),
    ]


def _check_groups(groups: Mapping[str, Sequence[str]] | None) -> dict[str, frozenset[str]]:
    if groups is None:
        return {}
    if not isinstance(groups, Mapping):
        raise TypeError(f"groups: expected a dict name -> query sets, got {type(groups).__name__}")
    named = {}
    for name, sets in groups.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"groups: expected non-empty str names, got {name!r}")
        if isinstance(sets, str) or not all(isinstance(q, str) and q for q in sets) or not sets:
            raise ValueError(f"groups[{name!r}]: expected a list of query set names, got {sets!r}")
        named[name] = frozenset(sets)
    return named


def _metrics(
    outcomes: list[QueryOutcome],
    ranked_labels: np.ndarray,
    reference_labels: np.ndarray,
    code_of: dict[str, int],
    n_refs: int,
    named: dict[str, frozenset[str]],
) -> dict[str, Any]:
    truth = [frozenset(code_of[i] for i in o.truth) for o in outcomes]
    hits = hits_from_labels(ranked_labels, truth)
    n_relevant = count_relevant(truth, reference_labels)
    recall_k = min(_RECALL_K, n_refs)
    ks = (1,) if recall_k == 1 else (1, recall_k)

    def compute(ms: np.ndarray, **arrays: np.ndarray) -> dict[str, Any]:
        out = identification_metrics(**arrays, ks=ks)
        out["recall_at_5"] = out.pop(f"recall_at_{recall_k}")
        if recall_k != 1:
            out.pop(f"p_at_{recall_k}")
        out["ms_per_query"] = float(ms.mean())
        return out

    per_query = {
        "ms": np.array([o.ms for o in outcomes]),
        "hits": hits,
        "n_relevant": n_relevant,
        "correct": np.array([o.known and o.correct for o in outcomes]),
        "confidence": np.array([o.confidence for o in outcomes]),
        "accepted": np.array([o.answer is not None for o in outcomes]),
    }
    metrics = metrics_by_group([o.spec.query_set for o in outcomes], compute, **per_query)
    kinds = [o.spec.kind or MANIFEST_KIND for o in outcomes]
    metrics["kinds"] = metrics_by_group(kinds, compute, **per_query)["groups"]
    metrics["named_groups"] = {}
    for name, sets in named.items():
        members = [name if o.spec.query_set in sets else None for o in outcomes]
        if any(members):
            metrics["named_groups"][name] = metrics_by_group(members, compute, **per_query)[
                "groups"
            ][name]
    return metrics
