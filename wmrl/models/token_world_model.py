"""A world model over discrete video tokens (the 1X challenge's MAGVIT2 ids, 2**18 of them).

A token id is `factors` ids of `factor_vocab` each (id = f0 + 512 f1): it is embedded as the sum of
one row per factor table, and predicted as one softmax per factor, so 2 x 512 logits stand for
the 262,144-way vocabulary. The embedded frames [B, T, M, W] (M = s * s tokens) go through the
stage-2 action-conditioned predictor with a token per position ("per_latent" steps), whose
block-causal attention makes the output at frame t depend on frames <= t and actions <= t only:
one pass gives the next-frame logits of every frame, the challenge's teacher-forced protocol.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from wmrl.models.ac_predictor import ACPredictor
from wmrl.models.config import TokenModelConfig, WorldModelConfig


class TokenWorldModel(nn.Module):
    """`predict`: (tokens [B, T, s, s] int64, actions [B, T, A] float | [B, T] int64) -> factor logits
    [B, T, M, factors, factor_vocab] of frames 1..T and predicted next embeddings [B, T, M, W]
    (None unless the L1 or flow loss needs them).
    Calling the model on whole windows returns its training terms (so DDP and compile wrap them)."""

    def __init__(self, cfg: TokenModelConfig, side: int, action_dim: int, discrete: bool,
                 factors: int = 2, factor_vocab: int = 512):
        super().__init__()
        width, depth, heads = cfg.dims()
        self.cfg, self.side, self.factors, self.factor_vocab = cfg, side, factors, factor_vocab
        self.embedding = nn.Embedding(factors * factor_vocab, width)  # the factor tables, stacked
        if cfg.loss == "l1":
            self.embedding.weight.requires_grad_(False)  # a fixed target space for the L1 variant
        predictor_cfg = WorldModelConfig(step_tokens="per_latent", width=width, depth=depth, heads=heads,
                                         max_steps=cfg.max_steps, value=False)
        self.predictor = ACPredictor(predictor_cfg, latent_dim=width, num_latents=side * side,
                                     action_dim=action_dim, discrete=discrete)
        # Output embeddings tied to the input tables (factor k's logits = h_k . E_k): a token seen at
        # the input is already a well-separated output, so "this token moves there" is easy to learn.
        # Token positions as loud as token contents (the predictor's default 0.02 suits pooled latents):
        # predicting motion means attending by relative position from the first step on.
        nn.init.normal_(self.predictor.slot, std=0.5)
        # Logits and the predicted next embedding are read from the predictor's last hidden states, not
        # from its residual readout z + delta: that makes "the token from the next position over" as easy
        # to say as "this token" (a shifted frame trained ~10x faster on the synthetic split).
        self.to_embedding = nn.Linear(width, width) if cfg.loss == "l1" or cfg.flow_weight > 0 else None
        self.predictor.latent_out.requires_grad_(False)  # its residual readout is not used here (DDP needs
        # every trainable parameter to get a gradient)
        # The frame's action is also added to each of its tokens, so every token knows which way the
        # frame moves in the first layer already (the predictor's action token alone needs a hop more).
        self.action_in = nn.Embedding(action_dim, width) if discrete else nn.Linear(action_dim, width)
        self.head = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, factors * width))
        self.logit_bias = nn.Parameter(torch.zeros(factors, factor_vocab))
        # Velocity field v(x_tau, tau | predicted embedding) of the flow-matching auxiliary loss.
        self.flow = nn.Sequential(nn.Linear(2 * width + 1, width), nn.GELU(), nn.Linear(width, width), nn.GELU(),
                                  nn.Linear(width, width)) if cfg.flow_weight > 0 else None

    def factorize(self, tokens: torch.Tensor) -> torch.Tensor:
        """ids [...] -> factors [..., factors]."""
        return torch.stack([(tokens // self.factor_vocab ** k) % self.factor_vocab for k in range(self.factors)], -1)

    def unfactorize(self, factors: torch.Tensor) -> torch.Tensor:
        return sum(factors[..., k] * self.factor_vocab ** k for k in range(self.factors))

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """ids [B, T, s, s] -> embeddings [B, T, M, W] (sum of the factor rows)."""
        rows = self.factorize(tokens.flatten(-2)) + torch.arange(self.factors, device=tokens.device) * self.factor_vocab
        return self.embedding(rows).sum(-2)

    def predict(self, tokens: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a = self.action_in(actions if self.predictor.discrete else actions.float())  # [B, T, W]
        z = self.embed(tokens) + a[:, :, None]  # [B, T, M, W]
        x = self.predictor.norm(self.predictor.hidden(z, actions))[:, :, -z.shape[2]:]  # the M token outputs
        z_next = self.to_embedding(x) if self.to_embedding is not None else None
        # In the L1 variant the logits are a readout of the latent prediction, not its objective.
        h = self.head(x.detach() if self.cfg.loss == "l1" else x).unflatten(-1, (self.factors, -1))  # [B, T, M, factors, W]
        tables = self.embedding.weight.view(self.factors, self.factor_vocab, -1)  # [factors, V, W]
        logits = torch.einsum("btmfw,fvw->btmfv", h, tables) * h.shape[-1] ** -0.5 + self.logit_bias
        return logits, z_next

    def forward(self, tokens: torch.Tensor, actions: torch.Tensor) -> dict[str, torch.Tensor]:
        """Training terms on windows tokens [B, T, s, s]: frames 0..T-2 (and their actions) predict
        frames 1..T-1. "ce" is the challenge's loss (factor CEs summed, averaged over positions)."""
        logits, z_next = self.predict(tokens[:, :-1], actions[:, :-1])
        target = tokens[:, 1:].flatten(-2)  # [B, T-1, M]
        factors = self.factorize(target)  # [B, T-1, M, factors]
        ce = F.cross_entropy(logits.flatten(0, -2), factors.flatten(), reduction="none").view(factors.shape).sum(-1).mean()
        terms = {"ce": ce, "acc": (logits.argmax(-1) == factors).all(-1).float().mean().detach()}
        loss = ce
        if self.cfg.loss == "l1" or self.flow is not None:
            with torch.no_grad():
                z_target = self.embed(tokens[:, 1:])
        if self.cfg.loss == "l1":
            terms["latent_l1"] = F.l1_loss(z_next, z_target)
            loss = terms["latent_l1"] + ce  # ce only trains the readout head (detached input)
        if self.flow is not None:
            x1, cond = z_target.flatten(0, -2), z_next.flatten(0, -2)  # [N, W]
            x0 = torch.randn_like(x1)
            tau = torch.rand(len(x1), 1, device=x1.device)
            velocity = self.flow(torch.cat([(1 - tau) * x0 + tau * x1, cond, tau], -1))
            terms["flow"] = F.mse_loss(velocity, x1 - x0)
            loss = loss + self.cfg.flow_weight * terms["flow"]
        terms["loss"] = loss
        return terms

    @torch.no_grad()
    def generate(self, prompt: torch.Tensor, actions: torch.Tensor, frames: int, temperature: float = 0.0,
                 top_k: int = 0, generator: torch.Generator | None = None) -> torch.Tensor:
        """Continue prompt [B, P, s, s] by `frames` frames, one at a time, each fed back as input:
        -> [B, frames, s, s]. actions [B, >= P + frames - 1, ...] are the actions of every input frame.
        Each factor is sampled from softmax(logits / temperature), restricted to its top_k values
        when top_k > 0; temperature 0 takes the argmax."""
        video = prompt
        for _ in range(frames):
            t = video.shape[1]
            logits, _ = self.predict(video, actions[:, :t])
            logits = logits[:, -1]  # [B, M, factors, V]: the frame after the last one
            if temperature <= 0:
                factors = logits.argmax(-1)
            else:
                logits = logits / temperature
                if top_k > 0:
                    kth = logits.topk(min(top_k, logits.shape[-1]), -1).values[..., -1:]
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                probs = logits.softmax(-1).flatten(0, -2)
                factors = torch.multinomial(probs, 1, generator=generator).view(logits.shape[:-1])
            frame = self.unfactorize(factors).view(len(video), 1, self.side, self.side)
            video = torch.cat([video, frame], 1)
        return video[:, prompt.shape[1]:]
