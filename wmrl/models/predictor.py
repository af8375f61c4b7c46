"""The narrow JEPA predictor: context tokens + mask tokens at target positions -> target features."""

from __future__ import annotations

import torch
from torch import nn

from wmrl.models.config import PredictorConfig
from wmrl.models.vit import Block, gather_tokens, sincos_3d


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

    def forward(self, context: torch.Tensor, context_idx: torch.Tensor, target_idx: torch.Tensor) -> torch.Tensor:
        """context [B, Nc, D] at positions context_idx [B, Nc] -> predictions [B, Nt, D] at target_idx."""
        b = context.shape[0]
        pos = self.pos.expand(b, -1, -1)
        x = self.embed(context) + gather_tokens(pos, context_idx)
        queries = self.mask_token + gather_tokens(pos, target_idx)  # [B, Nt, Dp]
        x = torch.cat([x, queries], 1)
        for block in self.blocks:
            x = block(x)
        return self.out(self.norm(x[:, context.shape[1]:]))
