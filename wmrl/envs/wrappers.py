"""Small Gymnasium wrappers that Gymnasium itself does not ship."""

from __future__ import annotations

from collections.abc import Sequence

import gymnasium as gym
import numpy as np

from wmrl.errors import EnvError


class RecordState(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Put the card's ground-truth state vector into ``info["state"]`` (float32 [S]).

    Sits directly on the base env, so ``obs`` sources see the env's own observation even when
    pixels replace it further up.
    """

    def __init__(self, env: gym.Env, fields: Sequence, card_name: str):
        gym.utils.RecordConstructorArgs.__init__(self, fields=fields, card_name=card_name)
        super().__init__(env)
        self.fields = list(fields)
        self.card_name = card_name
        self.layout: list[tuple[str, int]] = []  # (name, size) per field, set on first read

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        info["state"] = self._read(obs, info)
        return obs, info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        info["state"] = self._read(obs, info)
        return obs, reward, terminated, truncated, info

    def _read(self, obs, info) -> np.ndarray:
        parts = [np.asarray(self._source(f.source, obs, info), dtype=np.float32).ravel() for f in self.fields]
        for i, (p, f) in enumerate(zip(parts, self.fields)):
            if f.index is not None:
                if max(np.ravel(f.index)) >= p.size:
                    raise EnvError(f"env card '{self.card_name}': state field '{f.name}' indexes {f.index} "
                                   f"of '{f.source}', which has {p.size} numbers")
                parts[i] = p[f.index]
        if not self.layout:
            self.layout = [(f.name, p.size) for f, p in zip(self.fields, parts)]
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)

    def _source(self, source: str, obs, info):
        kind, _, arg = source.partition(":")
        base = self.env.unwrapped
        try:
            if kind == "ale_ram":
                return base.ale.getRAM()
            if kind in ("qpos", "qvel"):
                return getattr(base.data, kind)
            if kind == "body":
                return base.data.body(arg).xpos
            if kind == "info":
                value = info[arg]
                return list(value.values()) if isinstance(value, dict) else value
            if kind == "obs":
                return obs[arg] if arg else obs
        except (AttributeError, KeyError) as e:
            raise EnvError(f"env card '{self.card_name}': state source '{source}' is not available ({e})") from None
        raise AssertionError(f"unvalidated state source {source}")


class NoopReset(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """After reset, take a uniform number in [1, noop_max] of no-op steps (Atari convention)."""

    def __init__(self, env: gym.Env, noop_max: int, noop_action: int = 0):
        gym.utils.RecordConstructorArgs.__init__(self, noop_max=noop_max, noop_action=noop_action)
        super().__init__(env)
        self.noop_max = noop_max
        self.noop_action = noop_action

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        for _ in range(int(self.env.unwrapped.np_random.integers(1, self.noop_max + 1))):
            obs, _, terminated, truncated, info = self.env.step(self.noop_action)
            if terminated or truncated:
                obs, info = self.env.reset()
        return obs, info


class FireOnLifeLoss(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Take the fire action after reset and after each lost life (``info["lives"]`` drops); its
    reward is added to the step that lost the life. One extra agent step per life."""

    def __init__(self, env: gym.Env, fire_action: int = 1):
        gym.utils.RecordConstructorArgs.__init__(self, fire_action=fire_action)
        super().__init__(env)
        self.fire_action = fire_action
        self.lives = 0

    def reset(self, **kwargs):
        self.env.reset(**kwargs)
        obs, _, terminated, truncated, info = self.env.step(self.fire_action)
        if terminated or truncated:
            obs, info = self.env.reset(**kwargs)
        self.lives = info.get("lives", 0)
        return obs, info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        lives = info.get("lives", 0)
        if lives < self.lives and not (terminated or truncated):
            obs, fire_reward, terminated, truncated, info = self.env.step(self.fire_action)
            reward += fire_reward
        self.lives = lives
        return obs, reward, terminated, truncated, info


class SelectKey(gym.ObservationWrapper, gym.utils.RecordConstructorArgs):
    """Dict observation -> one of its entries (the image)."""

    def __init__(self, env: gym.Env, key: str):
        gym.utils.RecordConstructorArgs.__init__(self, key=key)
        super().__init__(env)
        self.key = key
        self.observation_space = env.observation_space[key]

    def observation(self, observation):
        return observation[self.key]


class ChannelFirst(gym.ObservationWrapper, gym.utils.RecordConstructorArgs):
    """[H, W] or [H, W, C] uint8 frames -> [C, H, W]."""

    def __init__(self, env: gym.Env):
        gym.utils.RecordConstructorArgs.__init__(self)
        super().__init__(env)
        shape = env.observation_space.shape
        self._gray = len(shape) == 2
        c, h, w = (1, *shape) if self._gray else (shape[2], shape[0], shape[1])
        self.observation_space = gym.spaces.Box(0, 255, (c, h, w), np.uint8)

    def observation(self, observation):
        if self._gray:
            return observation[None]
        return np.ascontiguousarray(observation.transpose(2, 0, 1))


class StackToChannels(gym.ObservationWrapper, gym.utils.RecordConstructorArgs):
    """[K, C, H, W] stack -> [K*C, H, W], the image layout SB3's CNN policies expect."""

    def __init__(self, env: gym.Env):
        gym.utils.RecordConstructorArgs.__init__(self)
        super().__init__(env)
        k, c, h, w = env.observation_space.shape
        self.observation_space = gym.spaces.Box(0, 255, (k * c, h, w), np.uint8)

    def observation(self, observation):
        return observation.reshape(self.observation_space.shape)
