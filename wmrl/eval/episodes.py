"""Closed-loop evaluation of an agent in a real env: returns, lengths, time per action, a video.

The agent is anything with SB3's ``predict(obs, deterministic=True) -> (action, state)``; an
optional ``reset()`` is called at every episode start (the MPC agent drops its warm start).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import gymnasium as gym
import numpy as np

from wmrl.envs.card import EnvCard
from wmrl.eval.tasks import task_summary


@dataclass
class EpisodeStats:
    returns: list[float] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    truncated_by_cap: list[bool] = field(default_factory=list)  # stopped by max_steps, not the env
    action_seconds: list[float] = field(default_factory=list)  # one per action
    measures: list[dict] = field(default_factory=list)  # per episode, `measure(info)` at its end (wmrl.eval.tasks)

    def summary(self, card: EnvCard | None = None) -> dict:
        """Returns, lengths, ms per action; with the env card, what it measures besides the return
        (success rate, final distances, Crafter score: wmrl.eval.tasks)."""
        r, ms = np.array(self.returns), 1000 * np.array(self.action_seconds)
        out = {"episodes": len(r), "return_mean": float(r.mean()), "return_std": float(r.std()),
               "returns": self.returns, "lengths": self.lengths, "capped": int(sum(self.truncated_by_cap)),
               "ms_per_action_mean": float(ms.mean()), "ms_per_action_median": float(np.median(ms))}
        return out if card is None else {**out, **task_summary(card, self.measures)}


def run_episodes(env: gym.Env, agent, episodes: int, seed: int = 0, max_steps: int | None = None,
                 record: int = 0, measure=None, on_reset=None) -> tuple[EpisodeStats, list[np.ndarray]]:
    """Run `episodes` seeded episodes (seed, seed+1, ...). Returns the stats and the newest frame of
    each observation of the first `record` episodes ([C, H, W] uint8 each). `measure(info)` is
    recorded from each episode's last info (goal distance, success, achievements: wmrl.eval.tasks);
    `on_reset(info)` runs after each reset (e.g. to give the agent the episode's goal)."""
    stats, frames = EpisodeStats(), []
    for episode in range(episodes):
        obs, info = env.reset(seed=seed + episode)
        if hasattr(agent, "reset"):
            agent.reset()
        if on_reset is not None:
            on_reset(info)
        total, steps, done, capped = 0.0, 0, False, False
        while not done:
            if episode < record:
                frames.append(np.asarray(obs)[-1])
            start = time.perf_counter()
            action, _ = agent.predict(obs, deterministic=True)
            stats.action_seconds.append(time.perf_counter() - start)
            obs, reward, terminated, truncated, info = env.step(action)
            total, steps = total + float(reward), steps + 1
            capped = max_steps is not None and steps >= max_steps and not (terminated or truncated)
            done = terminated or truncated or capped
        if episode < record:
            frames.append(np.asarray(obs)[-1])
        stats.returns.append(total)
        stats.lengths.append(steps)
        stats.truncated_by_cap.append(capped)
        if measure is not None:
            stats.measures.append(measure(info))
    return stats, frames


def write_video(frames: list[np.ndarray], path: str | Path, fps: int = 15, scale: int = 4) -> None:
    """Frames [C, H, W] uint8 (C = 1 gray or 3 RGB) -> an H.264 mp4 (yuv420p: what browsers, Jupyter
    and VS Code play), upscaled by `scale` with nearest pixels and padded to even sides (4:2:0 needs them)."""
    import av  # PyAV (FFmpeg): loaded only when a video is written

    from wmrl.errors import UserError

    c, h, w = frames[0].shape
    height, width = h * scale, w * scale
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with av.open(str(path), "w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=fps)
            stream.width, stream.height, stream.pix_fmt = width + width % 2, height + height % 2, "yuv420p"
            for frame in frames:
                image = np.repeat(np.repeat(frame.transpose(1, 2, 0), scale, 0), scale, 1)  # [H*s, W*s, C]
                image = np.pad(image if c == 3 else np.repeat(image, 3, 2), ((0, height % 2), (0, width % 2), (0, 0)))
                container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")))
            container.mux(stream.encode())  # flush the encoder
    except (av.FFmpegError, OSError) as e:
        raise UserError(f"cannot write a video to {path}: {e}") from None
