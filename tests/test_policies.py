"""`--policy` as an SB3 model zip: trained on the card's env, then driving the collector."""

import numpy as np
import pytest
from conftest import run_cli
from stable_baselines3 import PPO

from wmrl.data.replay import ReplayDataset
from wmrl.envs import load_card, make_env
from wmrl.envs.wrappers import StackToChannels
from wmrl.errors import UserError
from wmrl.policies import SB3Policy, sb3_algorithm


@pytest.fixture(scope="module")
def ppo_zip(tmp_path_factory):
    env = StackToChannels(make_env(load_card("breakout")))
    model = PPO("CnnPolicy", env, n_steps=32, batch_size=32, n_epochs=1, seed=0, device="cpu")
    model.learn(32)
    path = tmp_path_factory.mktemp("sb3") / "ppo_breakout.zip"
    model.save(path)
    env.close()
    return path


def test_sb3_zip_is_recognised_and_acts(ppo_zip):
    assert sb3_algorithm(ppo_zip) == "ppo"
    policy = SB3Policy(ppo_zip, (4, 1, 84, 84))
    actions = policy(np.zeros((3, 4, 1, 84, 84), np.uint8))
    assert actions.shape == (3,) and set(actions) <= {0, 1, 2, 3}
    with pytest.raises(UserError, match="expects observations"):
        SB3Policy(ppo_zip, (4, 3, 84, 84))


def test_collect_with_sb3_policy(ppo_zip, tmp_path):
    out = tmp_path / "bo-ppo"
    r = run_cli("collect", "--env", "breakout", "--policy", ppo_zip, "--steps", 120, "--num-envs", 2,
                "--sync", "--out", out, "--no-progress")
    assert r.returncode == 0, r.stderr
    data = ReplayDataset(out)
    assert data.episode_steps.sum() == 120
    assert data.meta["wmrl"]["collections"][0]["policy"] == str(ppo_zip)
