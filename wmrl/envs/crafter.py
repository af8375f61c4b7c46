"""Crafter (a Minecraft-style 2-D survival game) behind the Gymnasium API.

Crafter speaks the old gym API and seeds each world from (seed, episode counter); resetting the
counter on ``reset(seed=...)`` makes a seeded reset reproducible. It also keeps each chunk's
objects in a set, ordered by memory address, and spawns/despawns creatures by index into it, so
two runs with one seed drift apart after a few dozen steps; insertion-ordered chunks fix that.
Importing this module registers ``wmrl/Crafter-v1``.
"""

from __future__ import annotations

import collections

import crafter
import gymnasium as gym
import numpy as np


class CrafterEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, size: int = 64, length: int = 10_000, render_mode: str | None = None):
        self._env = crafter.Env(size=(size, size), length=length)
        self.observation_space = gym.spaces.Box(0, 255, (size, size, 3), np.uint8)
        self.action_space = gym.spaces.Discrete(self._env.action_space.n)
        self.render_mode = render_mode
        self._last = None

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self._env._seed, self._env._episode = seed, 0
        elif self._env._seed is None:  # unseeded: draw a world seed from Gymnasium's RNG
            self._env._seed = int(self.np_random.integers(2**31 - 1))
        self._last = self._env.reset()
        world = self._env._world
        world._chunks = collections.defaultdict(_OrderedSet, {  # same objects, deterministic order
            key: _OrderedSet.fromkeys(sorted(objs, key=lambda obj: tuple(obj.pos)))
            for key, objs in world._chunks.items()})
        player = self._env._player
        info = {"player_pos": np.array(player.pos), "inventory": dict(player.inventory),
                "achievements": dict(player.achievements)}
        return self._last, info

    def step(self, action):
        self._last, reward, done, info = self._env.step(int(action))
        info["player_pos"] = np.array(info["player_pos"])  # crafter hands out its live array
        terminated = done and info["discount"] == 0.0  # the player died
        return self._last, float(reward), terminated, done and not terminated, info

    def render(self):
        return self._last


class _OrderedSet(dict):
    """The set operations Crafter's world uses on a chunk, iterating in insertion order."""

    def add(self, item) -> None:
        self[item] = None

    def remove(self, item) -> None:
        del self[item]


gym.register("wmrl/Crafter-v1", entry_point=CrafterEnv)
