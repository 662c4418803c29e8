"""The verification re-ranker: a trained :class:`VerificationNet` with the recipe it serves.

A verifier file (``pyinstance train`` with ``objective = "verification"``) holds the
network's options and weights, the candidates per query it was trained on (``k``) and the
recipe of the index whose descriptors it learnt. Loaded for an index of another recipe it
is refused (:func:`check_recipe`): its features would mean nothing there.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pyinstance._files import read_versioned, write_atomic
from pyinstance._validate import check_float_array
from pyinstance.classify._checks import check_count
from pyinstance.index.recipe import Recipe
from pyinstance.rerank.model import VerificationNet

#: The ``format`` entry of every verifier file.
FORMAT = "pyinstance-verifier"
#: The layout version written; files of other versions are refused.
VERSION = 1


class RecipeMismatchError(ValueError):
    """A re-ranker trained on the descriptors of another recipe than the index's."""


@dataclass(frozen=True)
class VerifierFile:
    """What a verifier file holds.

    Attributes:
        options: :meth:`VerificationNet.options`.
        state: the network's state dict.
        k: candidates per query it was trained to score.
        recipe: the index recipe it was trained on (:meth:`Recipe.to_dict`).
        info: JSON-able facts about the training (config, sizes, losses, seconds).
    """

    options: dict[str, int]
    state: dict[str, torch.Tensor]
    k: int
    recipe: dict[str, Any]
    info: dict[str, Any] = field(default_factory=dict)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the file atomically to ``path`` and return it."""
        payload = {
            "format": FORMAT,
            "version": VERSION,
            "options": json.dumps(self.options, sort_keys=True),
            "k": int(self.k),
            "recipe": json.dumps(self.recipe, sort_keys=True),
            "info": json.dumps(self.info, sort_keys=True, default=str),
            "state": {key: value.detach().cpu() for key, value in self.state.items()},
        }
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        write_atomic(path, buffer.getvalue())
        return Path(path)

    def network(self) -> VerificationNet:
        """The network with the saved weights, in evaluation mode."""
        net = VerificationNet(**self.options)
        try:
            net.load_state_dict(self.state, strict=True)
        except RuntimeError as error:
            raise ValueError(f"verifier: the weights do not fit the network: {error}") from error
        return net.eval()


def read_verifier(path: str | os.PathLike[str]) -> VerifierFile:
    """The verifier file at ``path``; a missing, corrupt or foreign file is a clear error."""
    path = Path(path)
    made_by = "`pyinstance train` with objective = 'verification'"
    payload = read_versioned(path, "verifier", FORMAT, VERSION, made_by)
    try:
        recipe = json.loads(payload["recipe"])
        Recipe.from_dict(recipe)
        return VerifierFile(
            options=json.loads(payload["options"]),
            state=dict(payload["state"]),
            k=int(payload["k"]),
            recipe=recipe,
            info=json.loads(payload["info"]),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"verifier: {str(path)!r} is incomplete or damaged: {error}") from error


def check_recipe(reranker: Any, recipe: Recipe, name: str = "reranker") -> None:
    """Refuse ``reranker`` unless it was trained on descriptors of ``recipe`` (its
    ``recipe`` None: any will do); the error names both recipes."""
    trained = getattr(reranker, "recipe", None)
    if trained is None:
        return
    trained_recipe = Recipe.from_dict(trained)
    if not trained_recipe.same_descriptors(recipe):
        raise RecipeMismatchError(
            f"{name}: trained on the descriptors of recipe [{trained_recipe.describe()}], but "
            f"this index's recipe is [{recipe.describe()}]; train a verifier for this index "
            "(pyinstance train with objective = 'verification')"
        )


class VerificationReranker:
    """The ``verification`` re-ranker: scores pairs with a trained verifier file.

    Args:
        model: the verifier file (``pyinstance train``, objective ``verification``).
        k: candidates scored per query; default: the ``k`` it was trained with.
        threads: torch intra-op threads while scoring (default: torch's setting).
    """

    def __init__(
        self, *, model: str | os.PathLike[str], k: int | None = None, threads: int | None = None
    ):
        saved = read_verifier(model)
        self.path = Path(model).resolve()
        self.net = saved.network()
        self.k = saved.k if k is None else check_count(k, "k", minimum=1)
        self.recipe = saved.recipe
        self.info = saved.info
        self.threads = None if threads is None else check_count(threads, "threads", minimum=1)

    def __repr__(self) -> str:
        return f"VerificationReranker(model={str(self.path)!r}, k={self.k})"

    def score(self, queries: Any, candidates: Any) -> np.ndarray:
        """``(Q, k)`` probabilities that each query and candidate show the same object."""
        dim = self.net.dim
        windows = torch.from_numpy(
            check_float_array(queries, "queries", "(Q, D) or (Q, R, D)", ndim=(2, 3), dim=dim)
        )
        if windows.ndim == 2:
            windows = windows[:, None, :]
        refs = torch.from_numpy(
            check_float_array(candidates, "candidates", "(Q, k, D)", ndim=3, dim=dim)
        )
        if refs.shape[0] != windows.shape[0]:
            raise ValueError(
                f"queries, candidates: expected (Q, R, {dim}) and (Q, k, {dim}) arrays, got "
                f"{tuple(windows.shape)} and {tuple(refs.shape)}"
            )
        if refs.shape[1] == 0 or windows.shape[1] == 0:
            return np.zeros(tuple(refs.shape[:2]), np.float32)
        previous = torch.get_num_threads()
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        try:
            with torch.inference_mode():
                return torch.sigmoid(self.net(windows, refs)).numpy()
        finally:
            torch.set_num_threads(previous)
