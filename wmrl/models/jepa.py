"""V-JEPA pretraining model: context encoder, EMA target encoder, masked predictor, latent loss."""

from __future__ import annotations

import copy
import torch
import torch.nn.functional as F
from torch import nn

from wmrl.models.config import JEPAConfig
from wmrl.models.masks import Mask
from wmrl.models.predictor import MaskedPredictor
from wmrl.models.vit import VisionTransformer, gather_tokens


class JEPA(nn.Module):
    """`stack_shape` is (K, C, H, W) of the observations it learns from."""

    def __init__(self, cfg: JEPAConfig, stack_shape: tuple[int, int, int, int]):
        super().__init__()
        k, c, h, w = stack_shape
        self.cfg = cfg
        self.encoder = VisionTransformer(cfg.encoder, k, c, (h, w))
        self.target_encoder = copy.deepcopy(self.encoder).requires_grad_(False)
        self.predictor = MaskedPredictor(cfg.predictor, self.encoder.width, self.encoder.grid)

    @property
    def grid(self) -> tuple[int, int, int]:
        return self.encoder.grid

    def forward(self, obs: torch.Tensor, masks: list[Mask]) -> torch.Tensor:
        """The training loss (forward is what DistributedDataParallel wraps)."""
        return self.loss(obs, masks)

    def loss(self, obs: torch.Tensor, masks: list[Mask]) -> torch.Tensor:
        """obs [B, K, C, H, W] uint8; masks from `sample_masks`. Mean over masks of the L1 (or L2)
        distance between predicted and layer-normed target features at the target tokens."""
        with torch.no_grad():  # stop-grad: the target sees the full input
            target = self.target_encoder(obs)
            target = F.layer_norm(target, target.shape[-1:])  # [B, N, D]
        losses = []
        for context_idx, target_idx in masks:
            context_idx = torch.as_tensor(context_idx, device=obs.device)
            target_idx = torch.as_tensor(target_idx, device=obs.device)
            context = self.encoder(obs, keep=context_idx)  # [B, Nc, D]
            pred = self.predictor(context, context_idx, target_idx)  # [B, Nt, D]
            wanted = gather_tokens(target, target_idx)
            losses.append(F.l1_loss(pred, wanted) if self.cfg.loss == "l1" else F.mse_loss(pred, wanted))
        return torch.stack(losses).mean()

    @torch.no_grad()
    def update_target(self, momentum: float) -> None:
        """target <- momentum * target + (1 - momentum) * context encoder."""
        for t, s in zip(self.target_encoder.parameters(), self.encoder.parameters()):
            t.lerp_(s.detach(), 1.0 - momentum)
