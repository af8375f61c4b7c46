"""Stage 1: V-JEPA encoder pretraining on replay clips.

The context encoder sees the visible tokens of each frame stack, the predictor fills in the
masked ones, and the loss compares them with the EMA target encoder's layer-normed features.
The loop (schedule, DDP, exact resume, metrics) is `wmrl.train.trainer.Trainer`; this file adds
the model, the data and mask streams, the EMA update and the collapse monitor. The EMA update is
the same deterministic function on every replica, so data-parallel replicas stay identical.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from wmrl.data.replay import ReplayDataset, WindowSampler
from wmrl.errors import ConfigError
from wmrl.eval.probes import collapse_stats, collapse_warning
from wmrl.models.jepa import JEPA
from wmrl.models.masks import sample_masks
from wmrl.train.config import Stage1Config
from wmrl.train.trainer import Trainer


def build_model(payload: dict) -> JEPA:
    """Rebuild the JEPA of a stage-1 checkpoint (no training state)."""
    from wmrl.config import from_dict

    cfg = from_dict(Stage1Config, payload["config"], source="checkpoint")
    model = JEPA(cfg.model, tuple(payload["stack_shape"]))
    model.load_state_dict(payload["model"])
    return model.eval()


class Stage1Trainer(Trainer):
    stage = 1

    def __init__(self, cfg: Stage1Config, data: ReplayDataset, run_dir: str | Path, val_fraction: float = 0.1,
                 device: str = "cpu", progress: bool = True):
        super().__init__(cfg, run_dir, device, progress)
        self.data, self.val_fraction = data, val_fraction
        self.stack_shape = data.stack_shape  # (K, C, H, W)
        try:
            model = JEPA(cfg.model, self.stack_shape)
        except ValueError as e:  # e.g. a patch size that does not divide the frames
            raise ConfigError(f"stage1.model: {e}") from None
        train_ids, val_ids = data.split(val_fraction)
        if len(val_ids) == 0:  # too few episodes to hold any out: validate on training episodes
            val_ids = train_ids
        # Stacks, or clips that reach the EVENTUALLY stack for the tri-temporal objectives.
        tri = cfg.model.tri_temporal
        self.clip_len = tri.eventually + 1 if tri.enabled else 1
        # Own random streams per process: together they draw the global batch.
        self.sampler = WindowSampler(data, self.clip_len, self.local_batch, episodes=train_ids, seed=cfg.seed + 1000 * self.rank)
        self.mask_rng = np.random.default_rng(cfg.seed + 1 + 1000 * self.rank)
        # Fixed validation batches and masks, so val losses are comparable across evaluations.
        val_sampler = WindowSampler(data, self.clip_len, cfg.optim.batch_size, episodes=val_ids, seed=cfg.seed + 2)
        val_mask_rng = np.random.default_rng(cfg.seed + 3)
        self.val_set = [(self._obs(val_sampler.sample().obs), sample_masks(cfg.mask, model.grid, cfg.optim.batch_size, val_mask_rng))
                        for _ in range(cfg.val_batches)]
        self.setup(model, no_decay=[model.predictor.mask_token])

    def _obs(self, clips: np.ndarray) -> np.ndarray:
        """[B, T, K, C, H, W] clips -> the stacks [B, K, C, H, W] plain masked prediction trains on."""
        return clips if self.clip_len > 1 else clips[:, 0]

    def generators(self) -> dict[str, np.random.Generator]:
        return {"sampler": self.sampler.rng, "mask": self.mask_rng}

    def payload(self) -> dict:
        return {"stack_shape": list(self.stack_shape), "dataset": str(self.data.root), "val_fraction": self.val_fraction,
                "data_source": self.data.meta["wmrl"].get("source")}

    def momentum(self) -> float:
        start, end = self.cfg.ema
        return start + (end - start) * self.step / self.cfg.optim.steps

    def loss(self) -> tuple[torch.Tensor, dict[str, float]]:
        obs = torch.from_numpy(self._obs(self.sampler.sample().obs)).to(self.device)  # [B, (T,) K, C, H, W]
        masks = sample_masks(self.cfg.mask, self.model.grid, len(obs), self.mask_rng)
        return self.train_module(obs, masks), {"momentum": self.momentum()}

    def after_step(self) -> None:
        self.model.update_target(self.momentum())

    def validate(self) -> dict[str, float]:
        losses, features = [], []
        for obs, masks in self.val_set:
            obs = torch.from_numpy(obs).to(self.device)
            with self.autocast():
                losses.append(float(self.model(obs, masks)))
                stacks = obs[:, 0] if obs.ndim == 6 else obs
                features.append(self.model.target_encoder(stacks).float().mean(1).cpu().numpy())  # [B, D]
        stats = collapse_stats(np.concatenate(features))
        return {"val_loss": float(np.mean(losses)), **{f"feat_{k}": v for k, v in stats.items()}}

    def on_evaluation(self, row: dict) -> None:
        # Absolute std is data-dependent (Breakout frames differ in a few pixels, so pooled
        # features vary ~1e-3 even when probes are good): warn only on a near-zero std or rank.
        warning = collapse_warning({k[5:]: v for k, v in row.items() if k.startswith("feat_")}, min_std=1e-5)
        if warning:
            tqdm.write(f"wmrl: warning: step {self.step}: {warning}")
