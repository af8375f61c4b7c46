"""Which Reacher render shows the target? For each view, over random-play frames: how often the
target is seen and by how many pixels, and how well their centroid locates it (R² against the true
x, y). To find its pixels exactly, the target is painted pure green for this measurement only.

    MUJOCO_GL=egl python benchmarks/reacher_view.py --frames 1000 > benchmarks/results/reacher_view.md
"""

import argparse

import gymnasium as gym
import numpy as np

TOP = {"elevation": -90.0, "azimuth": 90.0, "lookat": np.zeros(3), "trackbodyid": -1}
VIEWS = {  # name -> (size, default_camera_config or None for Reacher-v5's own)
    "default camera, 64x64": (64, None),
    "top-down, distance 0.8, 64x64": (64, {**TOP, "distance": 0.8}),
    "top-down, distance 0.6, 64x64": (64, {**TOP, "distance": 0.6}),
    "top-down, distance 0.6, 84x84": (84, {**TOP, "distance": 0.6}),
}


def measure(size: int, camera: dict | None, frames: int, seed: int = 0) -> dict:
    kwargs = {} if camera is None else {"default_camera_config": camera}
    env = gym.make("Reacher-v5", render_mode="rgb_array", width=size, height=size, **kwargs)
    found, pixels, est, true = 0, [], [], []
    env.reset(seed=seed)
    model = env.unwrapped.model
    model.geom_rgba[model.geom("target").id] = (0.0, 1.0, 0.0, 1.0)
    for t in range(frames):
        if t % 50 == 0:
            env.reset(seed=seed + t)
        env.step(env.action_space.sample())
        img = env.render().astype(int)
        green = (img[..., 1] > 100) & (img[..., 1] > img[..., 0] + 60) & (img[..., 1] > img[..., 2] + 60)
        if green.any():
            found += 1
            pixels.append(green.sum())
            ys, xs = np.nonzero(green)
            est.append((xs.mean(), ys.mean()))
            true.append(env.unwrapped.get_body_com("target")[:2].copy())  # a view of data.xpos otherwise
    env.close()
    row = {"found": found / frames, "pixels": float(np.mean(pixels)) if pixels else 0.0, "r2_x": None, "r2_y": None}
    if len(est) > 10:
        est, true = np.array(est), np.array(true)
        for k, name in enumerate(("x", "y")):  # R² of the best linear map from the centroid to each coordinate
            a = np.c_[est, np.ones(len(est))]
            fit = a @ np.linalg.lstsq(a, true[:, k], rcond=None)[0]
            row[f"r2_{name}"] = 1 - ((true[:, k] - fit) ** 2).sum() / ((true[:, k] - true[:, k].mean()) ** 2).sum()
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=1000)
    args = p.parse_args()
    print(f"Reacher-v5 renders over {args.frames} random-play frames (`benchmarks/reacher_view.py`): share of frames in")
    print("which the target is seen, its mean pixel count when seen, and R² of its x / y from their centroid.\n")
    print("| view | target seen | pixels | R² x | R² y |\n|---|---|---|---|---|")
    for name, (size, camera) in VIEWS.items():
        r = measure(size, camera, args.frames)
        fmt = lambda v: "–" if v is None else f"{v:.3f}"  # noqa: E731
        print(f"| {name} | {r['found']:.1%} | {r['pixels']:.1f} | {fmt(r['r2_x'])} | {fmt(r['r2_y'])} |", flush=True)


if __name__ == "__main__":
    main()
