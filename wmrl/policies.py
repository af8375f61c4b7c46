"""Turn a ``--policy`` argument into a collector policy ``obs [N, K, C, H, W] -> actions [N, ...]``."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import gymnasium as gym
import numpy as np

from wmrl.errors import UserError

SB3_ALGOS = ("a2c", "dqn", "ppo", "sac", "td3", "ddpg")


class RandomPolicy:
    """Uniform actions from the (batched) action space, seeded."""

    def __init__(self, action_space: gym.Space, seed: int | None = None):
        self.action_space = action_space
        self.action_space.seed(seed)

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        return self.action_space.sample()

    def predict(self, obs: np.ndarray, state=None, episode_start=None, deterministic: bool = True):
        """SB3's signature, for evaluation beside other agents (one env: a single action)."""
        return self.action_space.sample(), None


class SB3Policy:
    """A Stable-Baselines3 model trained on the card's env with stacks flattened to [K*C, H, W]
    (`wmrl.envs.wrappers.StackToChannels`). Samples its actions (deterministic=False) unless told."""

    def __init__(self, path: str | Path, stack_shape: tuple[int, ...], deterministic: bool = False):
        algo = sb3_algorithm(path)
        import stable_baselines3

        cls = getattr(stable_baselines3, algo.upper())
        self.model = cls.load(str(path), device="cpu")
        k, c, h, w = stack_shape
        self.obs_shape = (k * c, h, w)
        if tuple(self.model.observation_space.shape) != self.obs_shape:
            raise UserError(f"SB3 model {path} expects observations {self.model.observation_space.shape}, "
                            f"but this env card gives stacks {stack_shape} -> {self.obs_shape}")
        self.deterministic = deterministic

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        actions, _ = self.model.predict(obs.reshape(len(obs), *self.obs_shape), deterministic=self.deterministic)
        return actions

    def predict(self, obs: np.ndarray, state=None, episode_start=None, deterministic: bool = True):
        """SB3's signature, for evaluation beside other agents: one stack [K, C, H, W] -> one action."""
        return self.model.predict(np.asarray(obs).reshape(self.obs_shape), deterministic=deterministic)


def sb3_algorithm(path: str | Path) -> str:
    """The algorithm of an SB3 zip: from the module of its policy class (dqn, sac, td3), and for
    the actor-critic policies that PPO and A2C share, from PPO's own saved hyperparameters."""
    try:
        with zipfile.ZipFile(path) as z:
            data = json.loads(z.read("data"))
        module = data["policy_class"]["__module__"]  # e.g. stable_baselines3.dqn.policies
    except (OSError, zipfile.BadZipFile, KeyError, json.JSONDecodeError) as e:
        raise UserError(f"{path} is not a Stable-Baselines3 model zip ({e})") from None
    algo = module.split(".")[1] if module.startswith("stable_baselines3.") else ""
    if algo == "common":
        algo = "ppo" if "clip_range" in data else "a2c"
    if algo not in SB3_ALGOS:
        raise UserError(f"{path}: unsupported SB3 policy module '{module}'")
    return algo


def check_policy_spec(spec: str) -> None:
    """Fail early (before any env is built) on a policy argument that cannot work."""
    if spec == "random":
        return
    path = Path(spec)
    if path.suffix not in (".zip", ".pt"):
        raise UserError(f"unknown policy '{spec}': use 'random', the path of a Stable-Baselines3 .zip "
                        "or of a wmrl agent .pt (wmrl plan --save-agent)")
    if not path.is_file():
        raise UserError(f"policy file not found: {path}")
    if path.suffix == ".zip":
        sb3_algorithm(path)


def load_agent(path: str | Path):
    """A saved wmrl MPC agent; it explores (plan.explore) when used as a collector policy."""
    from wmrl.control.agent import MPCAgent

    try:
        return MPCAgent.load(path)
    except Exception as e:  # a corrupt or foreign file: torch and pickle raise many kinds
        raise UserError(f"{path} is not a saved wmrl agent ({str(e).splitlines()[0][:200]})") from None


def make_policy(spec: str, venv: gym.vector.VectorEnv, seed: int | None = None):
    """``random``, the path of an SB3 model zip, or of a saved wmrl agent (.pt)."""
    check_policy_spec(spec)
    if spec == "random":
        return RandomPolicy(venv.action_space, seed)
    if spec.endswith(".pt"):
        agent = load_agent(spec)
        if tuple(agent.checkpoint["stack_shape"]) != tuple(venv.single_observation_space.shape):
            raise UserError(f"agent {spec} wants stacks {tuple(agent.checkpoint['stack_shape'])}, "
                            f"this env card gives {venv.single_observation_space.shape}")
        return agent
    return SB3Policy(spec, venv.single_observation_space.shape)
