"""The agent's world model: what `wmrl run` learns from reward, end to end.

    stack [B, K, C, H, W] uint8 --ViT--> tokens [B, N, W] --per-token readout--> z [B, N * G] (SimNorm)
    (z, a)  --dynamics MLP-->  h  --> next z [B, D], reward logits [B, bins], continuation logit [B]
    z       --Q-ensemble-->  Q [E, B, A]  (discrete actions: one output per action)

The encoder is the V-JEPA ViT (its weights may come from stage 1), trained further by the losses of
`wmrl.train.learner`. SimNorm (TD-MPC2) splits z into groups of `simnorm_group` dims and softmaxes
each: a bounded latent whose scale needs no dataset statistics, so targets cannot drift in size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from wmrl.models.config import AgentModelConfig, EncoderConfig
from wmrl.models.heads import TwoHot
from wmrl.models.vit import VisionTransformer


def simnorm(x: torch.Tensor, group: int) -> torch.Tensor:
    """x [..., D] -> softmax within consecutive groups of `group` dims."""
    shape = x.shape
    return F.softmax(x.view(*shape[:-1], -1, group), -1).view(shape)


def mlp(inp: int, hidden: int, out: int) -> nn.Sequential:
    """Two hidden layers with LayerNorm and Mish, as TD-MPC2's heads."""
    return nn.Sequential(nn.Linear(inp, hidden), nn.LayerNorm(hidden), nn.Mish(),
                         nn.Linear(hidden, hidden), nn.LayerNorm(hidden), nn.Mish(), nn.Linear(hidden, out))


class TokenReadout(nn.Module):
    """Each token [B, N, W] projected to `group` logits, flattened in grid order: [B, N * group].
    With SimNorm over groups of the same size, every token becomes one softmax, so the latent keeps
    what happens where (TD-MPC2's pixel encoder applies SimNorm to the flattened conv map the same
    way). A pooled or globally projected latent lets the static bricks and walls drown the
    one-pixel ball: measured here, a latent read out by 4 attention queries varied across Breakout
    states by a per-dimension std of 2e-5 after 1,000 updates, and one projected from all tokens by
    one linear map collapsed from 2e-3 to 1e-4 within 50."""

    def __init__(self, width: int, group: int):
        super().__init__()
        self.proj = nn.Linear(width, group)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.proj(tokens).flatten(1)


class AgentWorldModel(nn.Module):
    """`stack_shape` (K, C, H, W) of the observations; `num_actions` discrete actions."""

    def __init__(self, encoder: EncoderConfig, cfg: AgentModelConfig, stack_shape: tuple[int, int, int, int],
                 num_actions: int):
        super().__init__()
        k, c, h, w = stack_shape
        self.encoder_cfg, self.cfg, self.num_actions = encoder, cfg, int(num_actions)
        self.stack_shape = tuple(int(x) for x in stack_shape)
        self.encoder = VisionTransformer(encoder, k, c, (h, w))
        self.latent_dim = latent = self.encoder.num_tokens * cfg.simnorm_group
        self.readout = TokenReadout(self.encoder.width, cfg.simnorm_group)
        self.dynamics = mlp(latent + num_actions, cfg.hidden, cfg.hidden)
        self.next_head = nn.Linear(cfg.hidden, latent)
        self.reward_head = nn.Linear(cfg.hidden, cfg.reward_bins)
        self.cont_head = nn.Linear(cfg.hidden, 1)
        # Breakout's states differ in a few pixels, so latents differ across states by ~1e-4 per
        # dimension around a large common part, and the heads' LayerNorms keep that ratio: Q came out
        # the same for every state (to 1e-7) after 1,500 updates. Standardising each dimension hands
        # the heads the differences between states. The statistics are those of real (encoded)
        # latents only, updated by the learner (`observe_latents`) and used alike in training and
        # acting: a BatchNorm's running statistics, fed predicted and target latents too, ended 215
        # batch stds off the real latents' mean, and the acting agent saw one state everywhere.
        self.register_buffer("z_mean", torch.zeros(latent))
        self.register_buffer("z_var", torch.ones(latent))
        self.register_buffer("z_seen", torch.zeros(()))
        self.q_heads = nn.ModuleList(mlp(latent, cfg.hidden, num_actions) for _ in range(cfg.q_heads))
        self.two_hot = TwoHot(cfg.reward_bins, cfg.bin_range)
        for head in [self.reward_head, *(q[-1] for q in self.q_heads)]:
            nn.init.zeros_(head.weight)  # start predicting 0 reward / value (DreamerV3, TD-MPC2)
            nn.init.zeros_(head.bias)

    def encoder_parameters(self) -> list[nn.Parameter]:
        return list(self.encoder.parameters())

    def encode(self, obs: torch.Tensor) -> torch.Tensor:
        """obs [B, K, C, H, W] uint8 (or float in [0, 255]) -> z [B, D]."""
        return simnorm(self.readout(self.encoder(obs)), self.cfg.simnorm_group)

    def step(self, z: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """z [B, D], action [B] long -> next z [B, D], reward logits [B, bins], continuation logit [B]."""
        h = self.dynamics(torch.cat([self.standardise(z), F.one_hot(action, self.num_actions).to(z.dtype)], -1))
        return simnorm(self.next_head(h), self.cfg.simnorm_group), self.reward_head(h), self.cont_head(h).squeeze(-1)

    def q(self, z: torch.Tensor) -> torch.Tensor:
        """z [B, D] -> Q [E, B, A] of every ensemble member."""
        z = self.standardise(z)
        return torch.stack([head(z) for head in self.q_heads])

    def standardise(self, z: torch.Tensor) -> torch.Tensor:
        """z [..., D] with each dimension standardised by the running statistics of real latents."""
        # floored at a thousandth of the mean variance: dimensions that never moved stay near zero
        return (z - self.z_mean) * torch.rsqrt(self.z_var + 1e-3 * self.z_var.mean() + 1e-12)

    @torch.no_grad()
    def observe_latents(self, z: torch.Tensor, momentum: float = 0.01) -> None:
        """Move the running mean / variance toward those of real latents z [B, D] (the first batch sets them)."""
        rate = 1.0 if self.z_seen == 0 else momentum
        self.z_mean.lerp_(z.mean(0), rate)
        self.z_var.lerp_(z.var(0, unbiased=False), rate)
        self.z_seen += 1

    def reward(self, logits: torch.Tensor) -> torch.Tensor:
        return self.two_hot.decode(logits)

    @classmethod
    def from_checkpoint(cls, payload: dict) -> AgentWorldModel:
        """Rebuild from an agent checkpoint's "model" section (see `describe`)."""
        from wmrl.config import from_dict

        desc = payload["model"]
        model = cls(from_dict(EncoderConfig, desc["encoder"], source="checkpoint"),
                    from_dict(AgentModelConfig, desc["config"], source="checkpoint"), tuple(desc["stack_shape"]),
                    desc["num_actions"])
        model.load_state_dict(desc["state"])
        return model

    def describe(self) -> dict:
        """What rebuilds this model: config, shapes and weights."""
        from wmrl.config import to_dict

        return {"encoder": to_dict(self.encoder_cfg), "config": to_dict(self.cfg), "stack_shape": list(self.stack_shape), "num_actions": self.num_actions,
                "state": self.state_dict()}
