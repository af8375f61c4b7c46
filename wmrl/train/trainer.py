"""The training loop both stages share: optimiser, schedule, DDP, checkpoints, metrics, early stop.

A stage subclasses `Trainer` and supplies the model, how to draw a batch and compute its loss,
what to validate, and its own random streams. The loop here owns everything else:

* AdamW (no decay on 1-D parameters), linear warmup + cosine decay, gradient clipping, optional
  bf16 autocast (a GPU option) and `torch.compile`.
* Data-parallel under torchrun (gloo on CPU, nccl on GPU): every process draws its own share of
  the global batch from its own random streams, DDP averages gradients, rank 0 logs and writes
  checkpoints, and the replica parameter spread is logged at every evaluation.
* Exact resume on CPU: a checkpoint holds model, optimizer, scheduler, step, the early-stop
  counters and every process's random states, so a run killed at any moment and resumed logs
  the same losses as one that never stopped.
"""

from __future__ import annotations

import abc
import contextlib
import math
import os
import time
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from wmrl.config import to_dict
from wmrl.errors import ConfigError
from wmrl.train.checkpoint import (CHECKPOINT_NAME, generator_state, load_checkpoint, rng_state, save_checkpoint,
                                   set_generator_state, set_rng_state)
from wmrl.train.config import LoopConfig, OptimConfig
from wmrl.train.logger import MetricsLog


