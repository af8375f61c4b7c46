"""A replay dataset in memory, and the window sampler that cuts it into training clips.

Rows: every stored observation is one row, episodes laid end to end. Row r of an episode holds
frame r, the action taken there, and that action's reward / termination / truncation; the last
row of an episode has the final frame and zero padding (Minari's own row layout). A clip is T
consecutive rows of one episode; each row's observation is the K-frame stack ending at it,
padded at the episode start with the first frame (as gymnasium's FrameStackObservation pads).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wmrl.data.store import pad_last, read_episode, read_metadata
from wmrl.errors import DatasetError
from wmrl.types import Episode


def state_spans(layout: list[tuple[str, int]]) -> dict[str, slice]:
    """(name, size) pairs of a state vector, in order -> each field's columns."""
    spans, start = {}, 0
    for name, size in layout:
        spans[name] = slice(start, start + size)
        start += size
    return spans


@dataclass
class Batch:
    obs: np.ndarray  # [B, T, K, C, H, W] uint8
    action: np.ndarray  # [B, T] int64 or [B, T, A] float32 (last row of an episode: padding)
    reward: np.ndarray  # [B, T] float32
    terminated: np.ndarray  # [B, T] bool
    truncated: np.ndarray  # [B, T] bool
    is_last: np.ndarray  # [B, T] bool: the episode's final observation (no action follows)
    state: np.ndarray | None  # [B, T, S] float32


class ReplayDataset:
    """All episodes of a dataset, decompressed into flat row arrays."""

    def __init__(self, root: str | Path):
        meta = read_metadata(root)
        n = meta["total_episodes"]
        if n == 0:
            raise DatasetError(f"dataset {root} has no episodes")
        frame_shape = tuple(meta["wmrl"]["frame_shape"])
        self._build(root, meta, [read_episode(root, i, frame_shape) for i in range(n)])

    @classmethod
    def from_episodes(cls, root: str | Path, meta: dict, episodes: list[Episode]) -> ReplayDataset:
        """A dataset held only in memory (an offline source decoded at load time). `meta` is shaped as a
        stored dataset's metadata: at least "action_space" and a "wmrl" section with frame_shape and
        frame_stack; `root` names the source in messages."""
        if not episodes:
            raise DatasetError(f"{root} has no episodes")
        data = cls.__new__(cls)
        data._build(root, meta, episodes)
        return data

    def _build(self, root: str | Path, meta: dict, episodes: list[Episode]) -> None:
        self.root = Path(root)
        self.meta = meta
        info = self.meta["wmrl"]
        self.frame_shape = tuple(info["frame_shape"])  # (C, H, W)
        self.frame_stack = int(info["frame_stack"])  # K
        self.state_layout = [tuple(x) for x in info.get("state_layout", [])]
        self.state_spans = state_spans(self.state_layout)  # field name -> its columns of the state vector
        n = len(episodes)
        self.episode_steps = np.array([len(e) for e in episodes])  # [E] steps N per episode
        rows = self.episode_steps + 1
        self.episode_start = np.concatenate([[0], np.cumsum(rows)[:-1]])  # [E] first row
        self.row_episode = np.repeat(np.arange(n), rows)  # [R]
        self.frames = np.concatenate([e.frames for e in episodes])  # [R, C, H, W]
        self.actions = np.concatenate([pad_last(e.actions) for e in episodes])  # [R] or [R, A]
        self.rewards = np.concatenate([pad_last(e.rewards) for e in episodes]).astype(np.float32)
        self.terminated = np.concatenate([pad_last(e.terminations) for e in episodes])
        self.truncated = np.concatenate([pad_last(e.truncations) for e in episodes])
        self.is_last = np.zeros(len(self.frames), bool)
        self.is_last[self.episode_start + self.episode_steps] = True
        has_state = episodes[0].states is not None
        self.states = np.concatenate([e.states for e in episodes]) if has_state else None  # [R, S]
        self.seeds = [e.seed for e in episodes]

    @property
    def stack_shape(self) -> tuple[int, ...]:
        """(K, C, H, W) of every frame stack."""
        return (self.frame_stack, *self.frame_shape)

    def require_stack_shape(self, wanted, model: str) -> None:
        """One line naming the mismatch unless the stacks are `wanted` (K, C, H, W), as `model` needs."""
        if self.stack_shape != tuple(wanted):
            raise DatasetError(f"{self.root} holds stacks {self.stack_shape}, {model} wants {tuple(wanted)}")

    @property
    def num_episodes(self) -> int:
        return len(self.episode_steps)

    def episode_returns(self) -> np.ndarray:
        return np.add.reduceat(self.rewards, self.episode_start).astype(np.float64)

    def stacks(self, rows: np.ndarray) -> np.ndarray:
        """Frame stacks for rows of any shape [...] -> [..., K, C, H, W]."""
        offsets = np.arange(1 - self.frame_stack, 1)  # [K]: oldest ... newest
        first = self.episode_start[self.row_episode[rows]]
        return self.frames[np.maximum(rows[..., None] + offsets, first[..., None])]

    def split(self, val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
        """Episode ids (train, val). Chosen by id, so appending episodes never moves old ones."""
        ids = np.arange(self.num_episodes)
        if val_fraction <= 0:
            return ids, ids[:0]
        period = max(2, round(1 / val_fraction))
        is_val = ids % period == period - 1
        return ids[~is_val], ids[is_val]


def as_dataset(data: str | Path | ReplayDataset) -> ReplayDataset:
    """A dataset given as a folder, or already opened (an offline source decoded in memory)."""
    return data if isinstance(data, ReplayDataset) else ReplayDataset(data)


class WindowSampler:
    """Uniform random clips of `clip_len` rows, never crossing an episode boundary.

    Example:
        >>> data = ReplayDataset("data/breakout-random")
        >>> train, val = data.split(0.1)
        >>> batch = WindowSampler(data, clip_len=16, batch_size=32, episodes=train).sample()
        >>> batch.obs.shape  # [B, T, K, C, H, W]
        (32, 16, 4, 1, 64, 64)
    """

    def __init__(self, data: ReplayDataset, clip_len: int, batch_size: int,
                 episodes: np.ndarray | None = None, seed: int | None = 0):
        self.data, self.clip_len, self.batch_size = data, clip_len, batch_size
        episodes = np.arange(data.num_episodes) if episodes is None else np.asarray(episodes)
        rows = data.episode_steps[episodes] + 1
        long_enough = rows >= clip_len
        if not long_enough.any():
            raise DatasetError(f"no episode of {data.root} has {clip_len} observations (longest: {rows.max(initial=0)})")
        # Every valid clip start, so that each window is equally likely.
        starts = [data.episode_start[e] + np.arange(r - clip_len + 1) for e, r in zip(episodes[long_enough], rows[long_enough])]
        self.starts = np.concatenate(starts)
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        """Number of distinct clips."""
        return len(self.starts)

    def sample_rows(self) -> np.ndarray:
        """Row indices [B, T] of a batch of clips (for data kept elsewhere, e.g. cached latents)."""
        start = self.rng.choice(self.starts, self.batch_size)  # [B]
        return start[:, None] + np.arange(self.clip_len)  # [B, T]

    def sample(self) -> Batch:
        rows = self.sample_rows()
        d = self.data
        return Batch(obs=d.stacks(rows), action=d.actions[rows], reward=d.rewards[rows],
                     terminated=d.terminated[rows], truncated=d.truncated[rows], is_last=d.is_last[rows],
                     state=None if d.states is None else d.states[rows])

    def __iter__(self):
        while True:
            yield self.sample()

