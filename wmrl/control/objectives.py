"""Scores of candidate action sequences from one batched world-model rollout.

`make_objective` closes over the world model and the current latents of N envs and returns
``objective(actions [N, S, H(, A)]) -> scores [N, S]`` for the optimizers' `optimize_batch`.
Its terms add up:
* return: sum_t gamma^t * alive_t * r_t + gamma^H * alive_H * V(z_H), where alive_t is the
  product of the predicted continuation probabilities before step t, so nothing counts after a
  predicted termination (or, on Atari, a lost life);
* goal energy: minus the L1 distance between the last imagined latent and the goal latent
  (V-JEPA 2-AC's energy).
"""

from __future__ import annotations

import torch

from wmrl.control.config import PlannerConfig
from wmrl.control.optimizers import Objective
from wmrl.models.world_model import WorldModel


def imagined_return(reward: torch.Tensor, cont: torch.Tensor, gamma: float,
                    terminal_value: torch.Tensor | None = None) -> torch.Tensor:
    """reward, cont [S, H], terminal_value [S] | None -> discounted return [S]."""
    s, h = reward.shape
    discount = gamma ** torch.arange(h + 1, dtype=reward.dtype)  # [H+1]
    alive = torch.cat([torch.ones(s, 1), cont.cumprod(1)], 1)  # [S, H+1]: alive before step t
    ret = (discount[:h] * alive[:, :h] * reward).sum(1)
    if terminal_value is not None:
        ret = ret + discount[h] * alive[:, h] * terminal_value
    return ret


def goal_energy(z: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
    """The last imagined latents z [S, M, D], goal [M, D] -> minus their L1 distance to the goal [S]."""
    return -(z - goal).abs().mean((-2, -1))


def make_objective(wm: WorldModel, z: torch.Tensor, cfg: PlannerConfig, goal: torch.Tensor | None = None) -> Objective:
    """z [N, M, D]: the current latent of each of N envs (planning starts from it alone)."""
    use_value = cfg.value and wm.has_value
    if cfg.goal_weight and goal is None:
        raise ValueError("plan.goal_weight is set but no goal latent was given")

    @torch.no_grad()
    def objective(actions: torch.Tensor) -> torch.Tensor:
        n, s = actions.shape[:2]
        start = torch.arange(n).repeat_interleave(s)  # candidate i*S + j plans for env i
        # Discrete candidates that share a start and a prefix share its compute.
        last, reward, cont = wm.rollout_shared(z, actions.flatten(0, 1), start)  # [N*S, M, D], [N*S, H] x 2
        score = torch.zeros(n * s)
        if cfg.reward_weight:
            value = wm.expected_value(last) if use_value else None
            score = score + cfg.reward_weight * imagined_return(reward, cont, cfg.gamma, value)
        if cfg.goal_weight:
            score = score + cfg.goal_weight * goal_energy(last, goal)
        return score.view(n, s)

    return objective
