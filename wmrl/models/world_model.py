"""The world model: a frozen stage-1 encoder, a compact latent, an action-conditioned predictor
and reward / continuation / value heads.

Shapes: a latent z is [B, M, D], the encoder's target-token grid average-pooled to `cfg.pool`
(M = prod(pool) tokens of the encoder width D). The pooling is fixed, not learned, so the
latent cannot collapse while stage 2 trains. Planners use `rollout`; stage 2 trains `predict`.

Example:
    >>> z = wm.encode(obs)                         # obs [B, K, C, H, W] uint8 -> [B, M, D]
    >>> z_h, reward, cont = wm.rollout(z, actions)  # actions [B, H] -> [B, H, M, D], [B, H], [B, H]
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from wmrl.models.ac_predictor import ACPredictor
from wmrl.models.config import WorldModelConfig
from wmrl.models.heads import TwoHot
from wmrl.models.vit import VisionTransformer


class WorldModel(nn.Module):
    def __init__(self, cfg: WorldModelConfig, encoder: VisionTransformer, action_dim: int, discrete: bool,
                 proprio_dim: int = 0):
        super().__init__()
        if any(g % p for g, p in zip(encoder.grid, cfg.pool)):
            raise ValueError(f"model.pool {tuple(cfg.pool)} does not divide the encoder's token grid {encoder.grid}")
        self.cfg, self.discrete, self.action_dim, self.proprio_dim = cfg, discrete, action_dim, proprio_dim
        self.has_value = cfg.value
        self.encoder = encoder.requires_grad_(False).eval()  # frozen: stage 2 never changes it
        self.num_latents, self.latent_dim = math.prod(cfg.pool), encoder.width
        # Per-dimension statistics of the pooled features over a dataset (set by `set_latent_stats`):
        # frames differ in a few pixels, so raw pooled features move ~1e-3 between steps, too
        # little for a latent loss to weigh against the heads; standardised ones move ~0.1-1.
        self.register_buffer("latent_mean", torch.zeros(self.num_latents, self.latent_dim))
        self.register_buffer("latent_std", torch.ones(self.num_latents, self.latent_dim))
        self.predictor = ACPredictor(cfg, self.latent_dim, self.num_latents, action_dim, discrete, proprio_dim)
        self.twohot = TwoHot(cfg.reward_bins, cfg.bin_range)
        self.reward_head = nn.Linear(cfg.width, cfg.reward_bins)
        self.cont_head = nn.Linear(cfg.width, 1)
        nn.init.zeros_(self.reward_head.weight)  # start by predicting zero reward (DreamerV3's zero init)
        nn.init.zeros_(self.reward_head.bias)
        if cfg.value:
            self.value_head = nn.Sequential(nn.Flatten(-2), nn.LayerNorm(self.num_latents * self.latent_dim),
                                            nn.Linear(self.num_latents * self.latent_dim, cfg.width), nn.SiLU(),
                                            nn.Linear(cfg.width, cfg.reward_bins))
            nn.init.zeros_(self.value_head[-1].weight)
            nn.init.zeros_(self.value_head[-1].bias)
            self.value_target = copy.deepcopy(self.value_head).requires_grad_(False)

    @classmethod
    def from_checkpoint(cls, payload: dict, device: str | torch.device = "cpu") -> WorldModel:
        """Rebuild the world model of a stage-2 checkpoint payload (frozen encoder included), in eval mode."""
        from wmrl.config import from_dict  # strict loading of the stored configs
        from wmrl.models.config import EncoderConfig

        if payload.get("stage") != 2:
            raise ValueError("not a stage-2 (world model) checkpoint")
        k, c, h, w = payload["stack_shape"]
        encoder = VisionTransformer(from_dict(EncoderConfig, payload["encoder_config"], source="checkpoint"), k, c, (h, w))
        cfg = from_dict(WorldModelConfig, payload["config"]["model"], source="checkpoint", prefix="model.")
        model = cls(cfg, encoder, payload["action_dim"], payload["discrete"], len(payload["proprio_columns"]))
        model.load_state_dict(payload["model"])
        return model.to(device).eval()

    def train(self, mode: bool = True) -> WorldModel:
        super().train(mode)
        self.encoder.eval()  # no dropout/norm statistics change in the frozen encoder
        return self

    @torch.no_grad()
    def encode(self, obs: torch.Tensor) -> torch.Tensor:
        """obs [..., K, C, H, W] uint8 -> z [..., M, D]."""
        lead = obs.shape[:-4]
        tokens = self.encoder(obs.reshape(-1, *obs.shape[-4:]))  # [B', N, D]
        grid = tokens.view(len(tokens), *self.encoder.grid, -1).permute(0, 4, 1, 2, 3)  # [B', D, t, h, w]
        pooled = F.adaptive_avg_pool3d(grid, self.cfg.pool).flatten(2).transpose(1, 2)  # [B', M, D]
        z = (pooled - self.latent_mean) / self.latent_std
        return z.reshape(*lead, self.num_latents, self.latent_dim)

    @torch.no_grad()
    def set_latent_stats(self, pooled: torch.Tensor) -> None:
        """Standardise latents with the mean / std of unstandardised ones, pooled [R, M, D]."""
        self.latent_mean.copy_(pooled.mean(0))
        self.latent_std.copy_(pooled.std(0).clamp_min(1e-6))

    def forward(self, z: torch.Tensor, action: torch.Tensor, proprio: torch.Tensor | None = None,
                rollout_steps: int = 0) -> dict[str, torch.Tensor | None]:
        """Every training output in one call (what DistributedDataParallel wraps): the teacher-forced
        `predict` outputs for z [B, T, M, D], action [B, T(, A)]; `rollout_steps` imagined latents
        from z[:, 0]; value logits of every z."""
        z_next, p_next, r_logits, c_logits = self.predict(z, action, proprio)
        out = {"z_next": z_next, "p_next": p_next, "reward_logits": r_logits, "cont_logits": c_logits}
        if rollout_steps:
            out["z_rollout"] = self.rollout(z[:, 0], action[:, :rollout_steps],
                                            None if proprio is None else proprio[:, :1])[0]
        if self.cfg.value:
            out["value_logits"] = self.value(z)
        return out

    def predict(self, z: torch.Tensor, action: torch.Tensor, proprio: torch.Tensor | None = None):
        """Teacher forcing: z [B, T, M, D], action [B, T(, A)] -> (next z [B, T, M, D],
        next proprio [B, T, P] | None, reward logits [B, T, bins], continuation logits [B, T])."""
        z_next, p_next, summary = self.predictor(z, action, proprio)
        return z_next, p_next, self.reward_head(summary), self.cont_head(summary).squeeze(-1)

    def rollout(self, z: torch.Tensor, actions: torch.Tensor, proprio: torch.Tensor | None = None):
        """Open loop from a history: z [B, C, M, D] (or [B, M, D] for C = 1), actions [B, C-1+H(, A)]
        (the history's actions, then the H to imagine), proprio [B, C, P] | None.

        Returns imagined latents [B, H, M, D], rewards [B, H] and continuation probabilities [B, H]
        of the H imagined transitions. The window slides once C + H exceeds `max_steps`.
        """
        if z.ndim == 3:
            z = z.unsqueeze(1)
        c = z.shape[1]
        horizon = actions.shape[1] - (c - 1)
        if horizon < 1:
            raise ValueError(f"rollout of a {c}-step history needs more than {c - 1} actions, got {actions.shape[1]}")
        window = self.predictor.max_steps
        if c + horizon - 1 <= window:  # the whole rollout fits the window: step with a KV cache
            return self._rollout_cached(z, actions, proprio)
        return self._rollout_sliding(z, actions, proprio)

    def _rollout_sliding(self, z: torch.Tensor, actions: torch.Tensor, proprio: torch.Tensor | None):
        """`rollout` by re-running the last `max_steps` steps for every imagined step (time
        embeddings shift as the window slides, so no cache survives a slide)."""
        c, window = z.shape[1], self.predictor.max_steps
        horizon = actions.shape[1] - (c - 1)
        zs, ps, rewards, conts = list(z.unbind(1)), None if proprio is None else list(proprio.unbind(1)), [], []
        for _ in range(horizon):
            now = len(zs)
            lo = max(0, now - window)
            z_in = torch.stack(zs[lo:], 1)
            p_in = None if ps is None else torch.stack(ps[lo:], 1)
            z_next, p_next, r_logits, c_logits = self.predict(z_in, actions[:, lo:now], p_in)
            zs.append(z_next[:, -1])
            if ps is not None:
                ps.append(p_next[:, -1])
            rewards.append(self.twohot.decode(r_logits[:, -1]))
            conts.append(torch.sigmoid(c_logits[:, -1]))
        return torch.stack(zs[c:], 1), torch.stack(rewards, 1), torch.stack(conts, 1)

    def _rollout_cached(self, z: torch.Tensor, actions: torch.Tensor, proprio: torch.Tensor | None):
        """`rollout` when history + horizon fit the window: each step's tokens pass the predictor once."""
        c, cache, outputs = z.shape[1], None, []
        z_t, p_t = z[:, 0], None if proprio is None else proprio[:, 0]
        for t in range(actions.shape[1]):
            z_next, p_next, summary, cache = self.predictor.step(z_t, actions[:, t], p_t, cache)
            if t + 1 < c:  # still reading the history
                z_t, p_t = z[:, t + 1], proprio[:, t + 1] if proprio is not None else None
                continue
            outputs.append((z_next, self.twohot.decode(self.reward_head(summary)),
                            torch.sigmoid(self.cont_head(summary).squeeze(-1))))
            z_t, p_t = z_next, p_next
        zs, rewards, conts = zip(*outputs)
        return torch.stack(zs, 1), torch.stack(rewards, 1), torch.stack(conts, 1)

    def rollout_shared(self, z: torch.Tensor, actions: torch.Tensor, start: torch.Tensor | None = None):
        """What a planner scores: start latents z [N, M, D], actions [S, H(, A)], start [S]
        (which z each candidate starts from; None: all from z[0]) -> (last imagined latent
        [S, M, D], rewards [S, H], continuation probabilities [S, H]), equal to `rollout` from
        z[start]. Discrete candidates that share a start and a prefix of actions share its
        computation: step t runs the predictor once per distinct prefix (at most N·A^t), KV cache
        included. Continuous actions (and horizons past the window) take the plain rollout.
        """
        node = torch.zeros(len(actions), dtype=torch.long) if start is None else start  # each candidate's prefix node
        if not self.discrete or actions.shape[1] > self.predictor.max_steps:
            zs, reward, cont = self.rollout(z[node], actions)
            return zs[:, -1], reward, cont
        p, a = self.predictor, self.action_dim
        # Single-token steps carry the 64-wide embedded latent (`step_embedded`), others z itself.
        fast = p.single and p.proprio_in is None
        state = z  # per node: z [., M, D], or on the fast path e [., W] plus its root and sum of outputs
        if fast:
            state, (update, update_bias) = p.latent_in(z.flatten(1)), p.latent_update()
            root, h_sum = torch.arange(len(z)), torch.zeros(len(z), update.shape[0])
        cache, rewards, conts = None, [], []
        for t in range(actions.shape[1]):
            # A prefix node of step t is (its parent node, the action at t); ids sort, so unique() finds them.
            nodes, node = torch.unique(node * a + actions[:, t], return_inverse=True)
            parent, action = nodes // a, nodes % a
            if cache is not None:
                cache = [(k[parent], v[parent]) for k, v in cache]
            if fast:
                state = state[parent]
                summary, cache = p.step_embedded(state, action, cache)
                state = state + F.linear(summary, update, update_bias)
                root, h_sum = root[parent], h_sum[parent] + summary
            else:
                state, _, summary, cache = p.step(state[parent], action, None, cache)
            rewards.append(self.twohot.decode(self.reward_head(summary))[node])
            conts.append(torch.sigmoid(self.cont_head(summary).squeeze(-1))[node])
        if fast:  # z_H = z_0 + sum over steps of latent_out(h)
            out = p.latent_out
            state = z[root] + F.linear(h_sum, out.weight, actions.shape[1] * out.bias).view(-1, *z.shape[1:])
        return state[node], torch.stack(rewards, 1), torch.stack(conts, 1)

    def value(self, z: torch.Tensor, target: bool = False) -> torch.Tensor:
        """z [..., M, D] -> value logits [..., bins] (of the EMA target head with target=True)."""
        return (self.value_target if target else self.value_head)(z)

    def expected_value(self, z: torch.Tensor) -> torch.Tensor:
        """z [..., M, D] -> the value head's expected discounted return [...]."""
        return self.twohot.decode(self.value(z))

    @torch.no_grad()
    def update_value_target(self, momentum: float) -> None:
        for t, s in zip(self.value_target.parameters(), self.value_head.parameters()):
            t.lerp_(s, 1.0 - momentum)