def lr_factor(step: int, cfg: OptimConfig) -> float:
    """Linear warmup, then cosine decay from lr to min_lr (as a multiple of lr)."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    floor = cfg.min_lr / cfg.lr
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def make_optimizer(params: Iterable[nn.Parameter], cfg: OptimConfig, no_decay: Iterable[nn.Parameter] = ()) -> torch.optim.AdamW:
    """AdamW; no weight decay on biases and norms (1-D parameters) nor on `no_decay`."""
    params = [p for p in params if p.requires_grad]
    exempt = {id(p) for p in no_decay}
    decay = [p for p in params if p.ndim > 1 and id(p) not in exempt]
    decayed = {id(p) for p in decay}
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": [p for p in params if id(p) not in decayed], "weight_decay": 0.0}], lr=cfg.lr)


def init_distributed(device: str) -> tuple[int, int]:
    """(rank, world size); joins the process group when launched by torchrun."""
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dist.init_process_group("nccl" if torch.device(device).type == "cuda" else "gloo")
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class Trainer(abc.ABC):
    """Subclasses call `__init__`, build their model and streams, then call `setup(model)`.

    Hooks: `loss()` draws a batch and returns (loss, extra metrics); `after_step()` runs after
    each optimiser step (EMA updates); `validate()` returns the validation metrics, including
    "val_loss"; `generators()` names the NumPy generators whose states a checkpoint must hold;
    `payload()` adds stage-specific entries to the checkpoint.
    """

    stage = 0

    def __init__(self, cfg: LoopConfig, run_dir: str | Path, device: str = "cpu", progress: bool = True):
        self.cfg, self.run_dir, self.device = cfg, Path(run_dir), device
        self.rank, self.world = init_distributed(device)
        self.progress = progress and self.rank == 0
        if cfg.optim.batch_size % self.world:
            raise ConfigError(f"optim.batch_size {cfg.optim.batch_size} does not split over {self.world} processes")
        self.local_batch = cfg.optim.batch_size // self.world
        torch.manual_seed(cfg.seed)
        self.step, self.best_val, self.bad_evals = 0, float("inf"), 0

    def setup(self, model: nn.Module, no_decay: Iterable[nn.Parameter] = ()) -> None:
        self.model = model.to(self.device)
        self.optimizer = make_optimizer(model.parameters(), self.cfg.optim, no_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: lr_factor(s, self.cfg.optim))
        module = model
        if self.world > 1:  # frozen parts (EMA targets, a frozen encoder) have no gradients: DDP skips them
            module = DistributedDataParallel(module, broadcast_buffers=False)
        self.train_module = torch.compile(module) if self.cfg.compile else module

    # ---------------------------------------------------------------- stage hooks
    @abc.abstractmethod
    def loss(self) -> tuple[torch.Tensor, dict[str, float]]:
        """Draw this process's batch and return (loss, extra metrics to log)."""

    def after_step(self) -> None:
        pass

    @abc.abstractmethod
    def validate(self) -> dict[str, float]:
        """Metrics on held-out data (runs under no_grad, model in eval mode); must hold "val_loss"."""

    def generators(self) -> dict[str, np.random.Generator]:
        return {}

    def payload(self) -> dict:
        return {}

    # ---------------------------------------------------------------- checkpoints
    def _random_state(self) -> dict:
        return {"torch": rng_state(), **{k: generator_state(g) for k, g in self.generators().items()}}

    def save(self) -> None:
        """Rank 0 writes one checkpoint holding every process's random state (a collective call)."""
        states = [None] * self.world
        if self.world > 1:
            dist.all_gather_object(states, self._random_state())
        else:
            states = [self._random_state()]
        if self.rank == 0:
            save_checkpoint(self.run_dir / CHECKPOINT_NAME, {
                "stage": self.stage, "config": to_dict(self.cfg), "step": self.step,
                "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "random": states, "best_val": self.best_val,
                "bad_evals": self.bad_evals, **self.payload()})
        if self.world > 1:
            dist.barrier()  # nobody races ahead of a checkpoint that is still being written

    def restore(self) -> None:
        payload = load_checkpoint(self.run_dir / CHECKPOINT_NAME, map_location=self.device)
        if payload.get("stage") != self.stage:
            raise ConfigError(f"{self.run_dir} holds a stage-{payload.get('stage')} run, not stage {self.stage}")
        if len(payload["random"]) != self.world:
            raise ConfigError(f"{self.run_dir} was trained by {len(payload['random'])} process(es); resume it with as many")
        self.model.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scheduler.load_state_dict(payload["scheduler"])
        mine = payload["random"][self.rank]
        set_rng_state(mine["torch"])
        for name, gen in self.generators().items():
            set_generator_state(gen, mine[name])
        self.step, self.best_val, self.bad_evals = payload["step"], payload["best_val"], payload["bad_evals"]
        # The schedule follows this run's config, so a run resumed with more steps decays towards
        # the new end (a SIGKILL resume computes the very lr the checkpoint holds).
        for group, base in zip(self.optimizer.param_groups, self.scheduler.base_lrs):
            group["lr"] = base * lr_factor(self.step, self.cfg.optim)

    def replica_spread(self) -> float:
        """Largest difference of a parameter checksum across processes (0.0: identical replicas)."""
        checksum = torch.stack([p.detach().double().sum() for p in self.model.parameters()]).sum().reshape(1)
        if self.world == 1:
            return 0.0
        gathered = [torch.zeros_like(checksum) for _ in range(self.world)]
        dist.all_gather(gathered, checksum)
        return float(torch.cat(gathered).max() - torch.cat(gathered).min())

    # ---------------------------------------------------------------- the loop
    def autocast(self):
        if self.cfg.precision == "bf16":
            return torch.autocast(device_type=torch.device(self.device).type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def train_step(self) -> dict[str, float]:
        self.model.train()
        with self.autocast():
            loss, extra = self.loss()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.optim.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.optim.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.after_step()
        self.step += 1
        return {"loss": float(loss.detach()), **extra}

    def on_evaluation(self, row: dict) -> None:
        """Called on rank 0 after each evaluation (stage 1 warns about collapse here)."""

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
                row = self.train_step()
                bar.update(1)
                if log and self.step % self.cfg.log_every == 0:
                    log.log({"step": self.step, **row, "lr": self.scheduler.get_last_lr()[0]})
                    bar.set_postfix(loss=f"{row['loss']:.4f}", refresh=False)
                stop = False
                if self.step % self.cfg.eval_every == 0 or self.step == total:
                    with torch.no_grad():
                        self.model.eval()
                        last_eval = {"step": self.step, **self.validate()}
                    last_eval["seconds"] = time.perf_counter() - start
                    if self.world > 1:
                        last_eval["replica_spread"] = self.replica_spread()
                    if log:
                        log.log(last_eval)
                        self.on_evaluation(last_eval)
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
