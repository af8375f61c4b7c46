"""A model-predictive control agent: plan in the world model, act, re-plan (receding horizon).

Each call encodes the current frame stack, optimizes an action sequence of `plan.horizon` steps
from the distribution left by the previous call shifted by one step (warm start), executes only
its first action, and keeps the refitted distribution for the next call. The API is SB3's, so
benchmarks and collectors treat it like any SB3 model:

    >>> agent = MPCAgent.from_checkpoint(load_checkpoint("runs/bo-wm"), PlannerConfig(), env.action_space)
    >>> action, _ = agent.predict(obs)          # obs [K, C, H, W] or [N, K, C, H, W] uint8
    >>> agent.save("agent.pt"); MPCAgent.load("agent.pt")
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from wmrl.control.config import PlannerConfig
from wmrl.control.objectives import make_objective
from wmrl.control.optimizers import CEM, MPPI, Categorical, Distribution, Gaussian
from wmrl.models.world_model import WorldModel

# What a saved agent keeps of its stage-2 checkpoint: enough to rebuild the model, no optimizer state.
WORLD_MODEL_KEYS = ("stage", "config", "stack_shape", "encoder_config", "action_dim", "discrete",
                    "proprio_columns", "model")


class MPCAgent:
    def __init__(self, world_model: WorldModel, cfg: PlannerConfig, action_space: gym.Space,
                 checkpoint: dict | None = None):
        if world_model.proprio_dim:
            raise ValueError("the MPC agent plans from pixels; this world model also wants proprioceptive inputs")
        discrete = isinstance(action_space, gym.spaces.Discrete)
        if discrete != world_model.discrete or (discrete and action_space.n != world_model.action_dim) or (
                not discrete and action_space.shape != (world_model.action_dim,)):
            raise ValueError(f"action space {action_space} does not match the world model's "
                             f"{'discrete' if world_model.discrete else 'continuous'} actions of size {world_model.action_dim}")
        self.wm, self.cfg, self.action_space = world_model.eval(), cfg, action_space
        self.discrete = discrete
        self.checkpoint = None if checkpoint is None else {k: checkpoint[k] for k in WORLD_MODEL_KEYS}
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.rng = np.random.default_rng(cfg.seed)  # exploration noise
        optimizer_cls = MPPI if cfg.method == "mppi" else CEM
        extra = {"temperature": cfg.temperature} if cfg.method == "mppi" else {}
        self.optimizer = optimizer_cls(cfg.population, cfg.elites, cfg.iterations, cfg.momentum,
                                       generator=self.generator, **extra)
        self.goal: torch.Tensor | None = None  # [M, D]
        self.plans: list[Distribution | None] = []  # the warm start, one per env

    @classmethod
    def from_checkpoint(cls, checkpoint: dict, cfg: PlannerConfig, action_space: gym.Space) -> MPCAgent:
        return cls(WorldModel.from_checkpoint(checkpoint), cfg, action_space, checkpoint)

    def reset(self, num_envs: int = 1) -> None:
        """Forget the warm starts (call at episode starts)."""
        self.plans = [None] * num_envs

    @torch.no_grad()
    def set_goal(self, goal_obs: np.ndarray) -> None:
        """Goal image stack [K, C, H, W] uint8: planning then scores closeness of the last imagined latent to it."""
        self.goal = self.wm.encode(torch.as_tensor(goal_obs)[None])[0]

    def initial(self) -> Distribution:
        if self.discrete:
            return Categorical.initial(self.cfg.horizon, self.action_space.n, self.cfg.smoothing)
        return Gaussian.initial(self.cfg.horizon, torch.as_tensor(self.action_space.low),
                                torch.as_tensor(self.action_space.high), self.cfg.init_std, self.cfg.min_std)

    @torch.no_grad()
    def plan(self, obs: np.ndarray) -> torch.Tensor:
        """obs [N, K, C, H, W] uint8 -> the first planned action of each env, [N] or [N, A]."""
        z = self.wm.encode(torch.as_tensor(obs))  # [N, M, D]
        if len(self.plans) != len(z):
            self.reset(len(z))
        objective = make_objective(self.wm, z, self.cfg, self.goal)  # all envs in one rollout per iteration
        results = self.optimizer.optimize_batch(objective, [plan or self.initial() for plan in self.plans])
        self.plans = [dist.shift() for _, dist in results]
        return torch.stack([best[0] for best, _ in results])

    def predict(self, obs: np.ndarray, state=None, episode_start: np.ndarray | None = None,
                deterministic: bool = True) -> tuple[np.ndarray, None]:
        """SB3's signature. Not deterministic: with probability `plan.explore` a random action
        (discrete), or Gaussian noise of std `plan.explore` × the action range (continuous)."""
        single = np.asarray(obs).ndim == 4
        obs = np.asarray(obs)[None] if single else np.asarray(obs)
        if episode_start is not None:
            for i in np.flatnonzero(episode_start):
                if i < len(self.plans):
                    self.plans[i] = None
        actions = self.plan(obs).numpy()
        if not deterministic and self.cfg.explore > 0:
            if self.discrete:
                explore = self.rng.random(len(actions)) < self.cfg.explore
                actions = np.where(explore, self.rng.integers(self.action_space.n, size=len(actions)), actions)
            else:
                low, high = self.action_space.low, self.action_space.high
                actions = np.clip(actions + self.rng.normal(0, self.cfg.explore, actions.shape) * (high - low), low, high)
        actions = actions.astype(np.int64 if self.discrete else self.action_space.dtype)
        return (actions[0] if single else actions), None

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        """The collector's policy protocol: batched obs -> batched actions, exploring."""
        return self.predict(obs, deterministic=False)[0]

    def save(self, path: str | Path) -> None:
        """One self-contained file: planner settings, action space, the world model's weights."""
        from wmrl.config import to_dict

        if self.checkpoint is None:
            raise ValueError("only an agent built from a stage-2 checkpoint can be saved")
        space = ({"n": int(self.action_space.n)} if self.discrete else
                 {"low": self.action_space.low.tolist(), "high": self.action_space.high.tolist()})
        payload = {"kind": "wmrl-mpc-agent", "planner": to_dict(self.cfg), "action_space": space,
                   "world_model": self.checkpoint}
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")  # atomic: temp file, then rename
        os.close(fd)
        torch.save(payload, tmp)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu") -> MPCAgent:
        from wmrl.config import from_dict

        payload = torch.load(path, map_location=device, weights_only=True)
        if not isinstance(payload, dict) or payload.get("kind") != "wmrl-mpc-agent":
            raise ValueError(f"{path} is not a saved wmrl MPC agent")
        space = payload["action_space"]
        action_space = (gym.spaces.Discrete(space["n"]) if "n" in space else
                        gym.spaces.Box(np.array(space["low"], np.float32), np.array(space["high"], np.float32)))
        cfg = from_dict(PlannerConfig, payload["planner"], source=str(path), prefix="plan.")
        return cls.from_checkpoint(payload["world_model"], cfg, action_space)
