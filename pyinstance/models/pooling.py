"""Global pooling heads: a feature map B×C×H×W to an L2-normalised descriptor B×D.

- MAC (max activation, Tolias et al.), SPoC (average/sum pooling, Babenko & Lempitsky),
  GeM (generalised mean with a learnable exponent p, Radenović et al.: p=1 is SPoC,
  p→∞ tends to MAC), R-MAC (MACs of Tolias's multi-scale square regions, each
  L2-normalised, summed).
- Each head optionally ends with a learned linear projection (dimension reduction /
  whitening as a layer), followed by L2-normalisation again; for R-MAC the projection is
  applied to every region vector before the sum, as Tolias et al. whiten regions.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn

from pyinstance._validate import check_float, check_int, check_optional_int

_EPS = 1e-6


def l2_normalize(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """``x / max(||x||, eps)`` along ``dim``."""
    return F.normalize(x, p=2.0, dim=dim, eps=_EPS)


class Projection(nn.Module):
    """Learned affine projection ``y = W x + b`` (D_in -> D_out), e.g. learned whitening."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        out_dim = check_int(out_dim, "out_dim", minimum=1)
        self.linear = nn.Linear(check_int(in_dim, "in_dim", minimum=1), out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)

    @torch.no_grad()
    def init_whitening(self, descriptors: torch.Tensor, eps: float = 1e-6) -> None:
        """Initialise as PCA-whitening of ``descriptors`` (N×D_in): zero mean, unit variance.

        Keeps the ``out_dim`` leading principal directions; needs ``N > out_dim``.
        """
        if descriptors.dim() != 2 or descriptors.shape[1] != self.linear.in_features:
            raise ValueError(
                f"descriptors: expected N×{self.linear.in_features}, got {tuple(descriptors.shape)}"
            )
        if descriptors.shape[0] <= self.linear.out_features:
            raise ValueError(
                f"descriptors: whitening to {self.linear.out_features} dimensions needs more than "
                f"{self.linear.out_features} descriptors, got {descriptors.shape[0]}"
            )
        x = descriptors.double()
        mean = x.mean(0)
        centred = x - mean
        covariance = centred.T @ centred / (x.shape[0] - 1)
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
        order = eigenvalues.argsort(descending=True)[: self.linear.out_features]
        weight = eigenvectors[:, order].T / (eigenvalues[order].clamp_min(0) + eps).sqrt()[:, None]
        self.linear.weight.copy_(weight)
        self.linear.bias.copy_(-(weight @ mean))


class PoolingHead(nn.Module):
    """Input checks, L2-normalisation and the optional projection around ``pool``."""

    def __init__(self, in_channels: int, out_dim: int | None = None):
        super().__init__()
        self.in_channels = check_int(in_channels, "in_channels", minimum=1)
        out_dim = check_optional_int(out_dim, "out_dim", minimum=1)
        self.projection = Projection(self.in_channels, out_dim) if out_dim is not None else None
        self.out_dim = out_dim if out_dim is not None else self.in_channels

    def pool(self, features: torch.Tensor) -> torch.Tensor:
        """B×C×H×W -> B×C."""
        raise NotImplementedError

    def check_features(self, features: torch.Tensor) -> None:
        if not isinstance(features, torch.Tensor):
            raise TypeError(f"features: expected a torch.Tensor, got {type(features).__name__}")
        if features.dim() != 4:
            raise ValueError(
                f"features: expected B×{self.in_channels}×H×W, got shape {tuple(features.shape)}"
            )
        if features.shape[1] != self.in_channels:
            raise ValueError(
                f"features: expected {self.in_channels} channels, got {features.shape[1]}"
            )
        if not features.is_floating_point():
            raise TypeError(f"features: expected a floating-point tensor, got {features.dtype}")
        if features.shape[0] == 0 or features.shape[2] == 0 or features.shape[3] == 0:
            raise ValueError(f"features: empty tensor of shape {tuple(features.shape)}")
        if not bool(torch.isfinite(features).all()):
            raise ValueError("features: contains NaN or infinite values")

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        self.check_features(features)
        descriptors = l2_normalize(self.pool(features))
        if self.projection is not None:
            descriptors = l2_normalize(self.projection(descriptors))
        return descriptors


class MAC(PoolingHead):
    """Maximum activation of each channel."""

    def pool(self, features: torch.Tensor) -> torch.Tensor:
        return features.amax(dim=(2, 3))


