"""Retrieval, identification and open-set metrics: plain functions on numpy arrays.

The ranking metrics read a ``hits`` matrix: ``hits[i, j]`` is True when the ``j``-th ranked
reference of query ``i`` shows the query's instance (build it with
:func:`hits_from_labels`), and ``n_relevant[i]``, the number of references of that
instance in the collection (:func:`count_relevant`). A query with ``n_relevant == 0`` is
*unknown* (its object is not in the collection): per-query ranking values are NaN for it
and the means skip it, as pytorch-metric-learning's ``AccuracyCalculator`` skips "lone"
queries. The identification metrics read one answer per query: ``correct`` (the answered
instance is right), ``confidence`` and ``accepted`` (False: the query was answered
"unknown").

A metric that the data leave undefined (no known query for a mean, no unknown query for
the AUROC) is NaN; malformed input (wrong shape or dtype, NaN, no queries) raises an
error that names the argument.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "average_precision",
    "average_precision_at_r",
    "count_relevant",
    "hits_from_labels",
    "identification_metrics",
    "mean_precision_at_1",
    "metrics_by_group",
    "micro_average_precision",
    "open_set_auroc",
    "open_set_rates",
    "precision_at_k",
    "r_precision",
    "rates_at_threshold",
    "recall_at_k",
    "triplet_accuracy",
]


# --------------------------------------------------------------------------- validation


def _as_array(value: Any, name: str) -> np.ndarray:
    if isinstance(value, (str, bytes)) or value is None:
        raise TypeError(f"{name}: expected an array, got {type(value).__name__}")
    try:
        return np.asarray(value)
    except (TypeError, ValueError) as error:  # ragged nested sequences
        raise TypeError(f"{name}: expected a rectangular array ({error})") from None


def _check_ndim(array: np.ndarray, name: str, ndim: int, what: str) -> None:
    if array.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-D {what} array, got shape {array.shape}")


def _bool_array(value: Any, name: str, ndim: int, what: str) -> np.ndarray:
    array = _as_array(value, name)
    _check_ndim(array, name, ndim, what)
    if array.size == 0:  # np.asarray([]) is float64
        return array.astype(bool)
    if array.dtype != np.bool_:
        raise TypeError(f"{name}: expected a boolean array, got dtype {array.dtype}")
    return array


def _float_array(
    value: Any, name: str, ndim: int, what: str, *, finite: bool = False
) -> np.ndarray:
    array = _as_array(value, name)
    _check_ndim(array, name, ndim, what)
    if array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.number):
        raise TypeError(f"{name}: expected a real-valued array, got dtype {array.dtype}")
    if np.iscomplexobj(array):
        raise TypeError(f"{name}: expected a real-valued array, got dtype {array.dtype}")
    array = array.astype(np.float64, copy=False)
    if np.isnan(array).any():
        raise ValueError(f"{name}: contains NaN")
    if finite and not np.isfinite(array).all():
        raise ValueError(f"{name}: contains infinite values")
    return array


def _count_array(value: Any, name: str) -> np.ndarray:
    array = _as_array(value, name)
    _check_ndim(array, name, 1, "(Q,) integer")
    if array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"{name}: expected an integer array, got dtype {array.dtype}")
    if (array < 0).any():
        raise ValueError(f"{name}: expected non-negative counts, got {int(array.min())}")
    return array.astype(np.int64, copy=False)


def _nonempty(length: int, name: str) -> None:
    if length == 0:
        raise ValueError(f"{name}: expected at least one query, got none")


def _same_length(reference: str, length: int, **arrays: np.ndarray) -> None:
    for name, array in arrays.items():
        if array.shape[0] != length:
            raise ValueError(
                f"{name}: expected {length} entries (one per query, like {reference}), "
                f"got {array.shape[0]}"
            )


def _hits(hits: Any) -> np.ndarray:
    array = _bool_array(hits, "hits", 2, "(Q, K) boolean")
    _nonempty(array.shape[0], "hits")
    if array.shape[1] == 0:
        raise ValueError("hits: expected K >= 1 ranked references per query, got 0")
    return array


def _hits_and_counts(hits: Any, n_relevant: Any) -> tuple[np.ndarray, np.ndarray]:
    hits = _hits(hits)
    counts = _count_array(n_relevant, "n_relevant")
    _same_length("hits", hits.shape[0], n_relevant=counts)
    found = hits.sum(axis=1)
    bad = np.flatnonzero(found > counts)
    if bad.size:
        i = int(bad[0])
        raise ValueError(
            f"n_relevant: query {i} has {int(found[i])} relevant references among its ranked "
            f"ones but n_relevant says {int(counts[i])}"
        )
    return hits, counts


def _check_k(k: Any, n_ranked: int) -> int:
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise TypeError(f"k: expected an integer, got {type(k).__name__}")
    if not 1 <= k <= n_ranked:
        raise ValueError(f"k: expected 1 <= k <= K={n_ranked} (ranked references), got {k}")
    return int(k)


# --------------------------------------------------------------------------- relevance


def _is_label_set(label: Any) -> bool:
    return isinstance(label, Collection) and not isinstance(label, (str, bytes))


def _label_sets(query_labels: Any) -> list[frozenset[Any]] | np.ndarray:
    """A plain 1-D label array, or one frozenset of acceptable labels per query."""
    if isinstance(query_labels, np.ndarray) and query_labels.dtype != object:
        _check_ndim(query_labels, "query_labels", 1, "(Q,)")
        return query_labels
    if isinstance(query_labels, (str, bytes)) or not isinstance(
        query_labels, Sequence | np.ndarray
    ):
        raise TypeError(
            f"query_labels: expected a sequence of labels, got {type(query_labels).__name__}"
        )
    if not any(_is_label_set(label) for label in query_labels):
        array = np.asarray(query_labels)
        if array.ndim == 1 and array.dtype != object:
            return array
    return [
        frozenset(label) if _is_label_set(label) else frozenset([label]) for label in query_labels
    ]


def _no_label(values: np.ndarray) -> np.ndarray:
    """Entries that never match: negative integers (padding) and None."""
    if np.issubdtype(values.dtype, np.integer):
        return values < 0
    if values.dtype == object:
        return np.array([value is None for value in values.ravel()], dtype=bool).reshape(
            values.shape
        )
    return np.zeros(values.shape, dtype=bool)


def _relevance(query_labels: Any, candidates: np.ndarray, name: str, per_query: bool) -> np.ndarray:
    labels = _label_sets(query_labels)
    n_queries = len(labels)
    if per_query and candidates.shape[0] != n_queries:
        raise ValueError(
            f"{name}: expected {n_queries} rows (one per query, like query_labels), "
            f"got {candidates.shape[0]}"
        )
    valid = ~_no_label(candidates)
    valid_rows = valid if per_query else valid[None, :]
    if isinstance(labels, np.ndarray):
        rows = candidates if per_query else candidates[None, :]
        with np.errstate(all="ignore"):
            equal = np.asarray(rows == labels[:, None])
        if equal.shape != (n_queries, candidates.shape[-1]):
            raise TypeError(
                f"{name}: labels of dtype {candidates.dtype} cannot be compared "
                f"with query_labels of dtype {labels.dtype}"
            )
        return equal & valid_rows & ~_no_label(labels)[:, None]
    out = np.zeros((n_queries, candidates.shape[-1]), dtype=bool)
    for i, accepted in enumerate(labels):
        accepted = [label for label in accepted if label is not None]
        if accepted:
            out[i] = np.isin(candidates[i] if per_query else candidates, np.asarray(accepted))
    return out & valid_rows


def hits_from_labels(ranked_labels: Any, query_labels: Any) -> np.ndarray:
    """``(Q, K)`` booleans: the ``j``-th ranked reference of query ``i`` is relevant.

    Args:
        ranked_labels: ``(Q, K)`` labels of each query's ranked references, best first.
        query_labels: ``Q`` labels; an entry may be a set (or list/tuple) of labels, any of
            which is right (a photo of several objects). Negative integer labels and None
            never match (padding, unknown queries).
    """
    ranked = _as_array(ranked_labels, "ranked_labels")
    _check_ndim(ranked, "ranked_labels", 2, "(Q, K) label")
    _nonempty(ranked.shape[0], "ranked_labels")
    return _relevance(query_labels, ranked, "ranked_labels", per_query=True)


def count_relevant(query_labels: Any, reference_labels: Any) -> np.ndarray:
    """``Q`` int64: how many references carry (one of) each query's label(s)."""
    references = _as_array(reference_labels, "reference_labels")
    _check_ndim(references, "reference_labels", 1, "(N,) label")
    if references.shape[0] == 0:
        raise ValueError("reference_labels: expected at least one reference, got none")
    if len(query_labels) == 0:
        raise ValueError("query_labels: expected at least one query, got none")
    return _relevance(query_labels, references, "reference_labels", per_query=False).sum(
        axis=1, dtype=np.int64
    )


