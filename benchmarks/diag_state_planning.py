"""Diagnostic: does the planner beat random play on Breakout when the latent is the true state?

Stage 2 and the MPC agent run unchanged, but the "encoder" is replaced by Breakout's RAM state
(paddle x, ball x, ball y, ball velocity, lives), so what the world model must learn is a
6-number system with no representation problem. If planning fails here, the encoder is not the
only thing in the way. This swaps two internals of wmrl.train (the stage-1 model builder and the
dataset encoder): a diagnostic, not a product path.

    .venv/bin/python benchmarks/diag_state_planning.py --data runs/bo-mbrl/data --encoder runs/bo-mbrl/encoder \\
        --out /tmp/state-wm --steps 2000 --episodes 5 --plan '{"horizon": 16, "value": false}'
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

import wmrl.train.stage1
import wmrl.train.stage2 as stage2
from wmrl.config import load_experiment
from wmrl.control.agent import MPCAgent
from wmrl.data.replay import ReplayDataset
from wmrl.envs import load_card, make_env
from wmrl.train.checkpoint import load_checkpoint

FIELDS = ["paddle_x", "ball_x", "ball_y", "lives"]


def features(state: np.ndarray, prev: np.ndarray) -> np.ndarray:
    """[..., 4] now and one step before -> [..., 6]: positions, ball velocity, lives (scaled to ~1)."""
    return np.concatenate([state[..., :3] / 100, (state[..., 1:3] - prev[..., 1:3]) / 10, state[..., 3:]], -1)


class StateEncoder(torch.nn.Module):
    """What WorldModel reads of an encoder: a 1 x 1 x 1 token grid of width 6."""
    grid, width = (1, 1, 1), 6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="a Breakout dataset (wmrl collect / wmrl run)")
    p.add_argument("--encoder", required=True, help="any stage-1 run of that data (only its metadata is used)")
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=2000, help="stage-2 steps")
    p.add_argument("--episodes", type=int, default=5)
    p.add_argument("--plan", default="{}", help="JSON overrides of the config's plan section")
    args = p.parse_args()
    torch.manual_seed(0)
    data = ReplayDataset(args.data)
    cols = stage2.state_columns(data, FIELDS)
    state = data.states[:, cols]
    prev = np.concatenate([state[:1], state[:-1]])
    first = np.r_[True, data.row_episode[1:] != data.row_episode[:-1]]
    prev[first] = state[first]
    latents = torch.as_tensor(features(state, prev), dtype=torch.float32)[:, None]  # [R, 1, 6]

    wmrl.train.stage1.build_model = lambda payload: argparse.Namespace(target_encoder=StateEncoder())
    stage2.encode_dataset = lambda model, data, device="cpu", rows=None, batch_size=0: (
        latents if rows is None else latents[torch.as_tensor(rows)])
    cfg = load_experiment("breakout")
    cfg.stage2.model.pool, cfg.stage2.optim.steps = [1, 1, 1], args.steps
    for key, value in json.loads(args.plan).items():
        setattr(cfg.plan, key, value)
    start = time.time()
    trainer = stage2.Stage2Trainer(cfg.stage2, load_checkpoint(args.encoder), data, args.out,
                                   clip_len=cfg.data.clip_len, val_fraction=0.1, progress=False)
    trainer.train()
    wm = trainer.model.eval()
    print(f"stage 2 on true state: {args.steps} steps in {time.time() - start:.0f} s")

    now = {}
    wm.encode = lambda obs: ((now["z"] - wm.latent_mean) / wm.latent_std).expand(len(obs), -1, -1)
    env = make_env(load_card("breakout"))
    agent = MPCAgent(wm, cfg.plan, env.action_space)
    returns = []
    for episode in range(args.episodes):
        obs, info = env.reset(seed=100 + episode)
        agent.reset(1)
        before, total, steps = info["state"][cols], 0.0, 0
        while True:
            s = info["state"][cols]
            now["z"] = torch.as_tensor(features(s, before), dtype=torch.float32)[None, None]
            before = s
            action, _ = agent.predict(obs, deterministic=True)
            obs, reward, terminated, truncated, info = env.step(int(action))
            total, steps = total + reward, steps + 1
            if terminated or truncated or steps >= 5000:
                break
        returns.append(total)
        print(f"episode {episode}: return {total:.0f} in {steps} steps")
    print(f"planner over the true state ({cfg.plan.method}, horizon {cfg.plan.horizon}, value {cfg.plan.value}): "
          f"{np.mean(returns):.2f} ± {np.std(returns):.2f} over {len(returns)} episodes")


if __name__ == "__main__":
    main()
