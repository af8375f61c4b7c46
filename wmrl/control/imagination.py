"""Environments inside the world model, for any Stable-Baselines3 algorithm.

The state is a latent z [M, D]; the observation is z flattened to [M*D] float32. Episodes start
from latents of real observations (encoded by the caller, e.g. from a replay dataset); a step
imagines one transition from the current latent alone (the predictor's first window position,
so the env is Markov in what the agent observes); the reward head gives the reward, a predicted
continuation below `continue_below` terminates, and `horizon` steps truncate.

* `ImaginationVecEnv`: SB3 `VecEnv`, all envs advance in one batched forward pass.
* `ImaginationEnv`: one env as a `gymnasium.Env` (passes `gymnasium.utils.env_checker.check_env`).

The world model is used through `rollout(z [N, M, D], actions [N, 1(, A)])`, `discrete`,
`action_dim`, `num_latents` and `latent_dim` only.

Example:
    >>> venv = ImaginationVecEnv(wm, starts, num_envs=64, horizon=15, action_space=env.action_space)
    >>> PPO("MlpPolicy", venv).learn(100_000)
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.vec_env import VecEnv


def latent_space(wm) -> gym.spaces.Box:
    return gym.spaces.Box(-np.inf, np.inf, (wm.num_latents * wm.latent_dim,), np.float32)


@torch.no_grad()
def imagine_step(wm, z: torch.Tensor, actions: np.ndarray) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """z [N, M, D], actions [N(, A)] -> next z [N, M, D], reward [N], continuation probability [N]."""
    a = torch.as_tensor(np.asarray(actions))
    a = a.long() if wm.discrete else a.float().view(len(z), -1)
    z_next, reward, cont = wm.rollout(z, a[:, None])
    return z_next[:, 0], reward[:, 0].numpy(), cont[:, 0].numpy()


class ImaginationVecEnv(VecEnv):
    render_mode = None  # nothing to render: the state is a latent
    def __init__(self, wm, starts: torch.Tensor, num_envs: int, horizon: int, action_space: gym.Space,
                 continue_below: float = 0.5, seed: int = 0):
        """starts [R, M, D]: latents of real observations to start episodes from."""
        if starts.ndim != 3 or starts.shape[1:] != (wm.num_latents, wm.latent_dim):
            raise ValueError(f"starts must be [R, {wm.num_latents}, {wm.latent_dim}], got {list(starts.shape)}")
        super().__init__(num_envs, latent_space(wm), action_space)
        self.wm, self.starts, self.horizon, self.continue_below = wm.eval(), starts.float(), horizon, continue_below
        self.rng = np.random.default_rng(seed)
        self.z = self.starts[:num_envs].clone()  # [N, M, D], replaced at reset
        self.t = np.zeros(num_envs, np.int64)
        self.actions: np.ndarray | None = None

    def _start(self, n: int) -> torch.Tensor:
        return self.starts[torch.as_tensor(self.rng.integers(len(self.starts), size=n))]

    def _obs(self, z: torch.Tensor) -> np.ndarray:
        return z.flatten(1).numpy().astype(np.float32, copy=True)

    def reset(self) -> np.ndarray:
        seeds = getattr(self, "_seeds", [])
        if seeds and seeds[0] is not None:
            self.rng = np.random.default_rng(seeds[0])
            self._seeds = []
        self.z, self.t[:] = self._start(self.num_envs), 0
        return self._obs(self.z)

    def step_async(self, actions: np.ndarray) -> None:
        self.actions = actions

    def step_wait(self):
        self.z, reward, cont = imagine_step(self.wm, self.z, self.actions)
        self.t += 1
        terminated = cont < self.continue_below
        truncated = (self.t >= self.horizon) & ~terminated
        done = terminated | truncated
        obs = self._obs(self.z)
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        if done.any():
            ended = np.flatnonzero(done)
            for i in ended:
                infos[i]["terminal_observation"] = obs[i].copy()
                infos[i]["TimeLimit.truncated"] = bool(truncated[i])
            self.z[ended] = self._start(len(ended))
            self.t[ended] = 0
            obs[ended] = self._obs(self.z[ended])
        return obs, reward.astype(np.float32), done, infos

    def close(self) -> None:
        pass

    def get_attr(self, attr_name: str, indices=None) -> list:
        return [getattr(self, attr_name)] * len(self._get_indices(indices))

    def set_attr(self, attr_name: str, value: Any, indices=None) -> None:
        setattr(self, attr_name, value)

    def env_method(self, method_name: str, *args, indices=None, **kwargs) -> list:
        return [getattr(self, method_name)(*args, **kwargs)] * len(self._get_indices(indices))

    def env_is_wrapped(self, wrapper_class, indices=None) -> list[bool]:
        return [False] * len(self._get_indices(indices))


class ImaginationEnv(gym.Env):
    """One imagined env as a `gymnasium.Env`: the same dynamics as `ImaginationVecEnv`."""

    metadata = {"render_modes": []}

    def __init__(self, wm, starts: torch.Tensor, horizon: int, action_space: gym.Space, continue_below: float = 0.5):
        self.wm, self.starts, self.horizon, self.continue_below = wm.eval(), starts.float(), horizon, continue_below
        self.observation_space, self.action_space = latent_space(wm), action_space
        self.z, self.t = self.starts[:1].clone(), 0

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.z, self.t = self.starts[[int(self.np_random.integers(len(self.starts)))]], 0
        return self.z.flatten().numpy().astype(np.float32), {}

    def step(self, action):
        self.z, reward, cont = imagine_step(self.wm, self.z, np.asarray(action)[None])
        self.t += 1
        terminated = bool(cont[0] < self.continue_below)
        truncated = self.t >= self.horizon and not terminated
        return self.z.flatten().numpy().astype(np.float32), float(reward[0]), terminated, truncated, {"continuation": float(cont[0])}


class LatentPolicy:
    """An SB3 model trained in imagination, acting in the real env: encode the frame stack, then
    ask the model. SB3's ``predict`` signature; obs [K, C, H, W] or [N, K, C, H, W] uint8."""

    def __init__(self, wm, model):
        self.wm, self.model = wm.eval(), model

    @torch.no_grad()
    def predict(self, obs: np.ndarray, state=None, episode_start=None, deterministic: bool = True):
        single = np.asarray(obs).ndim == 4
        obs = torch.as_tensor(np.asarray(obs)[None] if single else np.asarray(obs))
        latent = self.wm.encode(obs).flatten(1).numpy()  # [N, M*D]
        actions, _ = self.model.predict(latent, deterministic=deterministic)
        return (actions[0] if single else actions), None

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        return self.predict(obs, deterministic=False)[0]
