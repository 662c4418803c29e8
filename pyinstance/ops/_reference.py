"""Plain torch implementations of every op: the test oracle, never a silent fallback."""

# --- knn_dot ------------------------------------------------------------------------------

import torch  # noqa: E402


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