class SPoC(PoolingHead):
    """Average (sum) pooling of each channel, without the Gaussian centre prior."""

    def pool(self, features: torch.Tensor) -> torch.Tensor:
        return features.mean(dim=(2, 3))


class GeM(PoolingHead):
    """Generalised mean ``(mean x^p)^(1/p)`` of each channel (activations clamped at 1e-6).

    Args:
        p: initial exponent (> 0); 1 is SPoC, large values approach MAC.
        learn_p: make ``p`` a trainable parameter (else a fixed buffer).
    """

    def __init__(
        self, in_channels: int, out_dim: int | None = None, *, p: float = 3.0, learn_p: bool = True
    ):
        super().__init__(in_channels, out_dim)
        value = torch.tensor([check_float(p, "p", minimum=0, exclusive_minimum=True)])
        if not isinstance(learn_p, bool):
            raise TypeError(f"learn_p: expected True or False, got {learn_p!r}")
        if learn_p:
            self.p = nn.Parameter(value)
        else:
            self.register_buffer("p", value)

    def pool(self, features: torch.Tensor) -> torch.Tensor:
        p = self.p.to(features.dtype)
        return features.clamp(min=_EPS).pow(p).mean(dim=(2, 3)).pow(1.0 / p)


@functools.lru_cache(maxsize=256)
def rmac_regions(
    height: int, width: int, levels: int = 3, overlap: float = 0.4
) -> tuple[tuple[int, tuple[int, ...], tuple[int, ...]], ...]:
    """Tolias et al.'s R-MAC grid: per level, ``(side, top rows, left columns)`` of its squares.

    Level l (1..levels) holds squares of side ``floor(2·min(H, W) / (l + 1))`` laid out
    uniformly, with l squares along the short side and l + m along the long one, m chosen
    so that consecutive squares overlap by about ``overlap``. Levels whose squares would be
    empty (tiny maps) are left out.
    """
    short = min(height, width)
    steps = torch.arange(2, 8, dtype=torch.float64)
    shift = (max(height, width) - short) / (steps - 1)
    extra = int(torch.argmin(torch.abs((short**2 - short * shift) / short**2 - overlap))) + 1
    extra_w = extra if height < width else 0
    extra_h = extra if height > width else 0
    grid = []
    for level in range(1, levels + 1):
        side = math.floor(2 * short / (level + 1))
        if side == 0:
            continue
        half = math.floor(side / 2 - 1)
        rows = _positions(height, side, level + extra_h, half)
        cols = _positions(width, side, level + extra_w, half)
        grid.append((side, rows, cols))
    return tuple(grid)


def _positions(size: int, side: int, count: int, half: int) -> tuple[int, ...]:
    step = 0.0 if count == 1 else (size - side) / (count - 1)
    return tuple(int(math.floor(half + index * step)) - half for index in range(count))


class RMAC(PoolingHead):
    """Regional MAC: L2-normalised MACs of the Tolias regions, summed, L2-normalised.

    Vectorised: per level, one separable stride-1 max-pool gives the MAC of every window
    of that side, and the regions are gathered from it (no loop over regions).

    Args:
        levels: number of scales L.
        overlap: target overlap of neighbouring regions.
    """

    def __init__(
        self, in_channels: int, out_dim: int | None = None, *, levels: int = 3, overlap: float = 0.4
    ):
        super().__init__(in_channels, out_dim)
        self.levels = check_int(levels, "levels", minimum=1)
        self.overlap = check_float(overlap, "overlap", minimum=0)
        if self.overlap >= 1:
            raise ValueError(f"overlap: expected a fraction in [0, 1), got {self.overlap}")

    def regions(self, features: torch.Tensor) -> torch.Tensor:
        """The region MACs B×C×R, unnormalised (R regions over all levels)."""
        batch, channels, height, width = features.shape
        pooled = []
        for side, rows, cols in rmac_regions(height, width, self.levels, self.overlap):
            windows = F.max_pool2d(features, (side, 1), stride=1)
            windows = windows[:, :, torch.tensor(rows, device=features.device)]
            windows = F.max_pool2d(windows, (1, side), stride=1)
            windows = windows[:, :, :, torch.tensor(cols, device=features.device)]
            pooled.append(windows.reshape(batch, channels, -1))
        return torch.cat(pooled, dim=2)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        self.check_features(features)
        regions = l2_normalize(self.regions(features).transpose(1, 2))  # B×R×C
        if self.projection is not None:
            regions = l2_normalize(self.projection(regions))
        return l2_normalize(regions.sum(dim=1))
