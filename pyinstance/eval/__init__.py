"""Evaluation: retrieval, identification and open-set metrics on plain arrays."""

from __future__ import annotations

from pyinstance.eval.metrics import (
    average_precision,
    average_precision_at_r,
    count_relevant,
    hits_from_labels,
    identification_metrics,
    mean_precision_at_1,
    metrics_by_group,
    micro_average_precision,
    open_set_auroc,
    open_set_rates,
    precision_at_k,
    r_precision,
    rates_at_threshold,
    recall_at_k,
    triplet_accuracy,
)

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
