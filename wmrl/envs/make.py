"""Env card -> wrapped Gymnasium env whose observation is the frame stack [K, C, H, W] uint8.

Wrapper order, bottom to top (each applied only when the card asks for it):
  gymnasium.make -> RescaleAction (card bounds) -> RecordState -> StickyAction -> render-as-obs / dict key -> NoopReset
  -> MaxAndSkip (frame skip, max over the last two raw frames) -> FireOnLifeLoss -> grayscale -> resize
  -> channel-first -> TimeLimit (agent steps) -> FrameStack (padded with the reset frame)
"""

from __future__ import annotations

import importlib
import os

import gymnasium as gym
import numpy as np
from gymnasium import wrappers as gw

from wmrl.envs.card import EnvCard
from wmrl.envs.wrappers import ChannelFirst, FireOnLifeLoss, NoopReset, RecordState, SelectKey
from wmrl.errors import EnvError


def import_env_packages(card: EnvCard) -> None:
    """Import the modules that register the card's env, with an install hint when missing."""
    os.environ.setdefault("MUJOCO_GL", "egl")  # headless MuJoCo rendering (no display here)
    for module in card.imports:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as e:
            hint = f": pip install 'wmrl[{card.extra}]'" if card.extra else ""
            raise EnvError(f"env card '{card.name}' needs the Python package '{e.name}'{hint}") from None
        if module == "ale_py":  # keep the ALE's start-up banner off stderr
            import ale_py

            ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)


def make_env(card: EnvCard, render_mode: str | None = None) -> gym.Env:
    """Build the wrapped env described by `card`. Seed it through ``reset(seed=...)``."""
    import_env_packages(card)
    kwargs = dict(card.make_kwargs)
    if card.pixels == "render":
        kwargs["render_mode"] = "rgb_array"
    elif render_mode is not None:
        kwargs["render_mode"] = render_mode
    try:
        env = gym.make(card.gym_id, **kwargs)
    except gym.error.Error as e:
        raise EnvError(f"env card '{card.name}': cannot make '{card.gym_id}': {e}") from None
    _check_action_space(card, env.action_space)
    if card.action.low is not None:
        env = gw.RescaleAction(env, np.array(card.action.low, np.float32), np.array(card.action.high, np.float32))
    if not card.mujoco_shadows:
        env.unwrapped.model.light_castshadow[:] = 0

    pre = card.preprocess
    if card.state:
        env = RecordState(env, card.state, card.name)
    if pre.sticky_actions > 0:
        env = gw.StickyAction(env, repeat_action_probability=pre.sticky_actions)
    if card.pixels == "render":
        env = gw.AddRenderObservation(env, render_only=True)
    elif card.pixel_key is not None:
        env = SelectKey(env, card.pixel_key)
    _check_image_space(card, env.observation_space)
    if pre.noop_max > 0:
        env = NoopReset(env, pre.noop_max, pre.noop_action)
    if pre.frame_skip > 1:
        env = gw.MaxAndSkipObservation(env, skip=pre.frame_skip)
    if pre.fire_on_life_loss:
        _check_fire_action(card, env)
        env = FireOnLifeLoss(env, pre.fire_action)
    if pre.grayscale and len(env.observation_space.shape) == 3:
        env = gw.GrayscaleObservation(env, keep_dim=False)
    if pre.size is not None and tuple(env.observation_space.shape[:2]) != tuple(pre.size):
        env = gw.ResizeObservation(env, tuple(pre.size))
    env = ChannelFirst(env)
    if card.max_episode_steps is not None:
        env = gw.TimeLimit(env, card.max_episode_steps)
    return gw.FrameStackObservation(env, card.frame_stack)


def make_vector_env(card: EnvCard, num_envs: int, asynchronous: bool | None = None) -> gym.vector.VectorEnv:
    """`num_envs` copies of `make_env(card)`; the episode that ends in a step is reset in that
    same step, its last observation and info in ``info["final_obs"]`` / ``info["final_info"]``.

    Subprocesses (async, spawned) by default when there is more than one env.
    """
    import_env_packages(card)  # fail here, with the hint, not inside a worker process
    asynchronous = num_envs > 1 if asynchronous is None else asynchronous
    fns = [lambda: make_env(card) for _ in range(num_envs)]
    mode = gym.vector.AutoresetMode.SAME_STEP
    if asynchronous:
        # spawn, not fork: a forked MuJoCo/EGL worker hangs, and fork after threads is unsafe
        return gym.vector.AsyncVectorEnv(fns, autoreset_mode=mode, context="spawn")
    return gym.vector.SyncVectorEnv(fns, autoreset_mode=mode)


def _check_action_space(card: EnvCard, space: gym.Space) -> None:
    discrete = isinstance(space, gym.spaces.Discrete)
    if card.action.type == "discrete" and not discrete:
        raise EnvError(f"env card '{card.name}' says discrete actions, but '{card.gym_id}' has {space}")
    if card.action.type == "continuous":
        if not isinstance(space, gym.spaces.Box):
            raise EnvError(f"env card '{card.name}' says continuous actions, but '{card.gym_id}' has {space}")
        if card.action.low is not None and not len(card.action.low) == len(card.action.high) == space.shape[0]:
            raise EnvError(f"env card '{card.name}': action bounds {card.action.low}, {card.action.high} do not match {space}")


def _check_fire_action(card: EnvCard, env: gym.Env) -> None:
    meanings = getattr(env.unwrapped, "get_action_meanings", lambda: None)()
    action = card.preprocess.fire_action
    if meanings is not None and (action >= len(meanings) or meanings[action] != "FIRE"):
        raise EnvError(f"env card '{card.name}': preprocess.fire_action {action} is not FIRE in {meanings}")


def _check_image_space(card: EnvCard, space: gym.Space) -> None:
    ok = isinstance(space, gym.spaces.Box) and space.dtype == np.uint8 and len(space.shape) in (2, 3)
    if not ok:
        raise EnvError(
            f"env card '{card.name}': frames must be uint8 images [H, W] or [H, W, C], got {space}; "
            "set 'pixels: render' or 'pixel_key' in the card"
        )
