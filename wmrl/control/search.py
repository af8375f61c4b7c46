"""Acting: a depth-d search over the agent's world model with Q at the leaves.

Discrete actions: every sequence of d actions is scored (A**d candidates: 16 for Breakout at
depth 2). Continuous actions: TD-MPC2's MPPI, whose candidates mix Gaussian samples with sequences
rolled out by the policy prior pi, refitted to the elites for a few iterations; the agent takes the
first action of the final mean (depth 0: the policy prior's mean, no search). Both score a
sequence, for all envs in one batched rollout, by the mean of its k-step estimates (a
lambda-return with equal weights):

    G_k = sum_{t<k-1} gamma^t C_t r(z_t, a_t) + gamma^{k-1} C_{k-1} Q(z_{k-1}, a_{k-1}),   k = 1..d
    score(a_0 .. a_{d-1}) = (G_1 + ... + G_d) / d

where z_0 is the encoded observation, z_{t+1} the predicted next latent, r the predicted reward and
C_t the product of predicted continuations (a predicted lost life ends the value). Depth 1 is
greedy Q; deeper searches let the model's rewards and continuations correct Q. Why the mean and
not G_d alone: a model that has not yet learned how actions matter makes G_d the same for every
first action, and the choice then fell to noise (measured at 20k Breakout steps: one-step action
effect 0.0003 against a model error of 0.11, and one action in every state); G_1 = Q(z_0, a_0)
keeps Q's ranking in the score. The agent takes
the first action of the best sequence. `ExhaustiveSearch` knows nothing of models: it enumerates
candidates and asks an objective, as the CEM/MPPI optimizers do. A continuous agent acts in the
env's units (`low`, `high`); the model sees actions scaled to [-1, 1].

    >>> agent = SearchAgent(model, depth=2, gamma=0.99)
    >>> action, _ = agent.predict(obs)          # obs [K, C, H, W] or [N, K, C, H, W] uint8
    >>> agent.save("agent.pt"); SearchAgent.load("agent.pt")
"""

from __future__ import annotations

import itertools
import os
import pickle
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from wmrl.control.config import MPPISettings
from wmrl.models.agent_model import AgentWorldModel

BatchObjective = Callable[[torch.Tensor], torch.Tensor]  # actions [N, S, d] long or [N, S, d, A] -> scores [N, S]


