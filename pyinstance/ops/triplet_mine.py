"""Triplet mining for metric learning: ``triplet_mine`` over a batch or a whole data set.

Similarity is the float32 dot product of the (L2-normalised) embeddings; a triplet
(a, p, n) has Kohl's hinge ``max(0, s_an - s_ap + margin)``. Every strategy streams
blocked similarity tiles through per-anchor reductions in C++ (CPU: OpenMP + SIMD;
CUDA): no B×B×B mask, no B×B matrix. Results are deterministic and ties go to the smaller
index; pyinstance.ops._reference.triplet_mine_reference is the plain torch oracle.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

from pyinstance import _backend
from pyinstance.ops import _arrays
from pyinstance.ops._args import check_choice, check_int, check_real, check_threads

#: Strategy name -> kernel code (csrc/include/pyinstance/triplet_mine.h, enum Strategy).
STRATEGY_CODES: dict[str, int] = {
    "batch_hard": 0,
    "hard_negative": 1,
    "semihard": 2,
    "batch_all": 3,
    "offline": 4,
}
#: semihard_fallback -> kernel code (enum SemihardFallback).
FALLBACK_CODES: dict[str, int] = {"drop": 0, "easiest": 1}

_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
_INT_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)


class MiningWarning(UserWarning):
    """The labels leave nothing to mine (one class only, or no positive pairs)."""


def _embeddings(value: Any, name: str) -> tuple[torch.Tensor, _arrays.ArrayKind]:
    tensor, kind = _arrays.to_tensor(value, name)
    tensor = _arrays.require(tensor, name, ndim=2, dtypes=_FLOAT_DTYPES, finite=True)
    if tensor.shape[1] == 0:
        raise ValueError(
            f"{name}: expected at least one dimension, got shape {tuple(tensor.shape)}"
        )
    return tensor.to(torch.float32).contiguous(), kind


def _labels(value: Any, name: str, rows: int, rows_name: str) -> torch.Tensor:
    tensor, _ = _arrays.to_tensor(value, name)
    tensor = _arrays.require(tensor, name, ndim=1, dtypes=_INT_DTYPES, nonempty=False)
    if tensor.shape[0] != rows:
        raise ValueError(
            f"{name}: expected {rows} labels (one per row of {rows_name}), got {tensor.shape[0]}"
        )
    return tensor.to(torch.int64).contiguous()


#: Similarities whose magnitude could reach this (half float32's largest value) are refused.
OVERFLOW_LIMIT = float(torch.finfo(torch.float32).max) / 2


def check_similarity_range(emb: torch.Tensor, ref: torch.Tensor, same_set: bool) -> None:
    """Refuse embeddings whose float32 similarities (or their partial sums) could overflow.

    A float32 dot product of ``x`` and ``y`` cannot overflow in any summation order while
    ``sum_k |x_k y_k| < OVERFLOW_LIMIT``. When the largest float32 row norms multiply to
    less than half the limit (the half covers their float32 rounding), every pair is safe by
    Cauchy-Schwarz: the usual case, one float32 norm pass per side. Otherwise rows whose
    float64 norm times the largest reference norm stays below the limit are safe; the few
    others are checked exactly, against every reference (but themselves when mining within
    the batch), blockwise in float64.
    """
    emb_max = float(torch.linalg.vector_norm(emb, dim=1).max())
    ref_max = emb_max if same_set else float(torch.linalg.vector_norm(ref, dim=1).max())
    if emb_max * ref_max < OVERFLOW_LIMIT / 2:
        return
    norms = torch.linalg.vector_norm(emb, dim=1, dtype=torch.float64)
    ref_norms = norms if same_set else torch.linalg.vector_norm(ref, dim=1, dtype=torch.float64)
    suspects = torch.nonzero(norms * ref_norms.max() >= OVERFLOW_LIMIT).flatten()
    if suspects.numel() == 0:
        return
    ref_abs = ref.to(torch.float64).abs()
    for block in suspects.split(1024):
        bound = emb[block].to(torch.float64).abs() @ ref_abs.T
        if same_set:
            bound[torch.arange(block.numel(), device=bound.device), block] = 0.0
        worst = float(bound.max())
        if worst >= OVERFLOW_LIMIT:
            raise ValueError(
                f"embeddings: similarities may overflow float32 (sum |x_k y_k| reaches "
                f"{worst:.3g}, the limit is {OVERFLOW_LIMIT:.3g}); triplet_mine expects "
                "L2-normalised embeddings"
            )


def _group(
    labels: torch.Tensor, ref_labels: torch.Tensor, same_set: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """References sorted by label (stable) and, per anchor, its range and pair offset."""
    order = torch.argsort(ref_labels, stable=True)
    sorted_labels = ref_labels[order]
    start = torch.searchsorted(sorted_labels, labels)
    end = torch.searchsorted(sorted_labels, labels, right=True)
    pair_off = torch.zeros(labels.shape[0] + 1, dtype=torch.int64, device=labels.device)
    torch.cumsum(end - start - int(same_set), 0, out=pair_off[1:])
    return order.contiguous(), start.contiguous(), end.contiguous(), pair_off


def _empty(device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return tuple(torch.empty(0, dtype=torch.int64, device=device) for _ in range(3))  # type: ignore[return-value]


def triplet_mine(
    embeddings: Any,
    labels: Any,
    *,
    strategy: str,
    margin: float = 0.1,
    ref_embeddings: Any = None,
    ref_labels: Any = None,
    max_triplets: int | None = None,
    seed: int | None = None,
    semihard_fallback: str = "easiest",
    n_pos: int = 5,
    n_neg: int = 20,
    n_triplets: int | None = None,
    threads: int | None = None,
) -> tuple[Any, Any, Any]:
    """Mine (anchors, positives, negatives) index triplets.

    Args:
        embeddings: B×D float array (numpy, torch or cupy; float32/16, bfloat16, float64 —
            similarities are computed in float32). Expected L2-normalised.
        labels: B integer labels.
        strategy: ``batch_hard`` (per anchor its least similar positive and most similar
            negative), ``hard_negative`` (every positive pair with the anchor's most similar
            negative), ``semihard`` (every positive pair with the most similar negative still
            strictly less similar than the positive), ``batch_all`` (every triplet with a
            positive hinge) or ``offline`` (per anchor the ``n_pos`` most similar positives ×
            the ``n_neg`` most similar negatives, keeping the ``n_triplets`` with the largest
            ``s_an - s_ap``, best first).
        margin: the hinge margin (``batch_all``): a finite number >= 0 (int, float or numpy
            scalar). A negative margin is refused, in every op and loss of pyinstance.
        ref_embeddings, ref_labels: mine positives and negatives from this set instead of the
            batch (then an anchor may be its own positive). Give both or neither.
        max_triplets: ``batch_all`` only: return a uniform random subset of at most this many
            triplets, drawn without materialising the full set.
        seed: seed of that subset (default: drawn from torch's global generator).
        semihard_fallback: ``"easiest"`` gives a pair without a semi-hard negative the
            anchor's least similar negative (FaceNet); ``"drop"`` drops the pair.
        n_pos, n_neg, n_triplets: ``offline`` sizes (``n_triplets`` defaults to n_pos·n_neg);
            integers >= 1, sizes beyond the number of references act as that number.
        threads: CPU threads, an integer in 1..1024 (default: OpenMP's).

    Returns:
        Three int64 index arrays of equal length on the embeddings' device and of their
        kind (numpy in, numpy out); positives and negatives index ``ref_embeddings`` when
        given. Triplets come anchor by anchor in increasing order, then by positive and
        negative index (``offline``: best combination first). Ties go to the smaller index.
        Labels that leave nothing to mine give empty arrays and a :class:`MiningWarning`.

    Raises:
        ValueError: embeddings whose float32 similarities could overflow (see
            :func:`check_similarity_range`); integers accept numpy integer scalars and refuse
            booleans; reals accept numpy scalars.
    """
    check_choice(strategy, "strategy", STRATEGY_CODES)
    check_choice(semihard_fallback, "semihard_fallback", FALLBACK_CODES)
    margin = check_real(margin, "margin", low=0.0)
    if max_triplets is not None:
        if strategy != "batch_all":
            raise ValueError(
                f"max_triplets: only applies to strategy 'batch_all', not {strategy!r}"
            )
        max_triplets = check_int(max_triplets, "max_triplets", low=1)
    if seed is not None:
        seed = check_int(seed, "seed", low=0, high=2**64 - 1)
    if strategy == "offline":
        n_pos = check_int(n_pos, "n_pos", low=1)
        n_neg = check_int(n_neg, "n_neg", low=1)
        n_triplets = (
            n_pos * n_neg if n_triplets is None else check_int(n_triplets, "n_triplets", low=1)
        )
    n_threads = check_threads(threads)
    if (ref_embeddings is None) != (ref_labels is None):
        raise ValueError("ref_embeddings and ref_labels: give both or neither")

    emb, kind = _embeddings(embeddings, "embeddings")
    lab = _labels(labels, "labels", emb.shape[0], "embeddings")
    same_set = ref_embeddings is None
    if same_set:
        ref, ref_lab = emb, lab
    else:
        ref, _ = _embeddings(ref_embeddings, "ref_embeddings")
        ref_lab = _labels(ref_labels, "ref_labels", ref.shape[0], "ref_embeddings")
        if ref.shape[1] != emb.shape[1]:
            raise ValueError(
                f"ref_embeddings: expected dimension {emb.shape[1]} like embeddings, got {ref.shape[1]}"
            )
    device = _arrays.common_device(
        embeddings=emb, labels=lab, ref_embeddings=ref, ref_labels=ref_lab
    )
    module = _arrays.kernel_module(device)
    check_similarity_range(emb, ref, same_set)

    order, start, end, pair_off = _group(lab, ref_lab, same_set)
    n_pairs = int(pair_off[-1])
    if not bool(((end - start) < ref.shape[0]).any()):
        warnings.warn(
            "triplet_mine: every label is the same (one class only): no negatives, no triplets",
            MiningWarning,
            stacklevel=2,
        )
        return _wrap(_empty(device), kind)
    if n_pairs == 0:
        warnings.warn(
            "triplet_mine: no positive pairs (no anchor shares its label with another sample)",
            MiningWarning,
            stacklevel=2,
        )
        return _wrap(_empty(device), kind)

    if strategy == "offline":
        # No anchor has more positives or negatives than there are references: sizes beyond
        # that change nothing and would only allocate empty slots.
        n_pos, n_neg = min(n_pos, ref.shape[0]), min(n_neg, ref.shape[0])
        n_triplets = min(n_triplets, n_pos * n_neg)
    device_index, stream = _arrays.cuda_launch(device, kind)
    # The CPU kernels take a thread count, the CUDA ones the caller's stream and device.
    launch = (
        {"threads": n_threads}
        if device.type == "cpu"
        else {"stream": stream, "device": device_index}
    )
    problem = dict(
        embeddings=emb.data_ptr(), n_anchors=emb.shape[0], dim=emb.shape[1],
        labels=lab.data_ptr(), ref_embeddings=ref.data_ptr(), n_refs=ref.shape[0],
        ref_labels=ref_lab.data_ptr(), same_set=same_set, order=order.data_ptr(),
        pos_start=start.data_ptr(), pos_end=end.data_ptr(), pair_off=pair_off.data_ptr(),
        n_pairs=n_pairs,
    )  # fmt: skip
    if strategy == "batch_all":
        result = _batch_all(module, problem, launch, margin, max_triplets, seed, device)
    else:
        code = STRATEGY_CODES[strategy]
        slots = _backend._C.triplet_output_slots(code, emb.shape[0], n_pairs, n_triplets or 1)
        out = [torch.empty(slots, dtype=torch.int64, device=device) for _ in range(3)]
        found = module.triplet_mine(
            strategy=code, **problem, fallback=FALLBACK_CODES[semihard_fallback], n_pos=n_pos,
            n_neg=n_neg, n_triplets=n_triplets or 1, out_anchors=out[0].data_ptr(),
            out_positives=out[1].data_ptr(), out_negatives=out[2].data_ptr(), **launch,
        )  # fmt: skip
        result = tuple(t[:found] for t in out)
    return _wrap(result, kind)


def _batch_all(
    module: Any,
    problem: dict[str, Any],
    launch: dict[str, int],
    margin: float,
    max_triplets: int | None,
    seed: int | None,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Count violating negatives per pair, then write all triplets or a uniform sample."""
    n_pairs = problem["n_pairs"]
    counts = torch.empty(n_pairs, dtype=torch.int64, device=device)
    module.triplet_mine_count(**problem, margin=margin, counts=counts.data_ptr(), **launch)
    pair_base = torch.zeros(n_pairs + 1, dtype=torch.int64, device=device)
    torch.cumsum(counts, 0, out=pair_base[1:])
    total = int(pair_base[-1])
    sample = None
    size = total
    if max_triplets is not None and total > max_triplets:
        if seed is None:
            seed = int(torch.randint(0, 2**62, (1,)).item())
        sample = torch.empty(max_triplets, dtype=torch.int64)
        _backend._C.triplet_sample(total, max_triplets, seed, sample.data_ptr())
        sample = sample.to(device)
        size = max_triplets
    out = [torch.empty(size, dtype=torch.int64, device=device) for _ in range(3)]
    if size:
        module.triplet_mine_fill(
            **problem, margin=margin, pair_base=pair_base.data_ptr(),
            sample=0 if sample is None else sample.data_ptr(),
            n_sample=size if sample is not None else 0, out_anchors=out[0].data_ptr(),
            out_positives=out[1].data_ptr(), out_negatives=out[2].data_ptr(), **launch,
        )  # fmt: skip
    return out[0], out[1], out[2]


def _wrap(
    result: tuple[torch.Tensor, torch.Tensor, torch.Tensor], kind: _arrays.ArrayKind
) -> tuple[Any, Any, Any]:
    return tuple(_arrays.from_tensor(t, kind) for t in result)  # type: ignore[return-value]
