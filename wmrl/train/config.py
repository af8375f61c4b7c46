"""Training hyperparameters as plain dataclasses (no torch import), mapped from configs/*.yaml."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from wmrl.models.config import JEPAConfig, MaskConfig, WorldModelConfig


@dataclass
class OptimConfig:
    steps: int = 2000
    batch_size: int = 32
    lr: float = 5e-4
    min_lr: float = 1e-5  # the cosine schedule ends here
    warmup_steps: int = 100
    weight_decay: float = 0.04
    grad_clip: float = 1.0  # max gradient norm; 0 turns clipping off

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 1 or self.warmup_steps < 0:
            raise ValueError("optim.steps and optim.batch_size must be >= 1, optim.warmup_steps >= 0")


@dataclass
class LoopConfig:
    """What every stage's training loop needs (wmrl.train.trainer.Trainer)."""

    optim: OptimConfig = field(default_factory=OptimConfig)
    eval_every: int = 200  # steps between validation loss / collapse checks
    checkpoint_every: int = 200
    val_batches: int = 4  # fixed held-out batches for the validation loss
    patience: int = 0  # stop after this many evaluations without a better val loss; 0: never
    precision: Literal["fp32", "bf16"] = "fp32"  # bf16 autocast is for GPUs: ~100x slower on AVX2 CPUs
    compile: bool = False  # torch.compile the model
    seed: int = 0
    wandb: bool = False  # also log to Weights & Biases (needs `pip install wmrl[wandb]`)
    log_every: int = 1  # steps between training-loss rows in metrics.jsonl

    def __post_init__(self):
        if self.eval_every < 1 or self.checkpoint_every < 1 or self.log_every < 1 or self.val_batches < 1:
            raise ValueError("eval_every, checkpoint_every, log_every and val_batches must be >= 1")


@dataclass
class Stage1Config(LoopConfig):
    model: JEPAConfig = field(default_factory=JEPAConfig)
    mask: MaskConfig = field(default_factory=MaskConfig)
    ema: tuple[float, float] = (0.996, 1.0)  # target-encoder momentum, linear from first to second


@dataclass
class Stage2Config(LoopConfig):
    """The world model over a frozen stage-1 encoder; clips are `data.clip_len` observations."""

    model: WorldModelConfig = field(default_factory=WorldModelConfig)
    loss: Literal["l1", "l2"] = "l1"  # distance between predicted and encoded latents
    teacher_weight: float = 0.7  # next-latent loss, all steps in one teacher-forced pass
    rollout_weight: float = 0.3  # the same, feeding predictions back for rollout_steps
    rollout_steps: int = 4
    reward_weight: float = 1.0
    cont_weight: float = 1.0
    value_weight: float = 0.5
    discount: float = 0.99
    value_ema: float = 0.98  # momentum of the value head's TD target copy
    value_lambda: float = 0.95  # TD(lambda) over the clip: 0 = one-step TD, 1 = the clip's whole return
    life_loss: bool = True  # a lost life (state field "lives" falls) ends the continuation, as a terminal

    def __post_init__(self):
        super().__post_init__()
        if self.rollout_steps < 1:
            raise ValueError(f"rollout_steps must be >= 1, got {self.rollout_steps}")
        if not 0.0 < self.discount <= 1.0 or not 0.0 <= self.value_ema < 1.0:
            raise ValueError("discount must be in (0, 1] and value_ema in [0, 1)")
        if not 0.0 <= self.value_lambda <= 1.0:
            raise ValueError("value_lambda must be in [0, 1]")
