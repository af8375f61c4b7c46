"""What evaluation measures besides the return: success rates and the Crafter score (wmrl.eval.tasks)."""

import math

import numpy as np
import pytest

from wmrl.envs import load_card, make_env
from wmrl.eval.episodes import run_episodes
from wmrl.eval.tasks import crafter_score, episode_measure, task_summary
from wmrl.policies import RandomPolicy


def random_episodes(card, episodes: int, max_steps: int | None = None) -> list[dict]:
    """The card's measures of seeded random-policy episodes in its real env."""
    env = make_env(card)
    try:
        stats, _ = run_episodes(env, RandomPolicy(env.action_space, 0), episodes, seed=0, max_steps=max_steps,
                                measure=episode_measure(card, env))
    finally:
        env.close()
    return stats.measures


def test_crafter_score_is_the_geometric_mean_of_success_rates():
    names = [f"a{i}" for i in range(22)]
    episodes = [{n: 0 for n in names} for _ in range(4)]
    episodes[0]["a0"] = 3  # unlocked (three times) in one episode of four: 25%
    episodes[1]["a1"] = episodes[2]["a1"] = episodes[3]["a1"] = 1  # 75%
    score, rates = crafter_score(episodes)
    assert rates["a0"] == 25 and rates["a1"] == 75 and rates["a2"] == 0 and len(rates) == 22
    assert score == pytest.approx(math.exp((math.log(26) + math.log(76)) / 22) - 1)
    assert crafter_score([{n: 1 for n in names}])[0] == pytest.approx(100)
    assert crafter_score([{n: 0 for n in names}])[0] == 0


def test_crafter_episodes_report_the_score():
    card = load_card("crafter")
    out = task_summary(card, random_episodes(card, 2, max_steps=300))
    assert len(out["achievement_rates"]) == 22 and set(out["achievement_rates"].values()) <= {0.0, 50.0, 100.0}
    assert 0 <= out["score"] <= 100 and "success_rate" not in out


def test_success_from_distance_or_from_the_envs_own_flag():
    reacher = load_card("reacher")  # fingertip-target distance under 0.05
    out = task_summary(reacher, random_episodes(reacher, 2))
    assert len(out["final_distance"]) == 2 and all(d > 0 for d in out["final_distance"])
    assert out["success_rate"] == np.mean(np.array(out["final_distance"]) < 0.05)

    fetch = load_card("fetch_reach")  # has both: the env's is_success decides
    assert fetch.goal.success_info == "is_success" and fetch.goal.threshold == 0.05
    measures = [{"distance": 0.01, "success": False}, {"distance": 0.2, "success": True}, {"distance": 0.3, "success": True}]
    assert task_summary(fetch, measures)["success_rate"] == pytest.approx(2 / 3)
    pusht = load_card("pusht")  # the flag and the coverage: no distance
    measure = episode_measure(pusht, env=None)
    assert measure({"is_success": True, "coverage": 0.97}) == {"success": True, "progress": 0.97}
    assert measure({}) == {"success": False, "progress": 0.0}
    out = task_summary(pusht, [measure({"is_success": False, "coverage": 0.2}), measure({"is_success": True, "coverage": 0.96})])
    assert out["success_rate"] == 0.5 and out["final_progress"] == [0.2, 0.96] and out["progress_mean"] == pytest.approx(0.58)
    assert episode_measure(load_card("breakout"), env=None) is None and task_summary(pusht, []) == {}
    out = task_summary(pusht, random_episodes(pusht, 2, max_steps=10))  # the real env sets both keys
    assert out["success_rate"] == 0 and len(out["final_progress"]) == 2 and 0 <= out["progress_mean"] < 0.95
