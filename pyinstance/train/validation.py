"""Validation during training: P@1 of labelled query photos against the training photos."""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from pyinstance.data.manifest import Manifest
from pyinstance.extraction import extract


@dataclass(frozen=True)
class ValidationSet:
    """Query photos (``query`` rows of a manifest) with their instance and query set."""

    paths: tuple[Path, ...]
    instances: tuple[str, ...]
    query_sets: tuple[str, ...]

    def __post_init__(self) -> None:
        lengths = (len(self.paths), len(self.instances), len(self.query_sets))
        if len(set(lengths)) != 1:
            raise ValueError(
                "ValidationSet: expected one instance and one query set per path, got "
                f"{lengths[0]} paths, {lengths[1]} instances, {lengths[2]} query sets"
            )

    @classmethod
    def from_manifest(cls, path: str | os.PathLike[str]) -> ValidationSet:
        queries = Manifest.read(path).filter(split="query")
        if not len(queries):
            raise ValueError(f"data.validation: {str(path)!r} has no split=query rows")
        return cls(
            paths=tuple(queries.paths),
            instances=tuple(queries.instance_ids),
            query_sets=tuple(q or "-" for q in queries.query_sets),
        )


def precision_at_1(
    backbone: nn.Module,
    head: nn.Module,
    references: list[Path],
    reference_instances: tuple[str, ...],
    queries: ValidationSet,
    *,
    max_side: int,
) -> dict[str, float]:
    """P@1 overall (``p_at_1``) and per query set (``p_at_1/<set>``) by the nearest reference."""
    if len(reference_instances) != len(references):
        raise ValueError(
            f"reference_instances: expected one per reference ({len(references)}), got "
            f"{len(reference_instances)}"
        )
    refs = extract(references, backbone, head, max_side=max_side, progress=False)[:, 0]
    found = extract(list(queries.paths), backbone, head, max_side=max_side, progress=False)[:, 0]
    nearest = (found @ refs.T).argmax(dim=1)
    right = torch.tensor(
        [
            reference_instances[n] == q
            for n, q in zip(nearest.tolist(), queries.instances, strict=True)
        ]
    )
    result = {"p_at_1": float(right.float().mean())}
    groups: dict[str, list[bool]] = defaultdict(list)
    for query_set, ok in zip(queries.query_sets, right.tolist(), strict=True):
        groups[query_set].append(ok)
    for query_set, oks in sorted(groups.items()):
        result[f"p_at_1/{query_set}"] = sum(oks) / len(oks)
    return result
