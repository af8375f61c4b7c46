"""The action-conditioned predictor: a frame-causal transformer over latent steps.

Each step t contributes S tokens: one action token (a_t, the action taken at observation t),
optionally one proprioceptive token, and the M latent tokens of z_t ("per_latent"); or a single
token, the sum of the embedded flattened z_t, a_t and proprio ("single"). Attention is block-causal:
every token of step t sees every token of steps <= t and nothing later, so all T next-latent
predictions of a clip come out of one parallel pass (teacher forcing) and the prediction at
step t never depends on inputs after t.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from wmrl.models.config import WorldModelConfig
from wmrl.models.vit import Block


def block_causal_mask(steps: int, tokens_per_step: int, device=None) -> torch.Tensor:
    """Bool [T*S, T*S], True where a query token may attend to a key token (key step <= query step)."""
    step = torch.arange(steps, device=device).repeat_interleave(tokens_per_step)  # [T*S]
    return step[:, None] >= step[None, :]


class ACPredictor(nn.Module):
    """(z [B, T, M, D], action [B, T] int64 or [B, T, A], proprio [B, T, P] | None)
    -> next latents [B, T, M, D], next proprio [B, T, P] | None, step summaries [B, T, W]."""

    def __init__(self, cfg: WorldModelConfig, latent_dim: int, num_latents: int, action_dim: int, discrete: bool,
                 proprio_dim: int = 0):
        super().__init__()
        w = cfg.width
        self.discrete, self.num_latents, self.proprio_dim = discrete, num_latents, proprio_dim
        self.single = cfg.step_tokens == "single"
        latent_in = num_latents * latent_dim if self.single else latent_dim  # the flattened z, or one latent
        self.action_in = nn.Embedding(action_dim, w) if discrete else nn.Linear(action_dim, w)
        self.proprio_in = nn.Linear(proprio_dim, w) if proprio_dim else None
        self.latent_in = nn.Linear(latent_in, w)
        self.tokens_per_step = 1 if self.single else 1 + (1 if proprio_dim else 0) + num_latents
        self.slot = nn.Parameter(torch.zeros(1, 1, self.tokens_per_step, w))  # which token of a step
        self.time = nn.Parameter(torch.zeros(1, cfg.max_steps, 1, w))  # which step of the window
        nn.init.trunc_normal_(self.slot, std=0.02)
        nn.init.trunc_normal_(self.time, std=0.02)
        self.max_steps = cfg.max_steps
        self.blocks = nn.ModuleList(Block(w, cfg.heads) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(w)
        self.latent_out = nn.Linear(w, latent_in)
        self.proprio_out = nn.Linear(w, proprio_dim) if proprio_dim else None
        # Start as "the next latent equals this one": the copy-last baseline is the initial model.
        for layer in (self.latent_out, self.proprio_out):
            if layer is not None:
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)

    def embed(self, z: torch.Tensor, action: torch.Tensor, proprio: torch.Tensor | None, start: int = 0) -> torch.Tensor:
        """Tokens [B, T, S, W] of steps start..start+T-1 of the window."""
        t = z.shape[1]
        if start + t > self.max_steps:
            raise ValueError(f"{start + t} steps exceed the predictor's max_steps {self.max_steps}")
        parts = [self.action_in(action if self.discrete else action.float()).unsqueeze(2)]  # [B, T, 1, W]
        if self.proprio_in is not None:
            parts.append(self.proprio_in(proprio).unsqueeze(2))
        if self.single:
            x = sum(parts) + self.latent_in(z.flatten(-2)).unsqueeze(2)  # [B, T, 1, W]
        else:
            x = torch.cat([*parts, self.latent_in(z)], 2)  # [B, T, S, W]
        return x + self.slot + self.time[:, start:start + t]

    def readout(self, x: torch.Tensor, z: torch.Tensor, proprio: torch.Tensor | None):
        """Block outputs x [B, T, S, W] -> next latents, next proprio, summaries (see the class)."""
        x = self.norm(x)
        if self.single:  # residual: predict the change
            z_next = z + self.latent_out(x[:, :, 0]).view_as(z)
            p_next = proprio + self.proprio_out(x[:, :, 0]) if self.proprio_out is not None else None
        else:
            z_next = z + self.latent_out(x[:, :, -self.num_latents:])
            p_next = proprio + self.proprio_out(x[:, :, 1]) if self.proprio_out is not None else None
        return z_next, p_next, x.mean(2)  # summary [B, T, W] for the reward / continuation heads

    def hidden(self, z: torch.Tensor, action: torch.Tensor, proprio: torch.Tensor | None = None) -> torch.Tensor:
        """The last block's outputs [B, T, S, W] (not yet normed), one pass over the whole window."""
        b, t, m, _ = z.shape
        x = self.embed(z, action, proprio)  # [B, T, S, W]
        s = x.shape[2]
        mask = block_causal_mask(t, s, z.device)
        x = x.reshape(b, t * s, -1)
        for block in self.blocks:
            x = block(x, attn_mask=mask)
        return x.view(b, t, s, -1)

    def forward(self, z: torch.Tensor, action: torch.Tensor, proprio: torch.Tensor | None = None):
        return self.readout(self.hidden(z, action, proprio), z, proprio)

    def step(self, z: torch.Tensor, action: torch.Tensor, proprio: torch.Tensor | None, cache: list | None):
        """One more step with a KV cache of the earlier ones (None at the window's start): z [B, M, D],
        action [B(, A)], proprio [B, P] | None -> (next z [B, M, D], next proprio, summary [B, W], cache).
        The same numbers as `forward` on the whole window, without recomputing its past."""
        start = 0 if cache is None else cache[0][0].shape[2] // self.tokens_per_step
        x = self.embed(z[:, None], action[:, None], None if proprio is None else proprio[:, None], start)
        b, _, s, w = x.shape
        x, new_cache = self.extend(x.view(b, s, w), cache)
        z_next, p_next, summary = self.readout(x.view(b, 1, s, w), z[:, None], None if proprio is None else proprio[:, None])
        return z_next[:, 0], None if p_next is None else p_next[:, 0], summary[:, 0], new_cache

    def extend(self, x: torch.Tensor, cache: list | None) -> tuple[torch.Tensor, list]:
        """One step's tokens x [B, S, W] through every block, attending to the cache -> (outputs, grown cache)."""
        new_cache = []
        for i, block in enumerate(self.blocks):
            x, kv = block.extend(x, None if cache is None else cache[i])
            new_cache.append(kv)
        return x, new_cache

    def step_embedded(self, e: torch.Tensor, action: torch.Tensor, cache: list | None):
        """`step` for single-token steps without proprio, on the embedded latent e = latent_in(z) [B, W]
        instead of z [B, M, D]: -> (normed output h [B, W], cache). A planner's fast path: with
        `latent_update`, the next step's e follows from h without z (see there)."""
        if not self.single or self.proprio_in is not None:
            raise ValueError("step_embedded needs step_tokens: single and no proprio")
        start = 0 if cache is None else cache[0][0].shape[2]
        x = e + self.action_in(action if self.discrete else action.float()) + self.slot[0, 0, 0] + self.time[0, start, 0]
        x, new_cache = self.extend(x[:, None], cache)
        return self.norm(x[:, 0]), new_cache

    def latent_update(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(A [W, W], c [W]) with latent_in(z + latent_out(h)) = latent_in(z) + A h + c (single-token steps).

        The next latent is z + latent_out(h), so a rollout can carry e = latent_in(z) and pay one
        W x W matmul per step instead of W -> M*D -> W; z itself is only needed at the end:
        z_H = z_0 + W_out (h_1 + ... + h_H) + H b_out.
        """
        w_in = self.latent_in.weight  # [W, M*D]
        return w_in @ self.latent_out.weight, w_in @ self.latent_out.bias
