"""The verification re-ranker (Bouček, task 5): a pairwise model re-scores the top candidates.

:func:`resolve_reranker` is the API edge's name resolution: a verifier file path or a
registered re-ranker name becomes the pair scorer, checked against the index's recipe.
The stage that runs it after the classifier is :class:`pyinstance.classify.Reranking`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pyinstance.index.recipe import Recipe
from pyinstance.rerank.model import VerificationNet
from pyinstance.rerank.verifier import (
    RecipeMismatchError,
    VerificationReranker,
    VerifierFile,
    check_recipe,
    read_verifier,
)

#: The registered re-ranker a file path resolves to.
FILE_RERANKER = "verification"

__all__ = [
    "FILE_RERANKER",
    "RecipeMismatchError",
    "VerificationNet",
    "VerificationReranker",
    "VerifierFile",
    "check_recipe",
    "describe_reranker",
    "read_verifier",
    "resolve_reranker",
]


def resolve_reranker(spec: Any, recipe: Recipe, **options: Any) -> Any:
    """The pair scorer ``spec`` names, refused unless it fits ``recipe``.

    ``spec``: a verifier file (a path, or a string naming an existing file: the
    ``verification`` re-ranker with ``model=spec``; a string that looks like a path but
    names no file is a ``FileNotFoundError``), a registered re-ranker name (built with
    ``options``), or a pair scorer object (used as it is).
    """
    from pyinstance.plugins import get_reranker

    if isinstance(spec, os.PathLike) or (isinstance(spec, str) and Path(spec).is_file()):
        scorer = get_reranker(FILE_RERANKER, model=spec, **options)
    elif isinstance(spec, str):
        if not spec:
            raise ValueError("reranker: expected a verifier file or a re-ranker name, got ''")
        if _looks_like_a_path(spec):
            raise FileNotFoundError(f"reranker: no such file {spec!r}")
        scorer = get_reranker(spec, **options)
    else:
        if options:
            raise ValueError("reranker_options: only for a re-ranker given by name or file")
        scorer = spec
    check_recipe(scorer, recipe)
    return scorer


def describe_reranker(spec: Any) -> str | None:
    """How a re-ranker is named in settings and reports: a file's absolute path, a
    registered name, or the object's class name (None: no re-ranker)."""
    if spec is None:
        return None
    if isinstance(spec, os.PathLike) or (isinstance(spec, str) and Path(spec).is_file()):
        return str(Path(spec).resolve())
    if isinstance(spec, str):
        return spec
    return str(getattr(spec, "path", None) or type(spec).__name__)


def _looks_like_a_path(text: str) -> bool:
    """Re-ranker names are plain words; a separator or a file suffix means a path."""
    return os.sep in text or "/" in text or Path(text).suffix in (".pt", ".pth")
