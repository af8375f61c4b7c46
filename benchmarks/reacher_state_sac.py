"""Calibration: what a model-free learner reaches on Reacher-v5 at the robots budget when it is
given the true state instead of pixels (SB3 SAC, its default settings: one update of 256 per step).

The pixel agents' target (success >= 0.5, median final distance <= 0.05 at 50k steps) is judged
against this: the same env, the same reward, the 10-number observation Reacher-v5 returns.

    .venv/bin/python benchmarks/reacher_state_sac.py --seed 0 --steps 50000 [--eval-every 10000]
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import SAC

from wmrl.eval.episodes import run_episodes


SUCCESS = 0.05  # the reacher card's goal threshold (metres)


def learn_and_evaluate(agent, make_eval_env, steps: int, eval_every: int, episodes: int, label: str) -> None:
    """Train an SB3 `agent` for `steps` env steps; after every `eval_every` of them (0: at the end
    only) play `episodes` deterministic episodes of make_eval_env() and print one line: return,
    success and the median fingertip-target distance after each episode's last step."""
    start, done = time.perf_counter(), 0
    while done < steps:
        chunk = min(eval_every or steps, steps - done)
        agent.learn(chunk, reset_num_timesteps=False)
        done += chunk
        seconds = time.perf_counter() - start
        stats, _ = run_episodes(make_eval_env(), agent, episodes, seed=10**6, measure=lambda info: -info["reward_dist"])
        returns, d = np.array(stats.returns), np.array(stats.measures)
        print(f"{label}, {done} steps ({seconds:.0f} s): return {np.mean(returns):.2f} ± {np.std(returns):.2f}, "
              f"success {np.mean(d <= SUCCESS):.2f}, median final distance {np.median(d):.3f} ({episodes} episodes)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=50_000)
    parser.add_argument("--episodes", type=int, default=50, help="deterministic evaluation episodes")
    parser.add_argument("--eval-every", type=int, default=0, help="also evaluate every this many steps (0: at the end only)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = SAC("MlpPolicy", gym.make("Reacher-v5"), seed=args.seed, learning_starts=1000, verbose=0)
    learn_and_evaluate(model, lambda: gym.make("Reacher-v5"), args.steps, args.eval_every, args.episodes,
                       f"SAC on the true state, seed {args.seed}")


if __name__ == "__main__":
    main()
