"""What an env card says to measure besides the return, from each evaluation episode's last info.

* Success rate. A card whose `goal.success_info` names an info key the env sets on success
  (PushT: coverage >= 0.95, Fetch: within 0.05 of the goal) counts episodes whose last step
  set it; a card with achieved/desired state fields and a threshold (Reacher) counts episodes
  ending closer than the threshold, and also reports those final distances.
* Progress. A card's `goal.progress_info` names an info key whose value at the episode's end is
  reported per episode and averaged (PushT: the block's coverage of the goal region).
* Crafter score (cards with `reference_metric: score_pct`). Per achievement, the success rate s_i
  is the % of episodes that unlocked it at least once; the score is exp(mean_i ln(1 + s_i)) - 1,
  over all of the game's achievements, as Crafter's authors define it (Hafner 2021). They compute
  it over every training episode of a 1M-step run; the benchmark computes it over its
  evaluation episodes, the same ones for every agent.

    >>> measure = episode_measure(card, env)          # info -> dict, at each episode's end
    >>> stats, _ = run_episodes(env, agent, 10, measure=measure)
    >>> stats.summary(card)                           # ... + {"success_rate": ...} / {"score": ...}
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from wmrl.envs.card import EnvCard


def episode_measure(card: EnvCard, env) -> Callable[[dict], dict] | None:
    """info at an episode's end -> what `task_summary` needs; None when the card asks for nothing."""
    from wmrl.control.goals import has_goal_fields, info_distance

    goal = card.goal
    distance = info_distance(env, goal) if has_goal_fields(goal) and goal.threshold is not None else None
    success_key = goal.success_info if goal is not None else None
    progress_key = goal.progress_info if goal is not None else None
    achievements = card.reference_metric == "score_pct"
    if distance is None and success_key is None and progress_key is None and not achievements:
        return None

    def measure(info: dict) -> dict:
        out = {}
        if distance is not None:
            out["distance"] = float(distance(info))
        if success_key is not None:
            out["success"] = bool(info.get(success_key, False))
        if progress_key is not None:
            out["progress"] = float(info.get(progress_key, 0.0))  # PushT: no coverage before the first step
        if achievements:
            out["achievements"] = {name: int(n) for name, n in info["achievements"].items()}
        return out

    return measure


def crafter_score(achievements: list[dict[str, int]]) -> tuple[float, dict[str, float]]:
    """Per-episode achievement counts (every achievement named, 0 when not unlocked) ->
    (score in %, success rate in % per achievement)."""
    names = sorted(achievements[0])
    rates = {name: 100.0 * float(np.mean([ep[name] > 0 for ep in achievements])) for name in names}
    score = float(np.exp(np.mean(np.log1p(list(rates.values())))) - 1)
    return score, rates


def task_summary(card: EnvCard, measures: list[dict]) -> dict:
    """The measures of every evaluation episode -> success rate / final distances / Crafter score."""
    out: dict = {}
    if not measures:
        return out
    if "distance" in measures[0]:
        out["final_distance"] = [m["distance"] for m in measures]
    if "success" in measures[0]:  # the env's own verdict wins over a distance threshold
        out["success_rate"] = float(np.mean([m["success"] for m in measures]))
    elif "distance" in measures[0]:
        out["success_rate"] = float(np.mean([m["distance"] < card.goal.threshold for m in measures]))
    if "progress" in measures[0]:
        out["final_progress"] = [m["progress"] for m in measures]
        out["progress_mean"] = float(np.mean(out["final_progress"]))
    if "achievements" in measures[0]:
        out["score"], out["achievement_rates"] = crafter_score([m["achievements"] for m in measures])
    return out
