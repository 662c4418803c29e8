"""Plain torch implementations of every op: the test oracle, never a silent fallback."""

from __future__ import annotations

import torch

# --- knn_dot ------------------------------------------------------------------------------


def knn_dot_reference(
    queries: torch.Tensor,
    refs: torch.Tensor,
    k: int,
    exclude: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-k dot products in float64: (scores Q x k float64, indices Q x k int64).

    Ties are broken by the smaller reference index (stable sort of the negated scores);
    ``exclude[q] >= 0`` removes that reference for query q.
    """
    scores = queries.double() @ refs.double().T
    if exclude is not None:
        rows = torch.nonzero(exclude >= 0).flatten()
        scores[rows, exclude[rows]] = -torch.inf
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k]
    return torch.gather(scores, 1, order), order


# --- topk_region_pool --------------------------------------------------------------------


def topk_region_pool_reference(
    features: torch.Tensor,
    scores: torch.Tensor,
    k: int,
    *,
    valid_hw: torch.Tensor | None = None,
    eps: float = 1e-12,
) -> tuple[torch.Tensor, torch.Tensor]:
    """amax over classes, masked stable sort (ties: smaller index), gather, normalise, sum.

    Differentiable w.r.t. ``features`` through plain autograd. The norm is taken after
    dividing by max |x| so huge and tiny values neither overflow nor underflow.
    """
    batch, channels, height, width = features.shape
    location_score = (scores if scores.dim() == 3 else scores.amax(dim=1)).flatten(1)
    location_score = location_score.to(
        torch.float64 if scores.dtype == torch.float64 else torch.float32
    )
    if valid_hw is not None:
        rows = torch.arange(height, device=scores.device).repeat_interleave(width)
        cols = torch.arange(width, device=scores.device).repeat(height)
        valid = (rows[None] < valid_hw[:, :1]) & (cols[None] < valid_hw[:, 1:])
        location_score = location_score.masked_fill(~valid, float("-inf"))
        # -inf scores in valid cells must still beat padded cells: rank validity first.
        order_key = torch.stack([valid.to(location_score.dtype), location_score], dim=-1)
    else:
        order_key = location_score[..., None]
    # Stable descending sort by (valid, score): equal keys keep ascending index order.
    index = torch.arange(height * width, device=scores.device).expand(batch, -1)
    for column in reversed(range(order_key.shape[-1])):
        order = torch.sort(
            order_key[..., column].gather(1, index), dim=1, descending=True, stable=True
        ).indices
        index = index.gather(1, order)
    locations = index[:, :k]
    gathered = features.flatten(2).gather(2, locations[:, None, :].expand(batch, channels, k))
    scale = gathered.detach().abs().amax(dim=1, keepdim=True)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    norm = torch.linalg.vector_norm(gathered / scale, dim=1, keepdim=True) * scale
    pooled = (gathered / norm.clamp_min(eps)).sum(dim=2)
    return pooled, locations


# --- triplet_mine -----------------------------------------------------------------------

_MASK64 = (1 << 64) - 1


def _splitmix64(state: int) -> tuple[int, int]:
    state = (state + 0x9E3779B97F4A7C15) & _MASK64
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return state, z ^ (z >> 31)


def sample_triplet_numbers(total: int, k: int, seed: int) -> list[int]:
    """k distinct sorted numbers from [0, total): Floyd's algorithm on splitmix64(seed)."""
    state, chosen = seed & _MASK64, set()
    for j in range(total - k, total):
        bound = j + 1
        limit = _MASK64 - _MASK64 % bound
        state, x = _splitmix64(state)
        while x >= limit:
            state, x = _splitmix64(state)
        t = x % bound
        chosen.add(j if t in chosen else t)
    return sorted(chosen)


def triplet_mine_reference(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    *,
    strategy: str,
    margin: float = 0.1,
    ref_embeddings: torch.Tensor | None = None,
    ref_labels: torch.Tensor | None = None,
    max_triplets: int | None = None,
    seed: int = 0,
    semihard_fallback: str = "easiest",
    n_pos: int = 5,
    n_neg: int = 20,
    n_triplets: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Plain torch oracle of pyinstance.ops.triplet_mine on CPU tensors (B×R matrices).

    Refuses embeddings whose similarities could overflow float32, as the op does.
    """
    from pyinstance.ops.triplet_mine import check_similarity_range

    if strategy not in ("batch_hard", "hard_negative", "semihard", "batch_all", "offline"):
        raise ValueError(f"unknown strategy {strategy!r}")  # refused always, as the op does
    emb = embeddings.float()
    same_set = ref_embeddings is None
    ref = emb if same_set else ref_embeddings.float()
    check_similarity_range(emb, ref, same_set)
    lab = labels.long()
    ref_lab = lab if same_set else ref_labels.long()
    sim = emb @ ref.T
    same = lab[:, None] == ref_lab[None, :]
    pos = same.clone()
    if same_set:
        pos.fill_diagonal_(False)
    neg = ~same
    inf = torch.tensor(float("inf"))
    has_neg = neg.any(dim=1)
    empty = torch.empty(0, dtype=torch.int64)
    if not bool(has_neg.any()) or not bool(pos.any()):
        return empty, empty.clone(), empty.clone()
    # argmax / argmin return the first extreme value: ties go to the smaller index.
    hardest_neg = torch.where(neg, sim, -inf).argmax(dim=1)

    if strategy == "batch_hard":
        hardest_pos = torch.where(pos, sim, inf).argmin(dim=1)
        keep = pos.any(dim=1) & has_neg
        anchors = torch.nonzero(keep).flatten()
        return anchors, hardest_pos[anchors], hardest_neg[anchors]

    pa, pp = torch.nonzero(pos, as_tuple=True)  # row-major: anchor, then positive order
    s_ap = sim[pa, pp]
    if strategy == "hard_negative":
        keep = has_neg[pa]
        return pa[keep], pp[keep], hardest_neg[pa][keep]

    if strategy == "semihard":
        below = neg[pa] & (sim[pa] < s_ap[:, None])
        chosen = torch.where(below, sim[pa], -inf).argmax(dim=1)
        found = below.any(dim=1)
        if semihard_fallback == "easiest":
            easiest = torch.where(neg, sim, inf).argmin(dim=1)
            chosen = torch.where(found, chosen, easiest[pa])
            keep = has_neg[pa]
        else:
            keep = found
        return pa[keep], pp[keep], chosen[keep]

    if strategy == "batch_all":
        violating = neg[pa] & (((sim[pa] - s_ap[:, None]) + margin) > 0)
        pair, negative = torch.nonzero(violating, as_tuple=True)  # (a, p, n) lexicographic
        result = (pa[pair], pp[pair], negative)
        if max_triplets is not None and pair.numel() > max_triplets:
            picked = torch.tensor(sample_triplet_numbers(pair.numel(), max_triplets, seed))
            result = tuple(t[picked] for t in result)
        return result

    # offline
    o = n_pos * n_neg if n_triplets is None else n_triplets
    out: list[tuple[int, int, int]] = []
    for a in range(emb.shape[0]):
        ps = sorted(torch.nonzero(pos[a]).flatten().tolist(), key=lambda j: (-sim[a, j].item(), j))
        ns = sorted(torch.nonzero(neg[a]).flatten().tolist(), key=lambda j: (-sim[a, j].item(), j))
        ps, ns = ps[:n_pos], ns[:n_neg]
        combos = []
        for u, p in enumerate(ps):
            for v, n in enumerate(ns):
                score = (sim[a, n] - sim[a, p]).item()  # float32 subtraction
                combos.append((-score, u * n_neg + v, p, n))
        combos.sort()
        out.extend((a, p, n) for _, _, p, n in combos[:o])
    if not out:
        return empty, empty.clone(), empty.clone()
    a_, p_, n_ = torch.tensor(out, dtype=torch.int64).T
    return a_.contiguous(), p_.contiguous(), n_.contiguous()
