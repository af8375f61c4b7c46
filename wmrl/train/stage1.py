"""Stage 1: V-JEPA encoder pretraining on replay clips.

The context encoder sees the visible tokens of each frame stack, the predictor fills in the
masked ones, and the loss compares them with the EMA target encoder's layer-normed features.
Runs are exactly resumable on CPU: the checkpoint holds model, optimizer, scheduler, every RNG
(torch, the data sampler's, the mask generator's; one set per process) and the step.

Data-parallel under torchrun (gloo on CPU, nccl on GPU): each process draws its own share of
the global batch from its own random stream, gradients are averaged by DDP, and the EMA target
update is the same deterministic function on every replica; rank 0 logs and checkpoints.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from wmrl.config import to_dict
from wmrl.errors import ConfigError
from wmrl.data.replay import ReplayDataset, WindowSampler
from wmrl.eval.probes import collapse_stats, collapse_warning
from wmrl.models.jepa import JEPA
from wmrl.models.masks import sample_masks
from wmrl.train.checkpoint import (CHECKPOINT_NAME, generator_state, load_checkpoint, rng_state, save_checkpoint,
                                   set_generator_state, set_rng_state)
from wmrl.train.config import OptimConfig, Stage1Config
from wmrl.train.logger import MetricsLog


def lr_factor(step: int, cfg: OptimConfig) -> float:
    """Linear warmup, then cosine decay from lr to min_lr (as a multiple of lr)."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    floor = cfg.min_lr / cfg.lr
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def make_optimizer(model: JEPA, cfg: OptimConfig) -> torch.optim.AdamW:
    """AdamW; no weight decay on biases, norms and the mask token (1-D parameters)."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim > 1 and p is not model.predictor.mask_token]
    no_decay = [p for p in params if not any(p is q for q in decay)]
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)


def build_model(payload: dict) -> JEPA:
    """Rebuild the JEPA of a stage-1 checkpoint (no training state)."""
    from wmrl.config import from_dict

    cfg = from_dict(Stage1Config, payload["config"], source="checkpoint")
    model = JEPA(cfg.model, tuple(payload["stack_shape"]))
    model.load_state_dict(payload["model"])
    return model.eval()


def init_distributed(device: str) -> tuple[int, int]:
    """(rank, world size); joins the process group when launched by torchrun."""
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dist.init_process_group("nccl" if torch.device(device).type == "cuda" else "gloo")
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class Stage1Trainer:
    def __init__(self, cfg: Stage1Config, data: ReplayDataset, run_dir: str | Path, val_fraction: float = 0.1,
                 device: str = "cpu", progress: bool = True):
        self.cfg, self.data, self.run_dir, self.device = cfg, data, Path(run_dir), device
        self.val_fraction = val_fraction
        self.rank, self.world = init_distributed(device)
        self.progress = progress and self.rank == 0
        if cfg.optim.batch_size % self.world:
            raise ConfigError(f"stage1.optim.batch_size {cfg.optim.batch_size} does not split over {self.world} processes")
        local_batch = cfg.optim.batch_size // self.world
        torch.manual_seed(cfg.seed)
        self.stack_shape = (data.frame_stack, *data.frame_shape)  # (K, C, H, W)
        try:
            self.model = JEPA(cfg.model, self.stack_shape).to(device)
        except ValueError as e:  # e.g. a patch size that does not divide the frames
            raise ConfigError(f"stage1.model: {e}") from None
        self.optimizer = make_optimizer(self.model, cfg.optim)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: lr_factor(s, cfg.optim))
        train_ids, val_ids = data.split(val_fraction)
        if len(val_ids) == 0:  # too few episodes to hold any out: validate on training episodes
            val_ids = train_ids
        # Stacks, or clips that reach the EVENTUALLY stack for the tri-temporal objectives.
        tri = cfg.model.tri_temporal
        self.clip_len = tri.eventually + 1 if tri.enabled else 1
        # Own random streams per process: together they draw the global batch.
        self.sampler = WindowSampler(data, self.clip_len, local_batch, episodes=train_ids, seed=cfg.seed + 1000 * self.rank)
        self.mask_rng = np.random.default_rng(cfg.seed + 1 + 1000 * self.rank)
        # Fixed validation batches and masks, so val losses are comparable across evaluations.
        val_sampler = WindowSampler(data, self.clip_len, cfg.optim.batch_size, episodes=val_ids, seed=cfg.seed + 2)
        val_mask_rng = np.random.default_rng(cfg.seed + 3)
        self.val_set = [(self._obs(val_sampler.sample().obs), sample_masks(cfg.mask, self.model.grid, cfg.optim.batch_size, val_mask_rng))
                        for _ in range(cfg.val_batches)]
        self.step, self.best_val, self.bad_evals = 0, float("inf"), 0
        module = self.model
        if self.world > 1:  # the target encoder has no trainable parameters: DDP skips it
            module = DistributedDataParallel(module, broadcast_buffers=False)
        self.train_module = torch.compile(module) if cfg.compile else module

    def _obs(self, clips: np.ndarray) -> np.ndarray:
        """[B, T, K, C, H, W] clips -> the stacks [B, K, C, H, W] plain masked prediction trains on."""
        return clips if self.clip_len > 1 else clips[:, 0]

    # ---------------------------------------------------------------- checkpoints
    def _random_state(self) -> dict:
        return {"torch": rng_state(), "sampler": generator_state(self.sampler.rng), "mask": generator_state(self.mask_rng)}

    def save(self) -> None:
        """Rank 0 writes one checkpoint holding every process's random state (a collective call)."""
        states = [None] * self.world
        if self.world > 1:
            dist.all_gather_object(states, self._random_state())
        else:
            states = [self._random_state()]
        if self.rank == 0:
            save_checkpoint(self.run_dir / CHECKPOINT_NAME, {
                "stage": 1, "config": to_dict(self.cfg), "stack_shape": list(self.stack_shape), "step": self.step,
                "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "random": states, "best_val": self.best_val,
                "bad_evals": self.bad_evals, "dataset": str(self.data.root), "val_fraction": self.val_fraction})
        if self.world > 1:
            dist.barrier()  # nobody races ahead of a checkpoint that is still being written

    def restore(self) -> None:
        payload = load_checkpoint(self.run_dir / CHECKPOINT_NAME, map_location=self.device)
        if len(payload["random"]) != self.world:
            raise ConfigError(f"{self.run_dir} was trained by {len(payload['random'])} process(es); resume it with as many")
        self.model.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scheduler.load_state_dict(payload["scheduler"])
        mine = payload["random"][self.rank]
        set_rng_state(mine["torch"])
        set_generator_state(self.sampler.rng, mine["sampler"])
        set_generator_state(self.mask_rng, mine["mask"])
        self.step, self.best_val, self.bad_evals = payload["step"], payload["best_val"], payload["bad_evals"]

    def replica_spread(self) -> float:
        """Largest difference of a parameter checksum across processes (0.0: identical replicas)."""
        checksum = torch.stack([p.detach().double().sum() for p in self.model.parameters()]).sum().reshape(1)
        if self.world == 1:
            return 0.0
        gathered = [torch.zeros_like(checksum) for _ in range(self.world)]
        dist.all_gather(gathered, checksum)
        return float(torch.cat(gathered).max() - torch.cat(gathered).min())

    # ---------------------------------------------------------------- training
    def autocast(self):
        if self.cfg.precision == "bf16":
            return torch.autocast(device_type=torch.device(self.device).type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def momentum(self) -> float:
        start, end = self.cfg.ema
        return start + (end - start) * self.step / self.cfg.optim.steps

    def train_step(self) -> float:
        obs = torch.from_numpy(self._obs(self.sampler.sample().obs)).to(self.device)  # [B, (T,) K, C, H, W]
        masks = sample_masks(self.cfg.mask, self.model.grid, len(obs), self.mask_rng)
        self.model.train()
        with self.autocast():
            loss = self.train_module(obs, masks)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.optim.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.optim.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.model.update_target(self.momentum())
        self.step += 1
        return float(loss.detach())

    @torch.no_grad()
    def evaluate(self) -> dict:
        self.model.eval()
        losses, features = [], []
        for obs, masks in self.val_set:
            obs = torch.from_numpy(obs).to(self.device)
            with self.autocast():
                losses.append(float(self.model(obs, masks)))
                stacks = obs[:, 0] if obs.ndim == 6 else obs
                features.append(self.model.target_encoder(stacks).float().mean(1).cpu().numpy())  # [B, D]
        stats = collapse_stats(np.concatenate(features))
        return {"step": self.step, "val_loss": float(np.mean(losses)), **{f"feat_{k}": v for k, v in stats.items()}}

    def train(self, resume: bool = False) -> dict:
        """Train to `optim.steps` (or early stop); returns the last evaluation row."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        log = MetricsLog(self.run_dir, self.cfg.wandb, to_dict(self.cfg)) if self.rank == 0 else None
        if resume:
            self.restore()
            if log:
                log.truncate_after(self.step)
        total = self.cfg.optim.steps
        bar = tqdm(total=total, initial=self.step, unit="step", disable=not self.progress, mininterval=0.5)
        last_eval, start = {}, time.perf_counter()
        try:
            while self.step < total:
                loss = self.train_step()
                bar.update(1)
                if log and self.step % self.cfg.log_every == 0:
                    log.log({"step": self.step, "loss": loss, "lr": self.scheduler.get_last_lr()[0],
                             "momentum": self.momentum()})
                    bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
                stop = False
                if self.step % self.cfg.eval_every == 0 or self.step == total:
                    last_eval = self.evaluate()
                    last_eval["seconds"] = time.perf_counter() - start
                    if self.world > 1:
                        last_eval["replica_spread"] = self.replica_spread()
                    if log:
                        log.log(last_eval)
                    # Absolute std is data-dependent (Breakout frames differ in a few pixels, so pooled
                    # features vary ~1e-3 even when probes are good): warn only on a near-zero std or rank.
                    stats = {k[5:]: v for k, v in last_eval.items() if k.startswith("feat_")}
                    warning = collapse_warning(stats, min_std=1e-5)
                    if warning and self.rank == 0:
                        tqdm.write(f"wmrl: warning: step {self.step}: {warning}")
                    if last_eval["val_loss"] < self.best_val:
                        self.best_val, self.bad_evals = last_eval["val_loss"], 0
                    else:
                        self.bad_evals += 1
                        stop = 0 < self.cfg.patience <= self.bad_evals
                if self.step % self.cfg.checkpoint_every == 0 or self.step == total or stop:
                    self.save()
                if stop:
                    if self.rank == 0:
                        tqdm.write(f"wmrl: early stop at step {self.step}: no better val loss in {self.bad_evals} evaluations")
                    break
        finally:
            bar.close()
            if log:
                log.close()
        return last_eval
