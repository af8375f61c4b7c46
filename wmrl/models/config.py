"""Model hyperparameters as plain dataclasses (no torch import), so configs load fast and strictly."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

# name -> (width, depth, heads): the usual ViT family, plus "micro" for quick CPU runs.
SIZES = {
    "micro": (128, 4, 4),
    "tiny": (192, 12, 3),
    "small": (384, 12, 6),
    "base": (768, 12, 12),
    "large": (1024, 24, 16),
    "huge": (1280, 32, 16),
    "giant": (1408, 40, 16),
}


@dataclass
class EncoderConfig:
    size: str = "micro"  # a key of SIZES; width/depth/heads below override it when set
    width: int | None = None
    depth: int | None = None
    heads: int | None = None
    patch: int = 8
    tubelet: int = 2  # frames per token along time
    mlp_ratio: float = 4.0
    # How pixels become tokens. "patch": one linear map per patch (ViT). "conv": DQN's three ReLU
    # convolutions (8x8/4, 4x4/2, 3x3/1) over the whole stack, each cell of their 7x7 map (84x84
    # input) a token: a black background stays exactly zero, so a one-pixel ball is a large change
    # (Xiao et al. 2021: early convolutions help transformers). Needs tubelet = the stack size.
    stem: Literal["patch", "conv"] = "patch"
    # Fixed sin-cos positions added to the tokens. The conv stem's tokens already sit in grid order
    # (and the agent reads them out in that order), so without attention (depth 0) positions only
    # add a per-token constant that dwarfs what differs between states at initialisation.
    positions: bool = True

    def __post_init__(self):
        if self.size not in SIZES:
            raise ValueError(f"encoder size '{self.size}' is not one of {', '.join(SIZES)}")
        if self.depth is not None and (self.depth < 0 or self.depth == 0 and self.stem != "conv"):
            raise ValueError(f"encoder depth must be >= 1 (0 only with the conv stem), got {self.depth}")

    def dims(self) -> tuple[int, int, int]:
        """(width, depth, heads): the size's, overridden by those set. Depth 0 (conv stem only): the
        convolutions' tokens, layer-normalised, are the encoder's output."""
        width, depth, heads = SIZES[self.size]
        pick = lambda mine, default: default if mine is None else mine  # noqa: E731
        return pick(self.width, width), pick(self.depth, depth), pick(self.heads, heads)


@dataclass
class PredictorConfig:
    width: int = 96
    depth: int = 2
    heads: int = 4


@dataclass
class MaskConfig:
    strategy: Literal["multiblock", "random", "spatial", "temporal"] = "multiblock"
    ratio: float = 0.75  # share of tokens to predict (random / spatial / temporal)
    short_blocks: int = 8
    short_scale: float = 0.15  # area of one block, as a share of the frame
    long_blocks: int = 2
    long_scale: float = 0.7
    aspect: tuple[float, float] = (0.75, 1.5)

    def __post_init__(self):
        if not 0.0 < self.ratio < 1.0:
            raise ValueError(f"mask.ratio must be in (0, 1), got {self.ratio}")


@dataclass
class TriTemporalConfig:
    """NOW / SOON / EVENTUALLY objectives over a clip (off by default).

    NOW: masked prediction on the first stack of the clip. SOON: predict every token of the stack
    `soon` steps later from the NOW stack alone. EVENTUALLY: an outcome head (learned queries
    over the NOW tokens) matched to the mean target tokens of the stack `eventually` steps later,
    by InfoNCE across the batch.
    """

    enabled: bool = False
    soon: int = 1
    eventually: int = 8
    weights: tuple[float, float, float] = (1.0, 1.0, 0.5)  # NOW, SOON, EVENTUALLY
    queries: int = 4
    temperature: float = 0.1

    def __post_init__(self):
        if not 0 < self.soon < self.eventually:
            raise ValueError(f"tri_temporal needs 0 < soon < eventually, got {self.soon}, {self.eventually}")


@dataclass
class JEPAConfig:
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    predictor: PredictorConfig = field(default_factory=PredictorConfig)
    loss: Literal["l1", "l2"] = "l1"
    tri_temporal: TriTemporalConfig = field(default_factory=TriTemporalConfig)


@dataclass
class WorldModelConfig:
    """Stage 2: the action-conditioned predictor over frozen encoder latents, and its heads."""

    pool: tuple[int, int, int] = (1, 2, 2)  # encoder token grid (t, h, w) is average-pooled to this
    # How a step enters the predictor. "per_latent": an action token plus one token per pooled
    # latent (M + 1 tokens, attention within the step too). "single": one token, the sum of the
    # embedded flattened latent and the action: ~5x less compute per step, for fast planning.
    step_tokens: Literal["per_latent", "single"] = "per_latent"
    width: int = 256
    depth: int = 4
    heads: int = 4
    max_steps: int = 32  # longest history + horizon the temporal embedding covers
    proprio: list[str] = field(default_factory=list)  # ground-truth state fields fed as a token per step
    reward_bins: int = 81  # two-hot bins over symlog(reward) in [-bin_range, bin_range]
    bin_range: float = 10.0
    value: bool = True  # a value head V(z), trained by TD on dataset transitions

    def __post_init__(self):
        if len(self.pool) != 3 or min(self.pool) < 1:
            raise ValueError(f"model.pool must be three positive sizes (t, h, w), got {self.pool}")
        if self.width % self.heads:
            raise ValueError(f"model.width {self.width} is not divisible by model.heads {self.heads}")
        if self.reward_bins < 3 or self.bin_range <= 0:
            raise ValueError("model.reward_bins must be >= 3 and model.bin_range > 0")


# name -> (width, depth, heads) of the 1X token world model: "cpu-tiny" trains on this CPU,
# "1b" is ~1.0e9 parameters (12 * depth * width**2 in the blocks).
TOKEN_SIZES = {
    "cpu-tiny": (64, 2, 4),
    "small": (256, 8, 8),
    "base": (768, 12, 12),
    "1b": (2048, 20, 16),
}


@dataclass
class TokenModelConfig:
    """The 1X token world model: factorized token embeddings into the stage-2 frame-causal predictor."""

    size: str = "cpu-tiny"  # a key of TOKEN_SIZES; width/depth/heads below override it when set
    width: int | None = None
    depth: int | None = None
    heads: int | None = None
    max_steps: int = 16  # frames per window the temporal embedding covers
    # "ce": cross-entropy on both factors of every next-frame token. "l1": L1 between the predicted
    # and the true next-frame token embeddings (fixed random tables, so the target cannot collapse);
    # the factor logits then read the detached prediction, for the challenge's CE.
    loss: Literal["ce", "l1"] = "ce"
    flow_weight: float = 0.0  # > 0 adds a flow-matching loss: noise -> next token embedding, given the prediction

    def __post_init__(self):
        if self.size not in TOKEN_SIZES:
            raise ValueError(f"model size '{self.size}' is not one of {', '.join(TOKEN_SIZES)}")
        width, _, heads = self.dims()
        if width % heads:
            raise ValueError(f"model width {width} is not divisible by heads {heads}")
        if self.flow_weight < 0 or self.max_steps < 2:
            raise ValueError("model.flow_weight must be >= 0 and model.max_steps >= 2")

    def dims(self) -> tuple[int, int, int]:
        width, depth, heads = TOKEN_SIZES[self.size]
        return self.width or width, self.depth or depth, self.heads or heads


@dataclass
class AgentModelConfig:
    """The agent's world model (the online learner behind `wmrl run`) past its encoder, whose
    architecture is stage 1's (`stage1.model.encoder`, so pretrained weights fit): a per-token
    readout to a min-max renormalised latent, an MLP latent dynamics, reward, continuation and
    Q-ensemble heads, and the projection the latent self-prediction loss compares in.
    Shapes: a stack [B, K, C, H, W] -> z [B, tokens * token_dims]."""

    # What the agent's latent z is. "tokens": the encoder's output tokens, each read out to token_dims
    # numbers in grid order, min-max renormalised per sample. "conv": the conv stem's ReLU feature
    # map, flattened (DQN's and SPR's latent; needs stem: conv), which keeps a few pixels' change at
    # the scale Q can learn from (see wmrl.models.agent_model).
    # "keypoints": a conv tower of its own at stride 2 (8x8 kernels, 64x64 -> 29x29 -> 25x25 map of
    # `keypoints` channels), each channel's soft-argmax (x, y) in [-1, 1] -> z [B, 2 * keypoints]
    # (deep spatial autoencoders): where a small object is, as numbers. Measured on Reacher pixels,
    # supervised for 1,000 steps: the conv latent read the 2-pixel target's x, y at R² 0.01, 0.01,
    # the keypoints at 0.94, 0.96 (benchmarks/results/reacher_latent_probe.md).
    latent: Literal["tokens", "conv", "keypoints"] = "tokens"
    keypoints: int = 32
    # "stack": one tower over the K stacked frames -> z [B, 2 * keypoints]; "each": the tower on each
    # frame alone -> z [B, K * 2 * keypoints] (positions at K times: velocities are differences).
    # Measured on Reacher (16 per frame, seed 0 at 50k): success 0.06 against 0.08 for "stack", at
    # 2.2x the cost of an end-to-end update; its latent read the offset no better (README).
    keypoint_frames: Literal["stack", "each"] = "stack"
    token_dims: int = 16  # each token's share of the latent: z has tokens x token_dims dims
    # The Q heads. "mlp": two Linear -> LayerNorm -> Mish layers on the standardised latent. "dqn":
    # DQN's head on the latent as it is, Linear -> ReLU -> Linear (measured offline on Breakout
    # replay with the conv latent, 1,000-2,000 updates: Spearman of max Q with the return 0.27-0.30
    # for "dqn", -0.06 for "mlp").
    q_head: Literal["mlp", "dqn"] = "mlp"
    standardise: bool = True  # heads and dynamics read z standardised per dimension (RunningStandardiser)
    # Reward and continuation heads. "trunk": linear heads on the dynamics MLP's hidden state.
    # "mlp": each its own `mlp` on (z, a) (TD-MPC2). Measured on Reacher pixels (random data, 150
    # updates): the shared trunk served the self-prediction loss with a near-constant hidden state
    # (std over the batch 0.05 against a mean size of 1.3), and through it the reward head learned
    # nothing in 500 updates (R² 0.00 on held-out steps).
    reward_head: Literal["trunk", "mlp"] = "trunk"
    hidden: int = 512  # MLP width of dynamics and heads
    q_heads: int = 2  # Q-ensemble size
    projection: int = 256  # width of the self-prediction projection
    reward_bins: int = 41  # two-hot bins over symlog(reward) in [-bin_range, bin_range]
    bin_range: float = 3.0

    def __post_init__(self):
        if self.token_dims < 1 or self.q_heads < 1 or self.projection < 1:
            raise ValueError("agent model: token_dims, q_heads and projection must be >= 1")
