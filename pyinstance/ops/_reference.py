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
    location_score = location_score.to(torch.float64 if scores.dtype == torch.float64 else torch.float32)
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
        order = torch.sort(order_key[..., column].gather(1, index), dim=1, descending=True, stable=True).indices
        index = index.gather(1, order)
    locations = index[:, :k]
    gathered = features.flatten(2).gather(2, locations[:, None, :].expand(batch, channels, k))
    scale = gathered.detach().abs().amax(dim=1, keepdim=True)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    norm = torch.linalg.vector_norm(gathered / scale, dim=1, keepdim=True) * scale
    pooled = (gathered / norm.clamp_min(eps)).sum(dim=2)
    return pooled, locations
