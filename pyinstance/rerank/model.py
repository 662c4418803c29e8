"""The verification network: does a query show the same object as a candidate reference?

It reads what the index has at query time, cheaply: the query's window descriptors
(R×D, one per window of its feature map; R = 1 without windows) and the candidates'
descriptors (k×D). Per pair it builds

- similarity features: the best and the mean similarity over the query's windows;
- context features (the query's neighbourhood, what separates a photo of a collection
  object from a look-alike of an absent one): the best similarity minus the best other
  candidate's, and minus the candidates' mean;
- learnt features: the best window and the candidate projected to ``projection``
  dimensions (one shared linear map, L2-normalised), their element-wise product and
  absolute difference;

and a two-layer perceptron maps them to a logit. Candidate order does not matter (the
context features are symmetric in the other candidates).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: Similarity and context features per pair (before the learnt ones).
SCALAR_FEATURES = 4


class VerificationNet(nn.Module):
    """Logits ``(Q, k)`` of ``forward(queries (Q, R, D), candidates (Q, k, D))``.

    Args:
        dim: descriptor dimension D.
        projection: size of the learnt projection.
        hidden: width of the perceptron's hidden layer.
    """

    def __init__(self, dim: int, *, projection: int = 32, hidden: int = 32):
        super().__init__()
        for name, value in (("dim", dim), ("projection", projection), ("hidden", hidden)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected an int >= 1, got {value!r}")
        self.dim, self.projection_size, self.hidden = dim, projection, hidden
        self.project = nn.Linear(dim, projection, bias=False)
        self.mlp = nn.Sequential(
            nn.Linear(SCALAR_FEATURES + 2 * projection, hidden), nn.ReLU(), nn.Linear(hidden, 1)
        )

    def features(self, queries: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """``(Q, k, F)`` pair features (see the module doc)."""
        similarities = torch.einsum("qrd,qkd->qkr", queries, candidates)
        best, window = similarities.max(dim=2)
        mean = similarities.mean(dim=2)
        k = best.shape[1]
        if k > 1:
            top2 = best.topk(2, dim=1).values
            # the best *other* candidate: the first unless this one is the first
            other = torch.where(best >= top2[:, :1], top2[:, 1:2], top2[:, :1])
            centre = (best.sum(dim=1, keepdim=True) - best) / (k - 1)
        else:
            other, centre = best, best
        chosen = torch.gather(
            queries, 1, window[..., None].expand(-1, -1, queries.shape[2])
        )  # (Q, k, D): each pair's best window
        zq = F.normalize(self.project(chosen), dim=-1)
        zc = F.normalize(self.project(candidates), dim=-1)
        scalars = torch.stack([best, mean, best - other, best - centre], dim=-1)
        return torch.cat([scalars, zq * zc, (zq - zc).abs()], dim=-1)

    def forward(self, queries: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.features(queries, candidates))[..., 0]

    def options(self) -> dict[str, int]:
        """The constructor arguments (saved with the weights)."""
        return {"dim": self.dim, "projection": self.projection_size, "hidden": self.hidden}