# --------------------------------------------------------------------------- ranking


def precision_at_k(hits: Any, k: int) -> np.ndarray:
    """Per query: the share of relevant references among the top ``k``."""
    hits = _hits(hits)
    k = _check_k(k, hits.shape[1])
    return hits[:, :k].sum(axis=1) / k


def recall_at_k(hits: Any, k: int) -> np.ndarray:
    """Per query: 1.0 when a relevant reference is among the top ``k``, else 0.0.

    This is the deep-metric-learning "Recall@K" (Song et al. 2016): the share of queries
    answered within ``k`` guesses, not the share of relevant references retrieved.
    """
    hits = _hits(hits)
    k = _check_k(k, hits.shape[1])
    return hits[:, :k].any(axis=1).astype(np.float64)


def _precisions(hits: np.ndarray) -> np.ndarray:
    ranks = np.arange(1, hits.shape[1] + 1, dtype=np.float64)
    return np.cumsum(hits, axis=1) / ranks


def _per_known(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    out = np.full(counts.shape, np.nan)
    known = counts > 0
    out[known] = values[known] / counts[known]
    return out


def average_precision(hits: Any, n_relevant: Any) -> np.ndarray:
    """Per query: the mean of the precisions at the ranks of its relevant references.

    Relevant references ranked beyond ``K`` count as precision 0 (AP truncated at K, as
    pytorch-metric-learning's ``mean_average_precision`` with ``k=K``); pass every
    reference's rank for the full AP. NaN for unknown queries (``n_relevant == 0``).
    """
    hits, counts = _hits_and_counts(hits, n_relevant)
    return _per_known((_precisions(hits) * hits).sum(axis=1), counts)


def _within_r(hits: np.ndarray, counts: np.ndarray, metric: str) -> np.ndarray:
    if counts.max() > hits.shape[1]:
        raise ValueError(
            f"hits: {metric} needs the top R ranks of every query, R being its n_relevant; "
            f"got K={hits.shape[1]} ranks but R up to {int(counts.max())}"
        )
    return np.arange(hits.shape[1])[None, :] < counts[:, None]


def average_precision_at_r(hits: Any, n_relevant: Any) -> np.ndarray:
    """Per query: MAP@R (Musgrave et al. 2020), AP over the first R ranks divided by R.

    R is the query's ``n_relevant``; as in pytorch-metric-learning's
    ``AccuracyCalculator``. NaN for unknown queries.
    """
    hits, counts = _hits_and_counts(hits, n_relevant)
    within = _within_r(hits, counts, "mAP@R")
    return _per_known((_precisions(hits) * (hits & within)).sum(axis=1), counts)


def r_precision(hits: Any, n_relevant: Any) -> np.ndarray:
    """Per query: the share of relevant references among the first R ranks (R = n_relevant).

    NaN for unknown queries.
    """
    hits, counts = _hits_and_counts(hits, n_relevant)
    within = _within_r(hits, counts, "R-precision")
    return _per_known((hits & within).sum(axis=1).astype(np.float64), counts)


def _mean(values: np.ndarray) -> float:
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else float("nan")


def mean_precision_at_1(hits: Any, n_relevant: Any) -> float:
    """Mean P@1 over the known queries (``n_relevant > 0``); NaN when there are none."""
    hits, counts = _hits_and_counts(hits, n_relevant)
    return _mean(np.where(counts > 0, hits[:, 0], np.nan))


# --------------------------------------------------------------------------- answers


def _answers(
    known: Any, correct: Any = None, accepted: Any = None, confidence: Any = None
) -> dict[str, np.ndarray]:
    out = {"known": _bool_array(known, "known", 1, "(Q,) boolean")}
    _nonempty(out["known"].shape[0], "known")
    if correct is not None:
        out["correct"] = _bool_array(correct, "correct", 1, "(Q,) boolean")
    if accepted is not None:
        out["accepted"] = _bool_array(accepted, "accepted", 1, "(Q,) boolean")
    if confidence is not None:
        out["confidence"] = _float_array(confidence, "confidence", 1, "(Q,) real")
    _same_length("known", out["known"].shape[0], **{k: v for k, v in out.items() if k != "known"})
    if "correct" in out:
        bad = np.flatnonzero(out["correct"] & ~out["known"])
        if bad.size:
            raise ValueError(
                f"correct: query {int(bad[0])} is unknown (known is False) but marked correct"
            )
        if "accepted" in out:
            bad = np.flatnonzero(out["correct"] & ~out["accepted"])
            if bad.size:
                raise ValueError(
                    f"correct: query {int(bad[0])} was answered 'unknown' (accepted is False) "
                    "but marked correct"
                )
    return out


def micro_average_precision(
    correct: Any, confidence: Any, known: Any, accepted: Any = None
) -> float:
    """Micro-AP (GAP) of the Google Landmark Recognition challenge.

    Every accepted query makes one prediction (its answered instance, with its
    confidence); the predictions are sorted by confidence, descending, and

        GAP = 1/M * sum_i P(i) rel(i)

    where ``P(i)`` is the precision among the first ``i`` predictions, ``rel(i)`` whether
    prediction ``i`` is right, and ``M`` the number of known queries. A confident answer to
    an unknown query lowers the precision of every later prediction; a query answered
    "unknown" (``accepted`` False) makes no prediction. Among equal confidences the wrong
    predictions rank first (the result does not depend on query order). NaN when no query
    is known.

    Args:
        correct: ``Q`` booleans: the answered instance is right (False for unknown queries).
        confidence: ``Q`` confidences (any real scale; NaN is rejected).
        known: ``Q`` booleans: the query's instance is in the collection.
        accepted: ``Q`` booleans, default all True.
    """
    a = _answers(known, correct, accepted, confidence)
    if "accepted" not in a:
        a["accepted"] = np.ones_like(a["known"])
    n_known = int(a["known"].sum())
    if n_known == 0:
        return float("nan")
    right = a["correct"][a["accepted"]]
    order = np.lexsort((right, -a["confidence"][a["accepted"]]))
    right = right[order]
    precision = np.cumsum(right) / np.arange(1, right.size + 1)
    return float((precision * right).sum() / n_known)


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """The 1-based ascending ranks of a 1-D array, tied values sharing their mean rank."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    starts = np.cumsum(counts) - counts
    return (starts + (counts + 1) / 2.0)[inverse]


def open_set_auroc(confidence: Any, known: Any) -> float:
    """Area under the ROC curve separating known from unknown queries by confidence.

    The probability that a random known query has a higher confidence than a random
    unknown one, ties counting one half (Mann-Whitney U / (n_known * n_unknown)). Whether
    the known query's answer is right does not matter here. NaN unless both kinds occur.
    """
    a = _answers(known, confidence=confidence)
    known_mask = a["known"]
    n_known = int(known_mask.sum())
    n_unknown = known_mask.size - n_known
    if n_known == 0 or n_unknown == 0:
        return float("nan")
    ranks = _average_ranks(a["confidence"])
    u = ranks[known_mask].sum() - n_known * (n_known + 1) / 2.0
    return float(u / (n_known * n_unknown))


def open_set_rates(known: Any, accepted: Any, correct: Any = None) -> dict[str, float]:
    """False-accept and false-reject rates of an open-set answer.

    - ``far``: the share of unknown queries accepted (answered with some instance);
    - ``frr``: the share of known queries rejected (answered "unknown");
    - ``misidentification`` (when ``correct`` is given): the share of known queries
      accepted with the wrong instance. Such a query is neither a false reject nor a false
      accept; ``1 - frr - misidentification`` is the share of known queries answered right.

    Each rate is NaN when its denominator (unknown or known queries) is empty.
    """
    a = _answers(known, correct, accepted)
    known_mask, accepted_mask = a["known"], a["accepted"]
    n_known = int(known_mask.sum())
    n_unknown = known_mask.size - n_known
    nan = float("nan")
    out = {
        "far": float((accepted_mask & ~known_mask).sum() / n_unknown) if n_unknown else nan,
        "frr": float((~accepted_mask & known_mask).sum() / n_known) if n_known else nan,
    }
    if "correct" in a:
        wrong = accepted_mask & known_mask & ~a["correct"]
        out["misidentification"] = float(wrong.sum() / n_known) if n_known else nan
    return out


def rates_at_threshold(
    confidence: Any, known: Any, threshold: float, correct: Any = None
) -> dict[str, float]:
    """:func:`open_set_rates` when a query is accepted iff ``confidence >= threshold``."""
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real):
        raise TypeError(f"threshold: expected a real number, got {type(threshold).__name__}")
    if np.isnan(threshold):
        raise ValueError("threshold: expected a number, got NaN")
    scores = _float_array(confidence, "confidence", 1, "(Q,) real")
    return open_set_rates(known, scores >= threshold, correct)


# --------------------------------------------------------------------------- triplets


def triplet_accuracy(anchor: Any, positive: Any, negative: Any) -> float:
    """The share of triplets with ``d(a, p) < d(a, n)`` (Euclidean; ties count as wrong).

    Args:
        anchor, positive, negative: ``(T, D)`` descriptors, row ``t`` forming triplet ``t``.
    """
    arrays = {
        name: _float_array(value, name, 2, "(T, D) real", finite=True)
        for name, value in (("anchor", anchor), ("positive", positive), ("negative", negative))
    }
    shape = arrays["anchor"].shape
    if shape[0] == 0:
        raise ValueError("anchor: expected at least one triplet, got none")
    for name in ("positive", "negative"):
        if arrays[name].shape != shape:
            raise ValueError(
                f"{name}: expected shape {shape} like anchor, got {arrays[name].shape}"
            )
    d_ap = ((arrays["anchor"] - arrays["positive"]) ** 2).sum(axis=1)
    d_an = ((arrays["anchor"] - arrays["negative"]) ** 2).sum(axis=1)
    return float((d_ap < d_an).mean())


# --------------------------------------------------------------------------- summaries


def identification_metrics(
    hits: Any,
    n_relevant: Any,
    correct: Any,
    confidence: Any,
    accepted: Any,
    *,
    ks: Sequence[int] = (1, 5),
) -> dict[str, float]:
    """Every metric of one set of queries, as a flat dict of numbers.

    Keys: ``queries``, ``known_queries``, ``unknown_queries``; ``p_at_{k}`` and
    ``recall_at_{k}`` for each ``k`` in ``ks``, ``map``, ``map_at_r``, ``r_precision``
    (means over the known queries); ``micro_ap``; ``auroc_unknown``; ``far``, ``frr``,
    ``misidentification``. Arguments as in the functions above; a query is known when
    ``n_relevant > 0``.
    """
    hits, counts = _hits_and_counts(hits, n_relevant)
    known = counts > 0
    a = _answers(known, correct, accepted, confidence)
    out: dict[str, float] = {
        "queries": int(hits.shape[0]),
        "known_queries": int(known.sum()),
        "unknown_queries": int((~known).sum()),
    }
    for k in ks:
        k = _check_k(k, hits.shape[1])
        out[f"p_at_{k}"] = _mean(np.where(known, precision_at_k(hits, k), np.nan))
        out[f"recall_at_{k}"] = _mean(np.where(known, recall_at_k(hits, k), np.nan))
    out["map"] = _mean(average_precision(hits, counts))
    out["map_at_r"] = _mean(average_precision_at_r(hits, counts))
    out["r_precision"] = _mean(r_precision(hits, counts))
    out["micro_ap"] = micro_average_precision(a["correct"], a["confidence"], known, a["accepted"])
    out["auroc_unknown"] = open_set_auroc(a["confidence"], known)
    out.update(open_set_rates(known, a["accepted"], a["correct"]))
    return out


def metrics_by_group(
    groups: Sequence[str | None],
    compute: Callable[..., Mapping[str, Any]],
    /,
    **per_query: Any,
) -> dict[str, Any]:
    """``compute`` over all queries, plus ``"groups"``: ``compute`` over each group's queries.

    Args:
        groups: the group (e.g. ``query_set``) of each query; None: in no group (counted
            only overall).
        compute: e.g. :func:`identification_metrics`; called with ``per_query`` as keyword
            arguments, each array restricted to the group's rows.
        per_query: numpy arrays with one row per query (first axis) are restricted to
            each group's rows; other values (e.g. ``ks``) are passed through unchanged.

    Returns:
        ``{**compute(all queries), "groups": {name: compute(group), ...}}``, groups sorted
        by name.
    """
    if isinstance(groups, (str, bytes)) or not isinstance(groups, Sequence | np.ndarray):
        raise TypeError(f"groups: expected a sequence of group names, got {type(groups).__name__}")
    if "groups" in per_query:
        raise ValueError("per_query: the name 'groups' is reserved for the result")
    names = list(groups)
    _nonempty(len(names), "groups")
    for i, name in enumerate(names):
        if name is not None and not isinstance(name, str):
            raise TypeError(f"groups: entry {i} is {type(name).__name__}, expected str or None")
    arrays = {key: value for key, value in per_query.items() if isinstance(value, np.ndarray)}
    for key, value in arrays.items():
        if value.ndim == 0 or value.shape[0] != len(names):
            raise ValueError(
                f"{key}: expected {len(names)} rows (one per query, like groups), "
                f"got shape {value.shape}"
            )
    result = dict(compute(**per_query))
    labels = np.array([name if name is not None else "" for name in names], dtype=object)
    in_group = np.array([name is not None for name in names])
    result["groups"] = {}
    for name in sorted({name for name in names if name is not None}):
        mask = in_group & (labels == name)
        subset = {
            key: (value[mask] if key in arrays else value) for key, value in per_query.items()
        }
        result["groups"][name] = dict(compute(**subset))
    return result
