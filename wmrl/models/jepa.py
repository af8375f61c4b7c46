"""V-JEPA pretraining model: context encoder, EMA target encoder, masked predictor, latent loss."""

from __future__ import annotations

import copy
import torch
import torch.nn.functional as F
from torch import nn

from wmrl.models.config import JEPAConfig
from wmrl.models.masks import Mask
from wmrl.models.predictor import MaskedPredictor, OutcomeHead
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
        if cfg.tri_temporal.enabled:
            self.soon_shift = nn.Parameter(torch.zeros(cfg.predictor.width))
            self.outcome = OutcomeHead(self.encoder.width, cfg.tri_temporal.queries, cfg.encoder.dims()[2])

    @property
    def grid(self) -> tuple[int, int, int]:
        return self.encoder.grid

    def forward(self, obs: torch.Tensor, masks: list[Mask]) -> torch.Tensor:
        """The training loss (forward is what DistributedDataParallel wraps): masked prediction
        for stacks [B, K, C, H, W], the weighted tri-temporal sum for clips [B, T, K, C, H, W]."""
        if obs.ndim == 6:
            terms = self.tri_temporal_losses(obs, masks)
            return sum(w * terms[k] for w, k in zip(self.cfg.tri_temporal.weights, ("now", "soon", "eventually")))
        return self.loss(obs, masks)

    def _target(self, obs: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():  # stop-grad: the target sees the full input
            target = self.target_encoder(obs)
            return F.layer_norm(target, target.shape[-1:])  # [B, N, D]

    def _distance(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.l1_loss(pred, target) if self.cfg.loss == "l1" else F.mse_loss(pred, target)

    def tri_temporal_losses(self, clip: torch.Tensor, masks: list[Mask]) -> dict[str, torch.Tensor]:
        """clip [B, T, K, C, H, W] uint8 with T > tri_temporal.eventually; masks for its first stack."""
        tt = self.cfg.tri_temporal
        now, soon, later = clip[:, 0], clip[:, tt.soon], clip[:, tt.eventually]
        context = self.encoder(now)  # [B, N, D]: all NOW tokens, no mask
        every = torch.arange(context.shape[1], device=clip.device).expand(len(clip), -1)  # [B, N]
        pred_soon = self.predictor(context, every, every, query_shift=self.soon_shift)
        outcome = F.normalize(self.outcome(context), dim=-1)  # [B, D]
        future = F.normalize(self._target(later).mean(1), dim=-1)  # [B, D]
        logits = outcome @ future.T / tt.temperature  # [B, B]: the matching future is on the diagonal
        return {"now": self.loss(now, masks), "soon": self._distance(pred_soon, self._target(soon)),
                "eventually": F.cross_entropy(logits, torch.arange(len(clip), device=clip.device))}

    def loss(self, obs: torch.Tensor, masks: list[Mask]) -> torch.Tensor:
        """obs [B, K, C, H, W] uint8; masks from `sample_masks`. Mean over masks of the L1 (or L2)
        distance between predicted and layer-normed target features at the target tokens."""
        target = self._target(obs)
        losses = []
        for context_idx, target_idx in masks:
            context_idx = torch.as_tensor(context_idx, device=obs.device)
            target_idx = torch.as_tensor(target_idx, device=obs.device)
            context = self.encoder(obs, keep=context_idx)  # [B, Nc, D]
            pred = self.predictor(context, context_idx, target_idx)  # [B, Nt, D]
            wanted = gather_tokens(target, target_idx)
            losses.append(self._distance(pred, wanted))
        return torch.stack(losses).mean()

    @torch.no_grad()
    def update_target(self, momentum: float) -> None:
        """target <- momentum * target + (1 - momentum) * context encoder."""
        for t, s in zip(self.target_encoder.parameters(), self.encoder.parameters()):
            t.lerp_(s.detach(), 1.0 - momentum)