class ExhaustiveSearch:
    """Scores all `num_actions ** depth` action sequences; returns the best of each problem."""

    def __init__(self, num_actions: int, depth: int, device: torch.device | str = "cpu"):
        if depth < 1:
            raise ValueError(f"search depth must be >= 1, got {depth}")
        self.candidates = torch.tensor(list(itertools.product(range(num_actions), repeat=depth)), device=device)  # [S, d]

    @torch.no_grad()
    def optimize_batch(self, objective: BatchObjective, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Best sequences [N, d] and all scores [N, S] of `n` problems."""
        candidates = self.candidates.expand(n, -1, -1)  # [N, S, d]
        scores = objective(candidates)
        return candidates[torch.arange(n), scores.argmax(1)], scores


def q_search_objective(model: AgentWorldModel, z: torch.Tensor, gamma: float) -> BatchObjective:
    """Scores of action sequences [N, S, d] from the latents z [N, D] (see the module docstring).
    Discrete actions: the model steps once per distinct prefix and Q is read for all actions of a
    node at once (depth 2 on Breakout: 4 model steps per env instead of 16), with the same scores
    as stepping every sequence on its own."""

    def objective(actions: torch.Tensor) -> torch.Tensor:
        n, s, d = actions.shape[:3]
        if not actions.dtype.is_floating_point:
            return _discrete_scores(model, z, actions, gamma)
        zt = z.repeat_interleave(s, 0)  # [N*S, D]
        flat = actions.reshape(n * s, d, *actions.shape[3:])
        ret = torch.zeros(n * s, device=z.device)  # sum of discounted predicted rewards so far
        discount = torch.ones(n * s, device=z.device)
        estimates = 0.0  # sum of the k-step estimates G_1 .. G_d
        for t in range(d):
            estimates = estimates + ret + discount * model.q_taken(zt, flat[:, t]).mean(0)  # G_{t+1}
            if t < d - 1:
                zt, reward_logits, cont_logit = model.step(zt, flat[:, t])
                ret = ret + discount * model.reward(reward_logits)
                discount = discount * gamma * torch.sigmoid(cont_logit)
        return (estimates / d).view(n, s)

    return objective


def _discrete_scores(model: AgentWorldModel, z: torch.Tensor, actions: torch.Tensor, gamma: float) -> torch.Tensor:
    """The objective for action indices [N, S, d] over a tree: node i holds a latent zt[i], its
    discounted reward so far and its discount; `node` [N*S] is each sequence's node at step t."""
    n, s, d = actions.shape
    a = model.num_actions
    flat = actions.reshape(n * s, d)
    node = torch.arange(n, device=z.device).repeat_interleave(s)  # step 0: the env's own latent
    zt, ret, discount = z, z.new_zeros(n), z.new_ones(n)
    estimates = 0.0
    for t in range(d):
        q = model.q(zt).mean(0)  # [nodes, A]
        estimates = estimates + ret[node] + discount[node] * q[node, flat[:, t]]  # G_{t+1}
        if t < d - 1:
            children, node = torch.unique(node * a + flat[:, t], return_inverse=True)  # one step per (node, action)
            parent = children // a
            zt, reward_logits, cont_logit = model.step(zt[parent], children % a)
            ret = ret[parent] + discount[parent] * model.reward(reward_logits)
            discount = discount[parent] * gamma * torch.sigmoid(cont_logit)
    return (estimates / d).view(n, s)


def to_unit(action: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Continuous actions [..., A] within [low, high] -> [-1, 1]."""
    return (2 * (np.asarray(action, np.float32) - low) / (high - low) - 1).astype(np.float32)


@torch.no_grad()
def mppi(model: AgentWorldModel, z: torch.Tensor, gamma: float, depth: int, cfg: MPPISettings,
         generator: torch.Generator) -> torch.Tensor:
    """Continuous actions: z [N, D] -> the first action [N, A] in [-1, 1] of MPPI's final mean."""
    n, a = len(z), model.num_actions
    objective = q_search_objective(model, z, gamma)
    randn = lambda *shape: torch.randn(shape, generator=generator).to(z.device)  # noqa: E731
    zp, rolled = z.repeat_interleave(cfg.policy_samples, 0), []
    for t in range(depth):  # the policy prior's own sequences, fixed over the iterations
        action = model.pi(zp, generator)[0]
        rolled.append(action)
        if t < depth - 1:
            zp = model.step(zp, action)[0]
    prior = torch.stack(rolled, 1).view(n, cfg.policy_samples, depth, a)  # [N, P, d, A]
    mean, std = z.new_zeros(n, depth, a), z.new_ones(n, depth, a)
    for _ in range(cfg.iterations):
        samples = (mean[:, None] + std[:, None] * randn(n, cfg.population, depth, a)).clamp(-1, 1)
        candidates = torch.cat([prior, samples], 1)  # [N, P+S, d, A]
        scores, idx = objective(candidates).topk(cfg.elites, 1)  # [N, E]
        elites = candidates.gather(1, idx[..., None, None].expand(-1, -1, depth, a))  # [N, E, d, A]
        spread = scores.std(1, keepdim=True).nan_to_num(1.0) + 1e-8
        w = torch.softmax((scores - scores[:, :1]) / (cfg.temperature * spread), 1)[..., None, None]  # [N, E, 1, 1]
        mean = (w * elites).sum(1)
        std = (w * (elites - mean[:, None]).pow(2)).sum(1).sqrt().clamp(cfg.min_std, 2.0)
    return mean[:, 0]


class SearchAgent:
    """Acts by the search with the Q objective (exhaustive for discrete actions, MPPI for continuous
    ones); explores with `epsilon` when not deterministic (discrete: a random action with that
    probability; continuous: Gaussian noise of that std in [-1, 1] units). `low`/`high` [A]: the
    env's bounds of a continuous action."""

    def __init__(self, model: AgentWorldModel, depth: int = 2, gamma: float = 0.99, epsilon: float = 0.0, seed: int = 0,
                 mppi: MPPISettings | None = None, low: np.ndarray | None = None, high: np.ndarray | None = None):
        self.model = model.eval()
        self.depth, self.gamma, self.epsilon = depth, gamma, epsilon
        self.device = next(model.parameters()).device
        self.rng = np.random.default_rng(seed)
        if model.continuous:
            if low is None or high is None:
                raise ValueError("a continuous search agent needs the action bounds low and high")
            self.mppi = mppi or MPPISettings()
            self.low, self.high = np.asarray(low, np.float32), np.asarray(high, np.float32)
            self.generator = torch.Generator().manual_seed(seed)
        else:
            self.search = ExhaustiveSearch(model.num_actions, depth, self.device)

    @torch.no_grad()
    def act(self, obs: np.ndarray, epsilon: float = 0.0, sample: bool = False) -> np.ndarray:
        """obs [N, K, C, H, W] uint8 -> actions [N] int64, or [N, A] float32 in the env's units.
        `sample`: continuous at depth 0, act by a sample of the prior rather than its mean (SAC's
        exploration while learning)."""
        z = self.model.encode(torch.as_tensor(obs, device=self.device))
        if self.model.continuous:
            if self.depth == 0:
                unit = self.model.pi(z, self.generator, deterministic=not sample)[0].cpu().numpy()
            else:
                unit = mppi(self.model, z, self.gamma, self.depth, self.mppi, self.generator).cpu().numpy()
            unit = np.clip(unit + epsilon * self.rng.standard_normal(unit.shape), -1, 1)
            return self.to_env(unit)
        best, _ = self.search.optimize_batch(q_search_objective(self.model, z, self.gamma), len(z))
        actions = best[:, 0].cpu().numpy()
        explore = self.rng.random(len(actions)) < epsilon
        return np.where(explore, self.rng.integers(self.model.num_actions, size=len(actions)), actions)

    def with_depth(self, depth: int) -> SearchAgent:
        """The same model and settings acting at another depth (1: greedy Q; continuous 0: the prior's mean)."""
        bounds = {"mppi": self.mppi, "low": self.low, "high": self.high} if self.model.continuous else {}
        return SearchAgent(self.model, depth, self.gamma, self.epsilon, **bounds)

    def describe_acting(self) -> str:
        """One phrase: how this agent chooses an action."""
        if not self.model.continuous:
            return f"search over all {self.model.num_actions}^{self.depth} action sequences, Q at the leaves"
        if self.depth == 0:
            return "the policy prior's mean"
        return f"MPPI over {self.depth} steps, {self.mppi.population} + {self.mppi.policy_samples} prior candidates, Q at the leaves"

    def to_env(self, unit: np.ndarray) -> np.ndarray:
        """Continuous actions [..., A] in [-1, 1] -> the env's units."""
        return (self.low + (unit + 1) * 0.5 * (self.high - self.low)).astype(np.float32)

    def to_unit(self, action: np.ndarray) -> np.ndarray:
        """The env's continuous actions [..., A] -> [-1, 1] (what the model is trained on)."""
        return to_unit(action, self.low, self.high)

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        """The collector's policy interface: obs [N, K, C, H, W] -> actions [N], exploring at `epsilon`."""
        return self.act(obs, self.epsilon)

    def predict(self, obs: np.ndarray, state=None, episode_start=None, deterministic: bool = True):
        """SB3's interface: a single stack [K, C, H, W] or a batch [N, K, C, H, W]."""
        single = obs.ndim == 4
        actions = self.act(obs[None] if single else obs, 0.0 if deterministic else self.epsilon)
        return (actions[0] if single else actions), state

    def reset(self, num_envs: int = 1) -> None:
        """Nothing is carried between steps (no warm start): the MPC agents' episode-start hook."""

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {"kind": "search", "model": self.model.describe(), "depth": self.depth, "gamma": self.gamma,
                   "epsilon": self.epsilon}
        if self.model.continuous:
            payload.update(mppi=vars(self.mppi), low=self.low.tolist(), high=self.high.tolist())
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu") -> SearchAgent:
        """The agent `save` wrote; a missing, corrupt or other-version file is one UserError line."""
        from wmrl.errors import UserError

        if not Path(path).is_file():
            raise UserError(f"no agent checkpoint at {path}")
        try:
            return cls.from_payload(torch.load(path, map_location=device, weights_only=True), device)
        except (RuntimeError, KeyError, TypeError, EOFError, pickle.UnpicklingError) as e:
            reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
            raise UserError(f"{path} is not a search-agent checkpoint this wmrl version reads ({reason})") from None

    @classmethod
    def from_payload(cls, payload: dict, device: str = "cpu") -> SearchAgent:
        model = AgentWorldModel.from_checkpoint(payload).to(device)
        if not model.continuous:
            return cls(model, payload["depth"], payload["gamma"], payload["epsilon"])
        return cls(model, payload["depth"], payload["gamma"], payload["epsilon"], mppi=MPPISettings(**payload["mppi"]),
                   low=np.asarray(payload["low"]), high=np.asarray(payload["high"]))
