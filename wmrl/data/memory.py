"""In-memory replay for the online learner: every frame once, linked per episode.

The online loop writes each transition both to the Minari dataset (the record of the run) and
here (what updates sample from); a resumed run refills this memory from the dataset. Several envs
interleave their steps, so records are linked rather than laid out contiguously:

    record i: frame [C, H, W] and the step taken from it (action, reward, flags), prev[i], next[i]

``prev`` walks back to rebuild a frame stack (an episode's first frame repeats, as the env's
FrameStackObservation pads at reset); ``next`` walks forward along a sampled sequence.
A step is *terminal for learning* when the episode terminates or a life is lost (the value of a
lost life's future is not counted: Atari-100k agents' convention); a truncation only ends the
sequence.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wmrl.types import Episode


@dataclass
class SequenceBatch:
    """B sequences of L observations (stacks) and the L-1 steps between them."""

    obs: np.ndarray | None  # [B, L, K, C, H, W] uint8 (None when the batch carries stored latents)
    action: np.ndarray  # [B, L-1] int64 (discrete) or [B, L-1, A] float32 (continuous, in [-1, 1])
    reward: np.ndarray  # [B, L-1] float32
    terminal: np.ndarray  # [B, L-1] bool: termination or lost life at this step
    live: np.ndarray  # [B, L-1] bool: the step exists (taken from a valid observation)
    valid: np.ndarray  # [B, L] bool: observation j belongs to the sequence (no episode or life end before it)
    latents: np.ndarray | None = None  # [B, L, D] float32: the frozen encoder's latents of the stacks, instead of obs


class TransitionMemory:
    def __init__(self, capacity: int, frame_shape: tuple[int, int, int], frame_stack: int, seed: int = 0,
                 action_dim: int | None = None):
        """`action_dim`: None for discrete actions (int64), else the continuous actions' size (float32)."""
        self.frames = np.zeros((capacity, *frame_shape), np.uint8)
        self.action = np.zeros(capacity, np.int64) if action_dim is None else np.zeros((capacity, action_dim), np.float32)
        self.reward = np.zeros(capacity, np.float32)
        self.terminal = np.zeros(capacity, bool)  # terminal for learning (termination or lost life)
        self.ends = np.zeros(capacity, bool)  # any end: terminal or truncation
        self.prev = np.zeros(capacity, np.int64)
        self.next = np.full(capacity, -1, np.int64)  # -1: no step taken from this frame (yet)
        self.frame_stack, self.size = frame_stack, 0
        self.rng = np.random.default_rng(seed)
        self.latents, self.encoded = None, 0  # stored embeddings of records [0, encoded) (`encode_new`)

    def __len__(self) -> int:
        return self.size

    @property
    def steps(self) -> int:
        """Transitions held (records with a step taken from them)."""
        return int((self.next[: self.size] >= 0).sum())

    def start(self, frame: np.ndarray) -> int:
        """An episode's first frame; returns its record index (pass it to `add`)."""
        i = self._new(frame)
        self.prev[i] = i
        return i

    def add(self, last: int, action, reward: float, terminal: bool, end: bool, frame: np.ndarray) -> int:
        """The step taken from record `last`, and the frame it led to; returns the new record."""
        self.action[last], self.reward[last], self.terminal[last], self.ends[last] = action, reward, terminal, end
        i = self._new(frame)
        self.prev[i], self.next[last] = last, i
        return i

    def add_episode(self, episode: Episode, lives: np.ndarray | None = None) -> None:
        """A stored episode; `lives` [N+1] (when the card records them) marks each lost life terminal."""
        i = self.start(episode.frames[0])
        for t in range(len(episode)):
            lost = lives is not None and lives[t + 1] < lives[t]
            terminal = bool(episode.terminations[t]) or lost
            i = self.add(i, episode.actions[t], float(episode.rewards[t]), terminal,
                         terminal or bool(episode.truncations[t]), episode.frames[t + 1])

    def _new(self, frame: np.ndarray) -> int:
        if self.size == len(self.frames):
            raise RuntimeError(f"transition memory is full ({self.size} frames): raise its capacity")
        i, self.size = self.size, self.size + 1
        self.frames[i] = frame
        self.next[i] = -1
        return i

    def stacks(self, index: np.ndarray) -> np.ndarray:
        """index [...] -> frame stacks [..., K, C, H, W], oldest frame first."""
        chain = [index]
        for _ in range(self.frame_stack - 1):
            chain.append(self.prev[chain[-1]])
        return self.frames[np.stack(chain[::-1], -1)]

    def encode_new(self, encode, chunk: int = 256) -> None:
        """Store the latent of every record's stack not encoded yet: `encode(stacks [N, K, C, H, W]
        uint8) -> [N, D]` of a frozen encoder (SEER's stored embeddings: updates on them skip the
        convolutions, ~60% of an update's time on Reacher)."""
        for lo in range(self.encoded, self.size, chunk):
            z = np.asarray(encode(self.stacks(np.arange(lo, min(lo + chunk, self.size)))), np.float32)
            if self.latents is None:
                self.latents = np.zeros((len(self.frames), z.shape[1]), np.float32)
            self.latents[lo:lo + len(z)] = z
        self.encoded = self.size

    def sample(self, batch: int, length: int, latents: bool = False) -> SequenceBatch:
        """`batch` sequences of `length` observations, starting at uniformly drawn transitions;
        `latents`: their stored latents instead of their stacks (after `encode_new`)."""
        starts = np.flatnonzero(self.next[: self.size] >= 0)
        if len(starts) == 0:
            raise RuntimeError("transition memory holds no transitions yet")
        index = np.empty((batch, length), np.int64)
        index[:, 0] = self.rng.choice(starts, batch)
        valid = np.ones((batch, length), bool)
        for j in range(1, length):
            last = index[:, j - 1]
            nxt = self.next[last]
            valid[:, j] = valid[:, j - 1] & (nxt >= 0) & ~self.ends[last]
            index[:, j] = np.where(valid[:, j], nxt, last)  # past the end: repeat (masked out by `valid`)
        steps = index[:, :-1]
        live = valid[:, :-1] & (self.next[steps] >= 0)  # a step exists where its observation does and was taken
        taken = live.reshape(*live.shape, *([1] * (self.action.ndim - 1)))
        if latents and self.encoded < self.size:
            raise RuntimeError(f"records {self.encoded}..{self.size - 1} have no stored latent: call encode_new first")
        return SequenceBatch(None if latents else self.stacks(index),
                             np.where(taken, self.action[steps], 0).astype(self.action.dtype),
                             np.where(live, self.reward[steps], 0).astype(np.float32),
                             live & self.terminal[steps], live, valid, self.latents[index] if latents else None)
