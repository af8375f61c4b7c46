"""One gradient step of the online agent: the world model learns from reward, end to end.

From a sampled sequence of L = K + n observations and the real actions between them:

    z_0 = encode(aug(o_0));  z_{k+1}, r_k, c_k = step(z_k, a_k)  for k < K        (online, with grad)
    zbar_j = target.encode(aug(o_j))  for j in 1..K and n..K+n-1                  (EMA target, no grad)

    consistency  mean_k 2 - 2 cos(prediction(project(z_{k+1})), target.project(zbar_{k+1}))
                 the V-JEPA-AC / SPR latent self-prediction, compared as SPR does: a cosine is
                 scale-free, so it neither vanishes when latents of different states are close
                 (an MSE on them measured ~1e-5 and taught the dynamics nothing) nor swamps Q;
                 or (`consistency: mse`, TD-MPC2) mean_k |std(z_{k+1}) - std(zbar_{k+1})|^2 on the
                 standardised latents, for a latent whose numbers are positions (keypoints)
    reward       two-hot CE of r_k against the (clipped) real reward
    continuation BCE of c_k against "no termination and no lost life"
    Q            Huber of Q_e(z_k, a_k) against the n-step double-Q target
                 y_k = sum_{i<n} gamma^i r_{k+i} + gamma^n * alive * Qbar(zbar_{k+n}, argmax_a Q(zbar_{k+n}, a))

so Q is learned on real latents (k = 0) and on unrolled ones (k > 0), which is where a search
evaluates it; the heads' step k weighs rho^k. Every loss is masked past the end of an episode or a life. The encoder's learning
rate is `encoder_lr_scale` times the rest (0 freezes it); the target model is an EMA of the whole
online model (encoder, readout, projection and Q heads). With `model_grad` off, the self-prediction,
reward, continuation and unrolled-Q losses reach the dynamics and heads but not the encoder.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F

from wmrl.data.memory import SequenceBatch
from wmrl.models.agent_model import AgentWorldModel
from wmrl.train.config import LearnerConfig


def random_shift(x: torch.Tensor, pad: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """DrQ's augmentation: pad stacks [B, K, C, H, W] by `pad` (edge pixels) and crop back at a
    random offset per stack (the same offset for all K frames of a stack)."""
    if pad == 0:
        return x
    b, k, c, h, w = x.shape
    padded = F.pad(x.reshape(b, k * c, h, w), (pad, pad, pad, pad), mode="replicate")
    # Offsets drawn on the CPU generator (one stream whatever the device). One slice per stack: a
    # gather over index grids took ~5x as long (30 ms of a 180 ms update at batch 32 x 6 on a CPU).
    dy, dx = torch.randint(0, 2 * pad + 1, (2, b), generator=generator).tolist()
    return torch.stack([padded[i, :, y:y + h, x_:x_ + w] for i, (y, x_) in enumerate(zip(dy, dx))]).view(b, k, c, h, w)


class Learner:
    """Owns the online model, its EMA target and the optimizer; `update(batch)` is one step."""

    def __init__(self, model: AgentWorldModel, cfg: LearnerConfig, device: str = "cpu", seed: int = 0):
        self.cfg, self.device = cfg, torch.device(device)
        self.model = model.to(self.device).train()
        self.target = copy.deepcopy(self.model).requires_grad_(False)
        encoder = set(map(id, model.encoder_parameters()))
        rest = [p for p in model.parameters() if id(p) not in encoder]
        groups = [{"params": rest, "lr": cfg.lr}]
        if cfg.encoder_lr_scale > 0:
            groups.append({"params": model.encoder_parameters(), "lr": cfg.lr * cfg.encoder_lr_scale})
        else:
            for p in model.encoder_parameters():
                p.requires_grad_(False)
        self.optimizer = torch.optim.Adam(groups, lr=cfg.lr)
        self.generator = torch.Generator().manual_seed(seed)  # augmentation offsets, policy samples
        self.q_scale = torch.ones((), device=self.device)  # continuous: running 5-95% spread of Q
        # continuous: the entropy weight's log; learned when cfg.target_entropy is set (SAC)
        self.log_alpha = torch.tensor(float(cfg.entropy_coef), device=self.device).log().requires_grad_()  # 0 -> -inf: no bonus
        self.alpha_optimizer = torch.optim.Adam([self.log_alpha], lr=cfg.lr)
        self.updates = 0

    def _tensor(self, x: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(x, device=self.device)

    def update(self, batch: SequenceBatch) -> dict[str, float]:
        cfg, model = self.cfg, self.model
        b, length = batch.valid.shape
        K, n = cfg.unroll, cfg.n_step
        # Stored latents (a frozen encoder's, SEER): they stand for both encoders' outputs and no
        # convolution runs; else the observation stacks, encoded here.
        stored = None if batch.latents is None else self._tensor(batch.latents)  # [B, L, D]
        obs = None if stored is not None else self._tensor(batch.obs).float()  # [B, L, K', C, H, W]
        action, valid = self._tensor(batch.action), self._tensor(batch.valid).float()  # [B, L-1], [B, L]
        live = self._tensor(batch.live).float()  # [B, L-1]
        reward = self._tensor(batch.reward)
        if cfg.reward_clip > 0:
            reward = reward.clamp(-cfg.reward_clip, cfg.reward_clip)
        alive = 1.0 - self._tensor(batch.terminal).float()  # [B, L-1]

        # The target encodes only the observations a loss looks at: o_1..o_K (consistency) and
        # o_n..o_{K+n-1} (Q bootstrap); zbar[:, j - 1] is o_j's latent (others stay zero).
        needed = sorted(set(range(1, K + 1)) | set(range(n, K + n)))
        with torch.no_grad():
            if stored is not None:
                zbar = stored[:, 1:]
            else:
                later = random_shift(obs[:, needed].flatten(0, 1), cfg.shift, self.generator)
                zbar = obs.new_zeros(b, length - 1, model.latent_dim)
                zbar[:, [j - 1 for j in needed]] = self.target.encode(later).view(b, len(needed), -1)
            if cfg.consistency == "cosine":
                pbar = [F.normalize(self.target.project(zbar[:, k]), dim=-1) for k in range(K)]  # K x [B, P]
            targets, q_mask = self._q_targets(zbar, reward, alive, live, valid)  # [B, K] each

        z0 = stored[:, 0] if stored is not None else model.encode(random_shift(obs[:, 0], cfg.shift, self.generator))  # [B, D]
        # The standardiser's statistics: real latents as the agent sees them, so not shifted (on
        # Breakout a 4-pixel shift moved the latent ~40x as much as the state did).
        with torch.no_grad():
            model.standardise.update(z0 if cfg.shift == 0 or stored is not None else model.encode(obs[:, 0]))
        # The unroll starts from z0 itself (the world model's losses train the encoder too, SPR) or
        # from a detached copy (they train only the dynamics and heads; the encoder learns from Q).
        z = z0 if cfg.model_grad else z0.detach()
        losses, consistency, latents = {"reward": 0.0, "cont": 0.0, "q": 0.0}, 0.0, []
        total_weight = 0.0
        for k in range(K):
            w = cfg.rho ** k
            total_weight += w
            q = model.q_taken(z0 if k == 0 else z, action[:, k])  # [E, B]: Q at the real latent trains the encoder
            latents.append(z)
            huber = F.smooth_l1_loss(q, targets[None, :, k].expand_as(q), reduction="none").mean(0)
            losses["q"] = losses["q"] + w * _masked_mean(huber, q_mask[:, k])
            z, reward_logits, cont_logit = model.step(z, action[:, k])
            step_mask = live[:, k]
            if cfg.consistency == "cosine":
                p = F.normalize(model.prediction(model.project(z)), dim=-1)
                error = 2 - 2 * (p * pbar[k]).sum(-1)
            else:  # both standardised by the online statistics, so every latent dimension counts alike
                error = (model.standardise(z) - model.standardise(zbar[:, k])).pow(2).mean(-1)
            consistency = consistency + _masked_mean(error, valid[:, k + 1]) / K  # every step alike
            ce = -(model.two_hot.encode(reward[:, k]) * F.log_softmax(reward_logits, -1)).sum(-1)
            losses["reward"] = losses["reward"] + w * _masked_mean(ce, step_mask)
            bce = F.binary_cross_entropy_with_logits(cont_logit, alive[:, k], reduction="none")
            losses["cont"] = losses["cont"] + w * _masked_mean(bce, step_mask)
        losses = {"consistency": consistency, **{k: v / total_weight for k, v in losses.items()}}
        loss = (cfg.consistency_weight * losses["consistency"] + cfg.reward_weight * losses["reward"]
                + cfg.cont_weight * losses["cont"] + cfg.q_weight * losses["q"])

        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if model.continuous:  # the policy prior climbs Q on the (detached) real and unrolled latents
            losses["pi"], log_prob = self._policy_loss(torch.cat(latents).detach())
            losses["pi"].backward(inputs=list(model.policy.parameters()))  # Q and the encoder do not follow it
            if cfg.target_entropy is not None:  # raise the weight while the entropy is below target, lower it above
                losses["entropy"] = -log_prob.mean().detach()
                alpha_loss = -(self.log_alpha * (log_prob.detach() + cfg.target_entropy)).mean()
                self.alpha_optimizer.zero_grad(set_to_none=True)
                alpha_loss.backward()
                self.alpha_optimizer.step()
                losses["alpha"] = self.log_alpha.detach().exp()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        self.optimizer.step()
        with torch.no_grad():
            for p, t in zip(model.parameters(), self.target.parameters()):
                t.lerp_(p, cfg.tau)
            self.target.standardise.load_state_dict(model.standardise.state_dict())  # one standardisation for both
        self.updates += 1
        return {"loss": float(loss.detach()), **{k: float(v.detach()) for k, v in losses.items()}, "grad_norm": float(grad_norm),
                "q_target": float(_masked_mean(targets[:, 0], q_mask[:, 0]))}

    def _policy_loss(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """TD-MPC2's: -Q(z, pi(z)) in units of Q's running 5-95% spread, minus an entropy bonus;
        and the samples' log-probabilities [B]."""
        action, log_prob = self.model.pi(z, self.generator)
        q = self.model.q(z, action).mean(0)  # [B]
        with torch.no_grad():
            spread = torch.quantile(q, 0.95) - torch.quantile(q, 0.05)
            self.q_scale.lerp_(spread, 0.01)
        alpha = self.log_alpha.detach().exp()
        return (alpha * log_prob - q / self.q_scale.clamp_min(1.0)).mean(), log_prob

    def _q_targets(self, zbar: torch.Tensor, reward: torch.Tensor, alive: torch.Tensor, live: torch.Tensor,
                   valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """n-step double-Q targets y [B, K] for the steps 0..K-1, and where they are defined [B, K]:
        the step exists, and the window ends in a terminal or at an observation of the same life."""
        cfg = self.cfg
        K, n = cfg.unroll, cfg.n_step
        boot = zbar[:, n - 1:]  # [B, K, D]: the bootstrap latents o_n .. o_{K+n-1}, the only ones used
        if self.model.continuous:  # the policy prior's action, valued by the target ensemble's minimum (TD-MPC2)
            flat = boot.flatten(0, 1)
            q_target = self.target.q(flat, self.model.pi(flat, self.generator)[0]).min(0).values.view(boot.shape[:2])
        else:
            best = self.model.q(boot).mean(0).argmax(-1, keepdim=True)  # double Q picks with the online heads ...
            q_target = self.target.q(boot).mean(0).gather(-1, best)[..., 0]  # [B, K]: ... and evaluates with the target's
        y, mask = [], []
        for k in range(K):
            ret, disc = torch.zeros_like(reward[:, 0]), torch.ones_like(reward[:, 0])
            for i in range(n):
                ret = ret + disc * reward[:, k + i] * live[:, k + i]
                disc = disc * cfg.gamma * alive[:, k + i]
            ended = disc == 0  # a terminal inside the window: no bootstrap needed
            reached = valid[:, k + n] > 0  # else the bootstrap observation must be in the same life
            y.append(ret + disc * q_target[:, k] * reached)
            mask.append(live[:, k] * (ended | reached).float())
        return torch.stack(y, 1), torch.stack(mask, 1)

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "target": self.target.state_dict(),
                "optimizer": self.optimizer.state_dict(), "updates": self.updates,
                "generator": self.generator.get_state(), "q_scale": self.q_scale,
                "log_alpha": self.log_alpha.detach(), "alpha_optimizer": self.alpha_optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.target.load_state_dict(state["target"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.updates = state["updates"]
        self.generator.set_state(state["generator"])
        self.q_scale.copy_(state["q_scale"])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        self.alpha_optimizer.load_state_dict(state["alpha_optimizer"])


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp_min(1.0)
