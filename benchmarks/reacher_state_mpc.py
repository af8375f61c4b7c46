"""Diagnostic: how far ahead must a planner look on Reacher-v5 when its model is perfect?

MPPI plans over the true MuJoCo simulator (each candidate torque sequence is rolled out from the
current state by the env's own physics) and scores it by Reacher-v5's reward summed over the
horizon, minus the fingertip-target distance minus the squared torques, with no value at the end.
Whatever horizon this needs to reach the target, a learned model needs at least as much foresight
(from its rollouts or from Q). Writes one line per horizon.

    .venv/bin/python benchmarks/reacher_state_mpc.py --horizons 3 5 10 20 --episodes 10
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
import numpy as np


def plan_return(env, qpos: np.ndarray, qvel: np.ndarray, actions: np.ndarray) -> float:
    """Reacher-v5's reward summed along `actions` [H, 2] from the state (qpos, qvel)."""
    env.set_state(qpos, qvel)
    total = 0.0
    for a in actions:
        env.do_simulation(a, env.frame_skip)
        distance = np.linalg.norm(env.get_body_com("fingertip") - env.get_body_com("target"))
        total -= distance + np.square(a).sum()  # Reacher-v5: both weights 1
    return total


def mppi_action(env, rng: np.random.Generator, mean: np.ndarray, population: int, iterations: int) -> np.ndarray:
    """MPPI over the true state: mean [H, 2] (warm start) -> the refined mean [H, 2]."""
    qpos, qvel = env.data.qpos.copy(), env.data.qvel.copy()
    std = np.full_like(mean, 0.5)
    for _ in range(iterations):
        samples = np.clip(mean + std * rng.standard_normal((population, *mean.shape)), -1, 1)
        scores = np.array([plan_return(env, qpos, qvel, s) for s in samples])
        top = np.argsort(scores)[-population // 8:]
        w = np.exp((scores[top] - scores[top].max()) / (0.5 * scores[top].std() + 1e-8))
        w /= w.sum()
        mean = np.einsum("p,pha->ha", w, samples[top])
        std = np.sqrt(np.einsum("p,pha->ha", w, (samples[top] - mean) ** 2)).clip(0.05, 1.0)
    env.set_state(qpos, qvel)
    return mean


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--horizons", type=int, nargs="+", default=[3, 5, 10, 20])
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--population", type=int, default=128)
    parser.add_argument("--iterations", type=int, default=4)
    args = parser.parse_args()
    for horizon in args.horizons:
        env, rng, start = gym.make("Reacher-v5"), np.random.default_rng(0), time.perf_counter()
        returns, finals = [], []
        for episode in range(args.episodes):
            env.reset(seed=1000 + episode)
            sim, total, mean = env.unwrapped, 0.0, np.zeros((horizon, 2))
            for _ in range(50):  # Reacher-v5's time limit
                mean = mppi_action(sim, rng, mean, args.population, args.iterations)
                total += env.step(mean[0].astype(np.float32))[1]
                mean = np.concatenate([mean[1:], np.zeros((1, 2))])  # warm start, shifted by one step
            finals.append(np.linalg.norm(sim.get_body_com("fingertip")[:2] - sim.get_body_com("target")[:2]))
            returns.append(total)
        finals = np.array(finals)
        print(f"horizon {horizon}: return {np.mean(returns):.2f}, success {np.mean(finals <= 0.05):.2f} "
              f"(final distance <= 0.05), median final distance {np.median(finals):.3f} over {args.episodes} "
              f"episodes, {time.perf_counter() - start:.0f} s", flush=True)
        env.close()


if __name__ == "__main__":
    main()
