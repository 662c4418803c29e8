"""Hook specifications: what a pyinstance plugin can provide.

A plugin is a module or object with functions marked ``@pyinstance.hookimpl``, registered
through the entry-point group ``pyinstance``. Each hook receives a ``register`` callable::

    register(name: str, factory: Callable[..., Any], *, aliases: Sequence[str] = ())

and calls it once per component. Hooks run once, at set-up, never inside ``forward()``, and
only call ``register`` (looking components up while plugins load is an error).
The contracts each component kind must honour are typed in :mod:`pyinstance.models.contracts`
and checked by :mod:`pyinstance.testing`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import pluggy

hookspec = pluggy.HookspecMarker("pyinstance")
hookimpl = pluggy.HookimplMarker("pyinstance")


class Register(Protocol):
    """The callable a ``pyinstance_register_*`` hook receives."""

    def __call__(
        self, name: str, factory: Callable[..., Any], *, aliases: Sequence[str] = ()
    ) -> None: ...


@hookspec
def pyinstance_register_backbones(register: Register) -> None:
    """Register backbones: ``factory(**kw) -> BackboneContract`` (a ``torch.nn.Module``).

    The module maps an image batch B×3×H×W to a feature map B×C×H×W and has an
    ``out_channels`` attribute (C) and an ``out_stride`` attribute (input pixels per
    feature-map cell); ``min_input_size`` is optional (default ``out_stride``, see
    :func:`pyinstance.models.contracts.min_input_size`).
    See :func:`pyinstance.testing.check_backbone`.
    """


@hookspec
def pyinstance_register_heads(register: Register) -> None:
    """Register pooling heads: ``factory(in_channels, **kw) -> HeadContract`` (a ``torch.nn.Module``).

    The module maps a feature map B×C×H×W to L2-normalised descriptors B×D and has an
    ``out_dim`` attribute (D). See :func:`pyinstance.testing.check_head`.
    """


@hookspec
def pyinstance_register_losses(register: Register) -> None:
    """Register metric-learning losses: ``factory(**kw) -> LossContract`` (a ``torch.nn.Module``).

    Called as ``loss(embeddings, labels, triplets=None, *, logits=None)`` with
    ``triplets`` an optional (anchors, positives, negatives) index tuple from a miner and
    ``logits`` class scores; returns a finite scalar tensor differentiable w.r.t. what it
    uses. The class declares ``needs_triplets`` (bool: it uses a miner's triplets) and
    ``logits`` (None, ``"image"`` B×K, ``"map"`` B×K×H×W per scale or ``"regions"`` B×k×K),
    which the trainer reads to feed it. See :class:`~pyinstance.models.contracts.LossContract`
    and :func:`pyinstance.testing.check_loss`.
    """


@hookspec
def pyinstance_register_miners(register: Register) -> None:
    """Register triplet miners: ``factory(**kw) -> MinerContract`` (a callable).

    Called as ``miner(embeddings, labels, ref_embeddings=None, ref_labels=None)``; returns
    int64 index tensors (anchors, positives, negatives) of equal length with
    ``labels[a] == ref_labels[p]``, ``labels[a] != ref_labels[n]`` (``ref_*`` default to
    the batch, and then ``a != p``). See :func:`pyinstance.testing.check_miner`.
    """


@hookspec
def pyinstance_register_classifiers(register: Register) -> None:
    """Register instance classifiers: ``factory(**kw) -> object``.

    The object decides from the k-NN search results of an index. It has ``k`` (an int >= 0:
    the neighbours per query its ``predict`` reads, the first ``k`` columns of what it is
    given), ``fit(descriptors N×D, labels N int64 codes) -> self`` (called once with the
    collection; keeps state such as per-instance means, validates its input even when it
    keeps nothing; code -1 marks a row to ignore) and
    ``predict(neighbours: pyinstance.index.Neighbours, queries Q×D or Q×R×D)
    -> pyinstance.classify.Prediction``: per query the instance code or -1 (unknown), a
    confidence in [0, 1] that separates known from unknown queries (open-set rejection
    thresholds it), and the instances ranked best first with their scores.
    See :func:`pyinstance.testing.check_classifier`.
    """


@hookspec
def pyinstance_register_rerankers(register: Register) -> None:
    """Register re-rankers: ``factory(**kw) -> object`` (a pair scorer).

    The object re-scores the first candidates of a classifier's k-NN results. It has
    ``k`` (an int >= 1: candidates it scores per query), ``recipe`` (the index recipe as a
    dict, :meth:`pyinstance.index.Recipe.to_dict`, whose descriptors it was trained on, or
    None when any recipe will do; an index of another recipe is refused) and
    ``score(queries Q×R×D, candidates Q×k×D) -> Q×k`` float probabilities in [0, 1] that
    each query (its R window descriptors) and each candidate reference show the same
    object. See :class:`pyinstance.classify.PairScorer` and
    :func:`pyinstance.testing.check_reranker`.
    """
