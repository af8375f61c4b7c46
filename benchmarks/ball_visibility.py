"""How visible Breakout's ball is after resizing: the brightest pixel near the ball at 64x64 and 84x84.

Plays random actions in ALE/Breakout-v5 (frame skip 4, grayscale 210x160), finds the ball between
the bricks and the paddle in the full frame, resizes the frame with INTER_AREA (as the card's
ResizeObservation does) and reads the maximum gray in a 5x5 window around the ball's position.
The breakout card's 84x84 default rests on this measurement.

    python benchmarks/ball_visibility.py --steps 3000
"""

import argparse

import ale_py
import cv2
import gymnasium as gym
import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 84])
    args = parser.parse_args()
    gym.register_envs(ale_py)
    env = gym.make("ALE/Breakout-v5", frameskip=4, repeat_action_probability=0.0, obs_type="grayscale")
    obs, _ = env.reset(seed=0)
    env.step(1)
    rng = np.random.default_rng(0)
    peaks = {s: [] for s in args.sizes}
    for _ in range(args.steps):
        obs, _, terminated, truncated, _ = env.step(rng.integers(4))
        if terminated or truncated:
            obs, _ = env.reset()
            env.step(1)
            continue
        ys, xs = np.nonzero(obs[93:189, 8:152] > 0)  # below the bricks, above the paddle, inside the walls
        if not 0 < len(ys) <= 20:  # no ball in play (or something else lit)
            continue
        by, bx = ys.mean() + 93, xs.mean() + 8
        for s in args.sizes:
            small = cv2.resize(obs, (s, s), interpolation=cv2.INTER_AREA)
            y, x = int(by * s / 210), int(bx * s / 160)
            peaks[s].append(small[max(y - 2, 0):y + 3, max(x - 2, 0):x + 3].max())
    print("| size | frames with the ball | median peak gray | 10th percentile | share >= 40 |")
    print("|---|---|---|---|---|")
    for s, v in peaks.items():
        v = np.array(v)
        print(f"| {s}x{s} | {len(v)} | {np.median(v):.0f} | {np.percentile(v, 10):.0f} | {(v >= 40).mean():.2f} |")


if __name__ == "__main__":
    main()
