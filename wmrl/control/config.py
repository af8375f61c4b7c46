"""Planner settings as a plain dataclass (the `plan:` section of an experiment config)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass
class PlannerConfig:
    method: Literal["cem", "mppi"] = "cem"
    horizon: int = 8  # imagined steps per candidate sequence
    population: int = 256  # candidate sequences per iteration
    elites: int = 32  # CEM: the best candidates the distribution is refitted to (MPPI: its top-k)
    iterations: int = 3
    momentum: float = 0.1  # share of the previous distribution kept at each refit
    init_std: float = 0.5  # Gaussian: starting std as a share of the action range
    min_std: float = 0.05  # Gaussian: floor on the std, as a share of the action range
    temperature: float = 0.5  # MPPI: softmax temperature over normalised scores
    smoothing: float = 0.1  # categorical: probability mass spread uniformly at each refit
    gamma: float = 0.99  # discount of imagined rewards
    value: bool = True  # add gamma^H * V(z_H) when the world model has a value head
    goal_weight: float = 0.0  # weight of the goal energy (-L1 to the goal latent); needs a goal
    reward_weight: float = 1.0  # weight of the discounted imagined return
    explore: float = 0.0  # when not deterministic: epsilon (discrete) or Gaussian noise std share (continuous)
    seed: int = 0

    def __post_init__(self):
        if self.horizon < 1 or self.population < 2 or self.iterations < 1:
            raise ValueError("plan.horizon and plan.iterations must be >= 1, plan.population >= 2")
        if not 1 <= self.elites <= self.population:
            raise ValueError(f"plan.elites must be in [1, population={self.population}], got {self.elites}")
        if not 0.0 <= self.momentum < 1.0 or not 0.0 <= self.smoothing < 1.0:
            raise ValueError("plan.momentum and plan.smoothing must be in [0, 1)")
        if self.temperature <= 0 or self.init_std <= 0 or self.min_std < 0:
            raise ValueError("plan.temperature and plan.init_std must be > 0, plan.min_std >= 0")
        if not 0.0 <= self.explore <= 1.0:
            raise ValueError(f"plan.explore must be in [0, 1], got {self.explore}")


@dataclass
class MPPISettings:
    """Continuous actions: TD-MPC2's MPPI over `search.depth` steps (wmrl.control.search)."""

    population: int = 128  # Gaussian candidate sequences per iteration
    policy_samples: int = 16  # candidates rolled out by the policy prior (the same in every iteration)
    elites: int = 16
    iterations: int = 4
    temperature: float = 0.5  # softmax temperature over scores divided by their spread
    min_std: float = 0.05  # in action units ([-1, 1])

    def __post_init__(self):
        if min(self.population, self.elites, self.iterations) < 1 or self.policy_samples < 0:
            raise ValueError("search.mppi: population, elites and iterations must be >= 1, policy_samples >= 0")
        if self.elites > self.population + self.policy_samples or self.temperature <= 0:
            raise ValueError("search.mppi: elites must be <= population + policy_samples, temperature > 0")


@dataclass
class SearchConfig:
    """Acting of the online agent (wmrl.control.search): depth-d search with Q at the leaves, and
    the exploration schedule of `wmrl run` (linear over real env steps): epsilon-greedy for
    discrete actions, Gaussian noise of that std (in [-1, 1] action units) for continuous ones."""

    # Discrete: the search's depth, 1 is greedy Q. Continuous: MPPI's horizon (1: Q alone), or 0: the
    # policy prior's mean, no search (TD-MPC2's pi; what SAC acts by).
    depth: int = 2
    # The trained agent's depth (agent.pt: the run's evaluation, `wmrl plan`, the benchmarks) when it
    # differs from the depth it learned with; 0: `depth`. Learning greedily and acting by the search
    # afterwards costs the search's time only at evaluation.
    eval_depth: int = 0
    mppi: MPPISettings = field(default_factory=MPPISettings)
    explore_start: float = 1.0
    explore_end: float = 0.02
    explore_steps: int = 10_000  # env steps (after the random seed steps) to go from start to end
    eval_epsilon: float = 0.0  # exploration during evaluation episodes

    def __post_init__(self):
        if self.depth < 0 or self.explore_steps < 1:
            raise ValueError("search.depth must be >= 0 (0: continuous actions by the policy prior) and search.explore_steps >= 1")
        if self.eval_depth < 0:
            raise ValueError(f"search.eval_depth must be >= 0 (0: search.depth), got {self.eval_depth}")
        if not all(0.0 <= e <= 1.0 for e in (self.explore_start, self.explore_end, self.eval_epsilon)):
            raise ValueError("search: explore_start, explore_end and eval_epsilon must be in [0, 1]")

    @property
    def trained_depth(self) -> int:
        """The depth the trained agent acts at: `eval_depth`, or `depth` when that is 0."""
        return self.eval_depth or self.depth

    def epsilon(self, steps: int) -> float:
        """Exploration after `steps` learning-phase env steps."""
        frac = min(steps / self.explore_steps, 1.0)
        return self.explore_start + frac * (self.explore_end - self.explore_start)
