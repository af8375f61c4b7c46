"""`wmrl imagine`: train a Stable-Baselines3 algorithm inside a world model, then evaluate the
policy in the real env. Episodes in imagination start from encoded frame stacks of the world
model's training episodes."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from wmrl.control.imagination import ImaginationVecEnv, LatentPolicy
from wmrl.data.replay import ReplayDataset
from wmrl.envs import load_card, make_env
from wmrl.errors import UserError
from wmrl.eval.episodes import run_episodes
from wmrl.models.world_model import WorldModel
from wmrl.train.stage2 import encode_dataset

ALGOS = {"ppo": "PPO", "a2c": "A2C", "dqn": "DQN", "sac": "SAC", "td3": "TD3"}


def imagine(payload: dict, data_root: str | Path, algo: str, steps: int, out: str | Path, num_envs: int = 32,
            horizon: int = 15, starts: int = 10_000, eval_episodes: int = 10, max_steps: int | None = None,
            seed: int = 0, progress: bool = False) -> dict:
    import stable_baselines3

    out = Path(out)
    wm = WorldModel.from_checkpoint(payload)
    data = ReplayDataset(data_root)
    data.require_stack_shape(payload["stack_shape"], "the world model")
    card = load_card(data.meta["wmrl"]["card"]["name"])
    env = make_env(card)
    try:
        discrete = hasattr(env.action_space, "n")
        if algo in ("sac", "td3") and discrete or algo == "dqn" and not discrete:
            raise UserError(f"--algo {algo} does not support the {'discrete' if discrete else 'continuous'} actions of {card.name}")
        train_ids, _ = data.split(payload["val_fraction"])
        rows = np.flatnonzero(np.isin(data.row_episode, train_ids) & ~data.is_last)
        rng = np.random.default_rng(seed)
        rows = np.sort(rng.choice(rows, min(starts, len(rows)), replace=False))
        venv = ImaginationVecEnv(wm, encode_dataset(wm, data, rows=rows), num_envs, horizon, env.action_space, seed=seed)
        venv.seed(seed)
        torch.manual_seed(seed)
        cls = getattr(stable_baselines3, ALGOS[algo])
        # PPO: a rollout of ~2048 steps over all envs, like its single-env default (not 2048 per env).
        extra = {"n_steps": max(8, 2048 // num_envs)} if algo == "ppo" else {}
        model = cls("MlpPolicy", venv, seed=seed, device="cpu", verbose=0, **extra)
        start = time.perf_counter()
        model.learn(steps, progress_bar=progress)
        learn_seconds = time.perf_counter() - start
        out.mkdir(parents=True, exist_ok=True)
        model.save(out / "model.zip")
        stats = run_episodes(env, LatentPolicy(wm, model), eval_episodes, seed=seed, max_steps=max_steps)[0] if eval_episodes else None
    finally:
        env.close()
    result = {"env": card.name, "algo": algo, "imagined_steps": model.num_timesteps, "learn_seconds": learn_seconds,
              "imagined_steps_per_second": model.num_timesteps / learn_seconds, **(stats.summary() if stats else {})}
    (out / "imagine.json").write_text(json.dumps(result, indent=1))
    return result
