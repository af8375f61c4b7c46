"""Training hyperparameters as plain dataclasses (no torch import), mapped from configs/*.yaml."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from wmrl.models.config import AgentModelConfig, JEPAConfig, MaskConfig, WorldModelConfig


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


@dataclass
class LearnerConfig:
    """The online learner's update (wmrl.train.learner): a K-step latent unroll from real actions,
    self-prediction against the EMA target encoder, reward / continuation heads, n-step double-Q."""

    model: AgentModelConfig = field(default_factory=AgentModelConfig)
    batch_size: int = 32
    lr: float = 3e-4
    encoder_lr_scale: float = 0.3  # the encoder's lr share (TD-MPC2: 0.3); 0 freezes it (the two-stage design)
    grad_clip: float = 10.0
    unroll: int = 3  # K: latent steps predicted from the real actions
    n_step: int = 3  # Q targets: n rewards, then the target Q
    gamma: float = 0.99
    tau: float = 0.01  # target model (encoder and Q) moves this share toward the online one per update
    rho: float = 0.5  # the heads' loss at unrolled step k weighs rho**k (later latents are less certain)
    shift: int = 4  # random-shift augmentation, pixels (DrQ / SPR); 0 turns it off
    reward_clip: float = 1.0  # learn from rewards clipped to [-c, c] (DQN/SPR); 0: unclipped
    consistency_weight: float = 1.0  # the latent self-prediction term (mean over the K steps)
    # How a predicted latent is compared with the target encoder's. "cosine": 2 - 2 cos in the
    # projection's space (SPR; scale-free, for latents whose states differ by ~1e-4 of their size).
    # "mse": squared error of the standardised latents themselves (TD-MPC2), for a latent whose
    # numbers mean something (keypoints): measured on Reacher, the cosine left the dynamics' own
    # latents off the encoder's range, and the reward read from a 3-step prediction correlated
    # 0.11 with the real one (0.97 with "mse"; 2,000 updates on random play).
    consistency: Literal["cosine", "mse"] = "cosine"
    model_grad: bool = True  # the world model's losses train the encoder too (SPR); false: only Q at real latents does
    reward_weight: float = 1.0
    cont_weight: float = 1.0
    q_weight: float = 1.0
    entropy_coef: float = 1e-4  # continuous actions: the policy prior's entropy bonus (TD-MPC2)
    # Continuous actions: learn the entropy weight instead (SAC's automatic temperature), so that
    # the prior's entropy stays near this many nats (SAC: minus the action dimensions); entropy_coef
    # is then its starting value. None keeps entropy_coef fixed. Measured on Reacher at 50k: with
    # the fixed 1e-4 the prior held the arm still (|mean| 0.05; return -9.90, success 0.02); with
    # the learned weight (-2 nats, from 0.1) it did the same (-9.70, 0.02).
    target_entropy: float | None = None
    # Stored embeddings (SEER, Chen et al. 2021): after this many updates the encoder stops learning,
    # the replay keeps each stack's latent, and the rest of the run updates Q, the policy prior and
    # the world model on those latents alone, `frozen_batch_size` sequences at a time and
    # `run.frozen_replay_ratio` updates per env step (no convolutions: ~60% of a Reacher update's
    # time). 0: the encoder learns to the end.
    freeze_encoder_after: int = 0
    frozen_batch_size: int = 256

    def __post_init__(self):
        if self.freeze_encoder_after < 0 or self.frozen_batch_size < 1:
            raise ValueError("learner: freeze_encoder_after must be >= 0 and frozen_batch_size >= 1")
        if min(self.batch_size, self.unroll, self.n_step) < 1 or self.lr <= 0 or self.encoder_lr_scale < 0:
            raise ValueError("learner: batch_size, unroll and n_step must be >= 1, lr > 0, encoder_lr_scale >= 0")
        if not 0 < self.gamma <= 1 or not 0 < self.tau <= 1 or self.shift < 0 or self.reward_clip < 0:
            raise ValueError("learner: gamma and tau must be in (0, 1], shift and reward_clip >= 0")
        if self.entropy_coef < 0:
            raise ValueError("learner: entropy_coef must be >= 0")
        if self.entropy_coef == 0 and self.target_entropy is not None:
            raise ValueError("learner: a learned entropy weight (target_entropy) starts from entropy_coef, which must be > 0")

    @property
    def sequence_length(self) -> int:
        """Observations per sampled sequence: Q is fitted at steps 0..K-1, each bootstrapped n steps on."""
        return self.unroll + self.n_step
