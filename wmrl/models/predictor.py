"""The narrow JEPA predictor: context tokens + mask tokens at target positions -> target features."""

from __future__ import annotations

import torch
from torch import nn

from wmrl.models.config import PredictorConfig
from wmrl.models.vit import Block, gather_tokens, sincos_3d


class OutcomeHead(nn.Module):
    """Learned queries attend over a stack's tokens: [B, N, D] -> one outcome vector [B, D]."""

    def __init__(self, width: int, queries: int, heads: int):
        super().__init__()
        self.queries = nn.Parameter(torch.randn(1, queries, width) * 0.02)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.out = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        pooled, _ = self.attn(self.queries.expand(len(tokens), -1, -1), tokens, tokens)  # [B, Q, D]
        return self.out(pooled.mean(1))


class MaskedPredictor(nn.Module):
    def __init__(self, cfg: PredictorConfig, encoder_width: int, grid: tuple[int, int, int]):
        super().__init__()
        self.embed = nn.Linear(encoder_width, cfg.width)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, cfg.width))
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        self.register_buffer("pos", sincos_3d(grid, cfg.width), persistent=False)
        self.blocks = nn.ModuleList(Block(cfg.width, cfg.heads) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.width)
        self.out = nn.Linear(cfg.width, encoder_width)

    def forward(self, context: torch.Tensor, context_idx: torch.Tensor, target_idx: torch.Tensor,
                query_shift: torch.Tensor | None = None) -> torch.Tensor:
        """context [B, Nc, D] at positions context_idx [B, Nc] -> predictions [B, Nt, D] at target_idx.

        `query_shift` [Dp] is added to every query: it marks targets that lie in another stack
        (the tri-temporal SOON objective) rather than in the context's own.
        """
        b = context.shape[0]
        pos = self.pos.expand(b, -1, -1)
        x = self.embed(context) + gather_tokens(pos, context_idx)
        queries = self.mask_token + gather_tokens(pos, target_idx)  # [B, Nt, Dp]
        if query_shift is not None:
            queries = queries + query_shift
        x = torch.cat([x, queries], 1)
        for block in self.blocks:
            x = block(x)
        return self.out(self.norm(x[:, context.shape[1]:]))
