"""Gather frame-stacked rollouts from a vector env into a replay dataset.

The policy is any callable ``obs [N, K, C, H, W] uint8 -> actions [N, ...]``, so this module
knows nothing of SB3 models or wmrl agents; the CLI turns ``--policy`` into one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import gymnasium as gym
import numpy as np
from tqdm import tqdm

from wmrl.config import to_dict
from wmrl.data.store import DatasetWriter, is_dataset
from wmrl.envs.card import EnvCard
from wmrl.errors import DatasetError
from wmrl.types import Episode

Policy = Callable[[np.ndarray], np.ndarray]


@dataclass
class CollectStats:
    steps: int = 0
    episodes: int = 0
    returns: list[float] = field(default_factory=list)  # of episodes that ended on their own
    seconds: float = 0.0

    @property
    def steps_per_second(self) -> float:
        return self.steps / max(self.seconds, 1e-9)


class EpisodeBuffer:
    """The growing episode of one env: the newest frame of each stack, not the stack."""

    def __init__(self, frame: np.ndarray, state: np.ndarray | None, seed: int | None):
        self.frames, self.states, self.seed = [frame], [state], seed
        self.actions, self.rewards, self.terminations, self.truncations = [], [], [], []

    def add(self, action, reward, terminated, truncated, frame, state) -> None:
        self.actions.append(action)
        self.rewards.append(reward)
        self.terminations.append(terminated)
        self.truncations.append(truncated)
        self.frames.append(frame)
        self.states.append(state)

    def to_episode(self) -> Episode:
        states = None if self.states[0] is None else np.stack(self.states)
        return Episode(np.stack(self.frames), np.asarray(self.actions), np.asarray(self.rewards, np.float64),
                       np.asarray(self.terminations, bool), np.asarray(self.truncations, bool), states, self.seed)


def collect(venv: gym.vector.VectorEnv, policy: Policy, writer: DatasetWriter, steps: int,
            seed: int | None = None, progress: bool = True, policy_name: str = "custom") -> CollectStats:
    """Step `venv` with `policy` for `steps` agent steps (summed over envs), writing each episode
    as it ends. `venv` must reset finished envs in the same step (``AutoresetMode.SAME_STEP``).

    The dataset's metadata records the collection (policy name, seed, env count, budget).
    Episodes still running when the budget is spent (or on Ctrl-C) are stored truncated, so no
    collected step is dropped. Env i of the first reset gets seed ``seed + i``.
    """
    stats = CollectStats()
    n = venv.num_envs
    obs, info = venv.reset(seed=seed)
    state = info.get("state")  # [N, S] or None
    writer.set_state_layout(venv.get_attr("layout")[0] if state is not None else [])
    writer.add_collection({"policy": policy_name, "seed": seed, "num_envs": n, "steps": steps})
    # Frames are copied out of the stack: a view would keep the whole [N, K, C, H, W] batch alive.
    buffers = [EpisodeBuffer(obs[i, -1].copy(), _row(state, i), None if seed is None else seed + i) for i in range(n)]
    bar = tqdm(total=steps, unit="step", disable=not progress, smoothing=0.05, mininterval=0.5)
    start = time.perf_counter()
    try:
        while stats.steps < steps:
            actions = policy(obs)
            obs, rewards, terminated, truncated, info = venv.step(actions)
            state = info.get("state")
            done = terminated | truncated
            for i in range(n):
                buf = buffers[i]
                if done[i]:  # obs[i] already starts the next episode; the last one is in final_*
                    final_state = info["final_info"].get("state")
                    buf.add(actions[i], rewards[i], terminated[i], truncated[i], info["final_obs"][i][-1].copy(), _row(final_state, i))
                    writer.write(buf.to_episode())
                    stats.episodes += 1
                    stats.returns.append(float(np.sum(buf.rewards)))
                    buffers[i] = EpisodeBuffer(obs[i, -1].copy(), _row(state, i), None)
                else:
                    buf.add(actions[i], rewards[i], False, False, obs[i, -1].copy(), _row(state, i))
            stats.steps += n
            bar.update(n)
            if done.any():
                recent = stats.returns[-20:]
                bar.set_postfix(episodes=stats.episodes, ret=f"{np.mean(recent):.2f}", refresh=False)
    finally:
        for buf in buffers:  # budget spent or interrupted: keep the unfinished episodes
            if buf.actions:
                buf.truncations[-1] = True
                writer.write(buf.to_episode())
                stats.episodes += 1
        stats.seconds = time.perf_counter() - start
        bar.close()
    return stats


def open_writer(out: str | Path, card: EnvCard, venv: gym.vector.VectorEnv, append: bool) -> DatasetWriter:
    """A writer for a new dataset at `out`, or (with `append`) for the one already there."""
    if append and is_dataset(out):
        writer = DatasetWriter.open(out)
        recorded = writer.meta["wmrl"]["card"]["name"]
        if recorded != card.name:
            raise DatasetError(f"{out} was collected from env card '{recorded}', not '{card.name}'")
        return writer
    frame_space = gym.spaces.Box(0, 255, venv.single_observation_space.shape[1:], np.uint8)
    info = {"card": to_dict(card), "frame_stack": card.frame_stack}
    return DatasetWriter.create(out, frame_space, venv.single_action_space, info)


def _row(batch: np.ndarray | None, i: int) -> np.ndarray | None:
    return None if batch is None else batch[i]
