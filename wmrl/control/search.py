"""Acting for discrete actions: a depth-d search over the agent's world model with Q at the leaves.

Every sequence of d actions is scored (A**d candidates: 16 for Breakout at depth 2), for all envs
in one batched rollout:

    score(a_0 .. a_{d-1}) = sum_{t<d-1} gamma^t C_t r(z_t, a_t) + gamma^{d-1} C_{d-1} Q(z_{d-1}, a_{d-1})

where z_0 is the encoded observation, z_{t+1} the predicted next latent, r the predicted reward and
C_t the product of predicted continuations (a predicted lost life ends the value). Depth 1 is
greedy Q; deeper searches let the model's rewards and continuations correct Q. The agent takes
the first action of the best sequence. `ExhaustiveSearch` knows nothing of models: it enumerates
candidates and asks an objective, as the CEM/MPPI optimizers do.

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

from wmrl.models.agent_model import AgentWorldModel

BatchObjective = Callable[[torch.Tensor], torch.Tensor]  # actions [N, S, d] long -> scores [N, S]


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
    """Scores of action sequences [N, S, d] from the latents z [N, D] (see the module docstring)."""

    def objective(actions: torch.Tensor) -> torch.Tensor:
        n, s, d = actions.shape
        zt = z.repeat_interleave(s, 0)  # [N*S, D]
        flat = actions.reshape(n * s, d)
        score = torch.zeros(n * s, device=z.device)
        discount = torch.ones(n * s, device=z.device)
        for t in range(d - 1):
            zt, reward_logits, cont_logit = model.step(zt, flat[:, t])
            score = score + discount * model.reward(reward_logits)
            discount = discount * gamma * torch.sigmoid(cont_logit)
        q = model.q(zt).mean(0).gather(1, flat[:, -1:])[:, 0]  # [N*S]: the ensemble's mean at the last action
        return (score + discount * q).view(n, s)

    return objective


class SearchAgent:
    """Acts by `ExhaustiveSearch` with the Q objective; epsilon-greedy when not deterministic."""

    def __init__(self, model: AgentWorldModel, depth: int = 2, gamma: float = 0.99, epsilon: float = 0.0, seed: int = 0):
        self.model = model.eval()
        self.depth, self.gamma, self.epsilon = depth, gamma, epsilon
        self.device = next(model.parameters()).device
        self.search = ExhaustiveSearch(model.num_actions, depth, self.device)
        self.rng = np.random.default_rng(seed)

    @torch.no_grad()
    def act(self, obs: np.ndarray, epsilon: float = 0.0) -> np.ndarray:
        """obs [N, K, C, H, W] uint8 -> actions [N] int64 (random with probability `epsilon`)."""
        z = self.model.encode(torch.as_tensor(obs, device=self.device))
        best, _ = self.search.optimize_batch(q_search_objective(self.model, z, self.gamma), len(z))
        actions = best[:, 0].cpu().numpy()
        explore = self.rng.random(len(actions)) < epsilon
        return np.where(explore, self.rng.integers(self.model.num_actions, size=len(actions)), actions)

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
        return cls(model, payload["depth"], payload["gamma"], payload["epsilon"])
