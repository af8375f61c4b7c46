"""Data containers shared across stages."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Episode:
    """One episode as stored: every frame once, stacks are rebuilt on read.

    Invariant (as Minari's): N steps have N+1 observations. ``frames[t]`` is the newest frame of
    the stack the policy saw before taking ``actions[t]``; ``frames[N]`` is the final one.
    """

    frames: np.ndarray  # [N+1, C, H, W] uint8
    actions: np.ndarray  # [N] int64 (discrete) or [N, A] float32 (continuous)
    rewards: np.ndarray  # [N] float64
    terminations: np.ndarray  # [N] bool
    truncations: np.ndarray  # [N] bool
    states: np.ndarray | None = None  # [N+1, S] float32 ground truth beside each frame
    seed: int | None = None  # the reset seed, when this episode started from one

    def __len__(self) -> int:
        return len(self.rewards)

    def check(self) -> None:
        """Raise ValueError unless the episode satisfies the N+1 / N invariant."""
        n = len(self.rewards)
        counts = {"frames": len(self.frames) - 1, "actions": len(self.actions),
                  "terminations": len(self.terminations), "truncations": len(self.truncations)}
        if self.states is not None:
            counts["states"] = len(self.states) - 1
        bad = {k: v for k, v in counts.items() if v != n}
        if n < 1 or bad:
            raise ValueError(f"episode with {n} rewards has inconsistent lengths {bad} (need N+1 frames/states, N others)")
        if self.frames.dtype != np.uint8 or self.frames.ndim != 4:
            raise ValueError(f"frames must be [N+1, C, H, W] uint8, got {self.frames.dtype} {self.frames.shape}")
        if self.terminations[:-1].any() or self.truncations[:-1].any():
            raise ValueError("only the last step of an episode may terminate or truncate")
