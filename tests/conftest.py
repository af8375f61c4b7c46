import os
import subprocess
import sys

import numpy as np
import pytest

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("WANDB_MODE", "disabled")


def run_cli(*args, timeout=300, **kwargs) -> subprocess.CompletedProcess:
    """`python -m wmrl ARGS` in a subprocess, as a user would run it."""
    return subprocess.run([sys.executable, "-m", "wmrl", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, **kwargs)


def collect_random(card_name: str, out, steps: int):
    """A replay dataset of `steps` seeded random-policy steps from one env of a shipped card, at `out`."""
    from wmrl.data.collect import collect, open_writer
    from wmrl.envs import load_card, make_vector_env
    from wmrl.policies import RandomPolicy

    card = load_card(card_name)
    venv = make_vector_env(card, 1, asynchronous=False)
    try:
        collect(venv, RandomPolicy(venv.action_space, 0), open_writer(out, card, venv, False), steps, seed=0, progress=False)
    finally:
        venv.close()
    return out


class RecordingPolicy:
    """A seeded random policy that remembers every observation batch it was shown."""

    def __init__(self, action_space, seed=0):
        self.action_space = action_space
        self.action_space.seed(seed)
        self.seen = []

    def __call__(self, obs):
        self.seen.append(obs.copy())
        return self.action_space.sample()


@pytest.fixture
def rng():
    return np.random.default_rng(0)
