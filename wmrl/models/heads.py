"""Scale-robust scalar heads: symlog two-hot regression (DreamerV3), for rewards and values.

A scalar y is squashed by symlog and spread over its two nearest bins of a fixed grid, so one
cross-entropy loss fits rewards of 1 and of 1000 alike; the prediction is the symexp of the
expected bin. Breakout pays 1, 4 or 7 per brick, other games far more.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def symlog(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * torch.log1p(x.abs())


def symexp(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * torch.expm1(x.abs())


class TwoHot(nn.Module):
    """Bins evenly spaced over symlog values in [-bin_range, bin_range]."""

    def __init__(self, bins: int, bin_range: float):
        super().__init__()
        self.register_buffer("bins", torch.linspace(-bin_range, bin_range, bins), persistent=False)

    def encode(self, y: torch.Tensor) -> torch.Tensor:
        """y [...] -> two-hot target distribution [..., bins]."""
        y = symlog(y).clamp(self.bins[0], self.bins[-1])
        hi = torch.searchsorted(self.bins, y.contiguous()).clamp(1, len(self.bins) - 1)
        lo = hi - 1
        w_hi = (y - self.bins[lo]) / (self.bins[hi] - self.bins[lo])
        target = torch.zeros(*y.shape, len(self.bins), device=y.device, dtype=y.dtype)
        target.scatter_(-1, lo.unsqueeze(-1), (1 - w_hi).unsqueeze(-1))
        return target.scatter_add_(-1, hi.unsqueeze(-1), w_hi.unsqueeze(-1))

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy between logits [..., bins] and the two-hot encoding of y [...]."""
        return -(self.encode(y) * F.log_softmax(logits, -1)).sum(-1).mean()

    def decode(self, logits: torch.Tensor) -> torch.Tensor:
        """logits [..., bins] -> predicted scalar [...]."""
        return symexp((logits.softmax(-1) * self.bins).sum(-1))
