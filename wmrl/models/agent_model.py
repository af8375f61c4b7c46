"""The agent's world model: what `wmrl run` learns from reward, end to end.

    stack [B, K, C, H, W] uint8 --ViT--> tokens [B, N, W] --per-token readout--> z [B, N * G] in [0, 1]
      (or, latent "conv": --the ViT's conv stem--> ReLU map [B, 64, h, w] --flatten--> z [B, 64 * N])
      (or, latent "keypoints": --a stride-2 conv tower--> map [B, P, 25, 25] --soft-argmax--> z [B, 2P] in [-1, 1])
    (z, a)  --dynamics MLP-->  h  --> next z [B, D] (a residual step), reward logits [B, bins], continuation logit [B]
            (reward_head "mlp": reward and continuation from their own MLPs on (z, a), not from h)
    z       --Q-ensemble-->  Q [E, B, A]  (discrete actions: one output per action)
    (z, a)  --Q-ensemble-->  Q [E, B]     (continuous actions in [-1, 1]^A)
    z       --policy prior-->  a ~ tanh(N(mu, sigma))  (continuous actions: TD-MPC2's pi)
    z       --projection-->  p [B, P]  (the space the latent self-prediction loss compares in, SPR)

The encoder is the V-JEPA ViT (its weights may come from stage 1), trained further by the losses of
`wmrl.train.learner`. The per-token latent is min-max renormalised per sample (SPR); the conv latent
is the stem's ReLU features as they are (DQN, SPR before its renormalisation).

Heads, as measured on Breakout, where states differ in a few pixels so latents of different states
differ by ~1e-4 of their size until the encoder learns to tell them apart:
* two-layer ReLU heads lost their units: each unit was alive for every state or for none, and
  Adam's steps (the same size however small the gradient) pushed whole units below zero for good
  (0.6-1.2% of the first Q layer alive at 16k-20k steps, 0.3% at 100k; Q the same in every state);
* `mlp` heads (Linear -> LayerNorm -> Mish, TD-MPC2's) keep about half of each sample's units
  alive, but on the standardised per-token latent Q still ignored the state to 40k steps;
* DQN's head (`q_head: dqn`) on the conv latent ranked states after 1,000 updates offline, where the
  `mlp` head on the same latent did not (benchmarks/offline_q.py). The dynamics, reward and
  continuation heads are `mlp`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from wmrl.models.config import AgentModelConfig, EncoderConfig
from wmrl.models.heads import TwoHot
from wmrl.models.vit import VisionTransformer


def renormalise(x: torch.Tensor) -> torch.Tensor:
    """x [B, D] -> each row min-max scaled to [0, 1] (SPR's `renormalize`)."""
    low, high = x.min(-1, keepdim=True).values, x.max(-1, keepdim=True).values
    return (x - low) / (high - low).clamp_min(1e-5)


def mlp(inp: int, hidden: int, out: int) -> nn.Sequential:
    """Two hidden layers, each Linear -> LayerNorm -> Mish (see the module's docstring), then a Linear."""
    layer = lambda a, b: [nn.Linear(a, b), nn.LayerNorm(b), nn.Mish()]  # noqa: E731
    return nn.Sequential(*layer(inp, hidden), *layer(hidden, hidden), nn.Linear(hidden, out))


class RunningStandardiser(nn.Module):
    """x [..., D] -> (x - mean) / sqrt(var + eps) per dimension, with running statistics of the
    encoder's latents of real observations only (`update`, from the learner): predicted and target
    latents never enter them, so acting and learning see one transformation (a BatchNorm's running
    statistics once took in predicted latents too and misled the acting agent)."""

    def __init__(self, dim: int, momentum: float = 0.05, eps: float = 1e-6):
        super().__init__()
        self.momentum, self.eps = momentum, eps
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("var", torch.ones(dim))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / (self.var + self.eps).sqrt()

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        """x [B, D]: latents of real observations."""
        rate = 1.0 if self.count == 0 else self.momentum
        self.mean.lerp_(x.mean(0), rate)
        self.var.lerp_(x.var(0, unbiased=False), rate)
        self.count += 1


class Unchanged(nn.Module):
    """The standardiser's place when `standardise` is off: x as it is, statistics never kept."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def update(self, x: torch.Tensor) -> None:
        pass


def dqn_head(inp: int, hidden: int, out: int) -> nn.Sequential:
    """DQN's head: one hidden ReLU layer, no normalisation."""
    return nn.Sequential(nn.Linear(inp, hidden), nn.ReLU(), nn.Linear(hidden, out))


class SpatialSoftArgmax(nn.Module):
    """map [B, C, h, w] -> keypoints [B, 2 * C]: each channel's expected (x, y) in [-1, 1] under a
    softmax over its cells with a learned temperature per channel (deep spatial autoencoders,
    Levine et al. 2016): where a channel fires most, as two numbers."""

    def __init__(self, channels: int):
        super().__init__()
        self.log_temperature = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        weights = torch.softmax(x.flatten(2) / self.log_temperature.exp()[:, None], -1).view(b, c, h, w)
        ys, xs = torch.linspace(-1, 1, h, device=x.device), torch.linspace(-1, 1, w, device=x.device)
        return torch.cat([(weights.sum(2) * xs).sum(-1), (weights.sum(3) * ys).sum(-1)], -1)


def keypoint_encoder(in_channels: int, keypoints: int) -> nn.Sequential:
    """image(s) as [B, C', H, W] in [0, 1] -> keypoints [B, 2 * keypoints]; 8x8 kernels at stride 2,
    then two 3x3: a 2-pixel object stays a few cells wide (DQN's stride 4 then 2 left it a fraction
    of one of Reacher's 4x4 cells)."""
    return nn.Sequential(nn.Conv2d(in_channels, 32, 8, 2), nn.ReLU(), nn.Conv2d(32, 32, 3), nn.ReLU(),
                         nn.Conv2d(32, keypoints, 3), SpatialSoftArgmax(keypoints))


class FrameKeypoints(nn.Module):
    """stack [B, K * C, H, W] -> z [B, K * 2 * keypoints]: one tower applied to each frame alone, its
    keypoints concatenated oldest first, so a position is read from one sharp frame (not a blur of
    K) and a velocity is a difference of two numbers the latent holds."""

    def __init__(self, frames: int, channels: int, keypoints: int):
        super().__init__()
        self.frames, self.channels = frames, channels
        self.tower = keypoint_encoder(channels, keypoints)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        return self.tower(x.reshape(b * self.frames, self.channels, h, w)).view(b, -1)


LOG_STD = (-5.0, 1.0)  # the policy prior's log-std range (TD-MPC2)


class AgentWorldModel(nn.Module):
    """`stack_shape` (K, C, H, W) of the observations; `num_actions` discrete actions, or with
    `continuous` the size of a continuous action in [-1, 1]^num_actions."""

    def __init__(self, encoder: EncoderConfig, cfg: AgentModelConfig, stack_shape: tuple[int, int, int, int],
                 num_actions: int, continuous: bool = False):
        super().__init__()
        k, c, h, w = stack_shape
        self.encoder_cfg, self.cfg, self.num_actions, self.continuous = encoder, cfg, int(num_actions), bool(continuous)
        self.stack_shape = tuple(int(x) for x in stack_shape)
        self.encoder = VisionTransformer(encoder, k, c, (h, w))
        # Each token keeps its own dims, in grid order, so the latent keeps what happens where: a
        # pooled or globally projected latent let the static bricks and walls drown the one-pixel
        # ball (measured: latents read out by 4 attention queries varied across Breakout states by a
        # per-dimension std of 2e-5 after 1,000 updates).
        self.keypoints = None
        if cfg.latent == "conv":
            if encoder.stem != "conv":
                raise ValueError("agent model: latent 'conv' needs the encoder's conv stem (stem: conv)")
            self.latent_dim = latent = 64 * self.encoder.num_tokens  # 64 channels per cell of the stem's grid
            self.readout = None
        elif cfg.latent == "keypoints":  # the ViT stays (stage 1's architecture) but is not used
            if cfg.keypoint_frames == "each":
                self.keypoints, self.latent_dim = FrameKeypoints(k, c, cfg.keypoints), 2 * k * cfg.keypoints
            else:
                self.keypoints, self.latent_dim = keypoint_encoder(k * c, cfg.keypoints), 2 * cfg.keypoints
            latent = self.latent_dim
            self.readout = None
        else:
            self.latent_dim = latent = self.encoder.num_tokens * cfg.token_dims
            self.readout = nn.Linear(self.encoder.width, cfg.token_dims)
        # What the heads and the dynamics read: z standardised per dimension. States differ by ~1e-3
        # of the latent's spread (Breakout: a few pixels), and with that scale at their input the
        # heads learned to ignore it (measured at 30k steps: the latent held paddle x, R² 0.997, yet
        # Q was the same in every state to 1e-5).
        self.standardise = RunningStandardiser(latent) if cfg.standardise else Unchanged()
        self.dynamics = mlp(latent + num_actions, cfg.hidden, cfg.hidden)
        self.next_head = nn.Linear(cfg.hidden, latent)
        if cfg.reward_head == "mlp":  # own MLPs on (z, a); their last layers start at zero below
            self.reward_head = mlp(latent + num_actions, cfg.hidden, cfg.reward_bins)
            self.cont_head = mlp(latent + num_actions, cfg.hidden, 1)
        else:
            self.reward_head = nn.Linear(cfg.hidden, cfg.reward_bins)
            self.cont_head = nn.Linear(cfg.hidden, 1)
        # A continuous action enters every MLP scaled to the standardised latent's size (sqrt(D / A)
        # times its own): as it is, 2 numbers beside Reacher's 1024, Q(z, a) - Q(z, 0) stayed at
        # 0.001 (std over states) after 500 updates; scaled, it followed the torque cost (corr 0.88).
        self.action_gain = math.sqrt(latent / num_actions) if continuous else 1.0
        q_in, q_out = (latent + num_actions, 1) if continuous else (latent, num_actions)
        head = mlp if cfg.q_head == "mlp" else dqn_head
        self.q_heads = nn.ModuleList(head(q_in, cfg.hidden, q_out) for _ in range(cfg.q_heads))
        self.policy = mlp(latent, cfg.hidden, 2 * num_actions) if continuous else None
        # BYOL's projector: its BatchNorm takes away what all states of a batch share, so the cosine
        # compares how states differ (measured: through one linear map, 2 - 2 cos fell to 6e-5 within
        # 200 updates, the common part aligning every prediction with every target). Used only by
        # the loss, never when acting, so its batch statistics cannot mislead the agent.
        self.projection = nn.Sequential(nn.Linear(latent, cfg.projection), nn.BatchNorm1d(cfg.projection), nn.ReLU(),
                                        nn.Linear(cfg.projection, cfg.projection))
        self.prediction = nn.Linear(cfg.projection, cfg.projection)  # online side only (SPR, BYOL)
        self.two_hot = TwoHot(cfg.reward_bins, cfg.bin_range)
        # Start predicting 0 reward and "no change" (DreamerV3, TD-MPC2). Continuous Q starts at 0 too
        # (TD-MPC2); discrete Q keeps PyTorch's random init, as DQN's: with every action's Q at 0,
        # what separates the actions early is what TD learns on average over states, so argmax picks
        # one action everywhere (measured on Breakout at 20k steps: one action in every state, and
        # learning returns below random from 20k to 40k), where a random init acts as a different
        # random function of each state until Q learns.
        last = lambda head: head[-1] if isinstance(head, nn.Sequential) else head  # noqa: E731
        zero = [last(self.reward_head), self.next_head, *((q[-1] for q in self.q_heads) if continuous else ())]
        for head in zero:
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)

    def encoder_parameters(self) -> list[nn.Parameter]:
        """What maps pixels to z (its learning rate is `encoder_lr_scale` times the rest)."""
        return list((self.encoder if self.keypoints is None else self.keypoints).parameters())

    def encode(self, obs: torch.Tensor) -> torch.Tensor:
        """obs [B, K, C, H, W] uint8 (or float in [0, 255]) -> z [B, D]."""
        if self.keypoints is not None:
            return self.keypoints(obs.float().div(255).flatten(1, 2))
        if self.readout is None:  # latent "conv": the stem's feature map, as DQN's head sees it
            return self.encoder.patch_embed.features(obs.float().div(255).flatten(1, 2)).flatten(1)
        return renormalise(self.readout(self.encoder(obs)).flatten(1))

    def step(self, z: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """z [B, D], action [B] long or [B, A] float -> next z [B, D], reward logits [B, bins],
        continuation logit [B]."""
        x = torch.cat([self.standardise(z), self.action_input(action, z.dtype)], -1)
        h = self.dynamics(x)
        nxt = z + self.next_head(h)
        nxt = nxt if self.readout is None else renormalise(nxt)
        if self.cfg.reward_head == "mlp":
            return nxt, self.reward_head(x), self.cont_head(x).squeeze(-1)
        return nxt, self.reward_head(h), self.cont_head(h).squeeze(-1)

    def action_input(self, action: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """action [B] long (one-hot) or [B, A] float (scaled by `action_gain`) -> [B, A]."""
        if self.continuous:
            return action.to(dtype) * self.action_gain
        return F.one_hot(action, self.num_actions).to(dtype)

    def q(self, z: torch.Tensor, action: torch.Tensor | None = None) -> torch.Tensor:
        """Discrete: z [B, D] -> Q [E, B, A] of every ensemble member and action.
        Continuous: z [B, D], action [B, A] -> Q [E, B]."""
        x = self.standardise(z)
        if self.continuous:
            x = torch.cat([x, self.action_input(action, z.dtype)], -1)
            return torch.stack([head(x)[..., 0] for head in self.q_heads])
        return torch.stack([head(x) for head in self.q_heads])

    def q_taken(self, z: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Q [E, B] of the actions taken: action [B] long or [B, A] float."""
        if self.continuous:
            return self.q(z, action)
        return self.q(z).gather(-1, action[None, :, None].expand(len(self.q_heads), -1, 1))[..., 0]

    def pi(self, z: torch.Tensor, generator: torch.Generator | None = None,
           deterministic: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Continuous policy prior: z [B, D] -> action [B, A] in (-1, 1) and its log-probability [B]
        (a tanh-squashed Gaussian; `deterministic` takes its mean)."""
        mu, log_std = self.policy(self.standardise(z)).chunk(2, -1)
        log_std = LOG_STD[0] + 0.5 * (LOG_STD[1] - LOG_STD[0]) * (torch.tanh(log_std) + 1)
        noise = torch.zeros_like(mu) if deterministic else torch.randn(mu.shape, generator=generator).to(mu.device)
        u = mu + noise * log_std.exp()
        log_prob = (-0.5 * noise.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        action = torch.tanh(u)
        return action, log_prob - torch.log1p(-action.pow(2) + 1e-6).sum(-1)  # the tanh's change of volume

    def project(self, z: torch.Tensor) -> torch.Tensor:
        """z [B, D] -> p [B, P]: the space the latent self-prediction loss compares in."""
        return self.projection(z)

    def reward(self, logits: torch.Tensor) -> torch.Tensor:
        return self.two_hot.decode(logits)

    @classmethod
    def from_checkpoint(cls, payload: dict) -> AgentWorldModel:
        """Rebuild from an agent checkpoint's "model" section (see `describe`)."""
        from wmrl.config import from_dict

        desc = payload["model"]
        model = cls(from_dict(EncoderConfig, desc["encoder"], source="checkpoint"),
                    from_dict(AgentModelConfig, desc["config"], source="checkpoint"), tuple(desc["stack_shape"]),
                    desc["num_actions"], desc.get("continuous", False))
        model.load_state_dict(desc["state"])
        return model

    def describe(self) -> dict:
        """What rebuilds this model: config, shapes and weights."""
        from wmrl.config import to_dict

        return {"encoder": to_dict(self.encoder_cfg), "config": to_dict(self.cfg), "stack_shape": list(self.stack_shape), "num_actions": self.num_actions,
                "continuous": self.continuous, "state": self.state_dict()}
