"""Diagnostics of an online (search) agent, from fresh episodes it plays: what `wmrl eval --agent` prints.

So that the next regression shows in one command, on the latent the agent acts on:
* probes: held-out R² of a ridge regression from z to each scalar ground-truth field the card
  records (Breakout: ball x / y, paddle x, and ball x - paddle x), on rows with the ball in play
  where the card has a ball. Given the run's replay, on its last `probe_episodes` episodes, or more
  to reach 12,000 rows (every fourth held out): thousands of rows from many states. Else on the
  played episodes (fitted on the first, scored on the last), which is too few rows for a
  784-number latent when a deterministic agent repeats itself (measured on one Breakout agent: ball x R² -0.12 from 3 games, 0.905 from
  11k replay rows);
* value ranking: Spearman correlation of max_a Q(z_t, a) with the realised discounted return of
  clipped rewards up to the next lost life or episode end (what Q is trained to predict);
* action effect vs model error: mean L1 between the next latents predicted under different
  actions, beside the L1 between the predicted and the encoded next latent of the taken action;
* the action histogram of the acting policy.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import spearmanr

from wmrl.control.search import SearchAgent
from wmrl.data.replay import ReplayDataset
from wmrl.eval.probes import linear_probe_r2


@torch.no_grad()
def play(env, agent: SearchAgent, episodes: int, seed: int, max_steps: int) -> list[dict]:
    """Episodes of the deterministic agent: obs stacks, actions, rewards, lives and state per step."""
    played = []
    for e in range(episodes):
        obs, info = env.reset(seed=seed + e)
        rows = {"obs": [np.asarray(obs)], "action": [], "reward": [], "lives": [info.get("lives", 0)],
                "state": [info.get("state")]}
        for _ in range(max_steps):
            action, _ = agent.predict(np.asarray(obs))
            obs, reward, terminated, truncated, info = env.step(action)
            rows["obs"].append(np.asarray(obs))
            rows["action"].append(np.asarray(action).copy() if agent.model.continuous else int(action))
            rows["reward"].append(float(reward))
            rows["lives"].append(info.get("lives", 0))
            rows["state"].append(info.get("state"))
            if terminated or truncated:
                break
        played.append({k: np.asarray(v) if k != "state" or v[0] is not None else None for k, v in rows.items()})
    return played


def returns_to_life_end(reward: np.ndarray, lives: np.ndarray, gamma: float, clip: float) -> np.ndarray:
    """Discounted return G_t [T] of clipped rewards, cut where a life is lost or the episode ends."""
    r = np.clip(reward, -clip, clip) if clip > 0 else reward
    lost = lives[1:] < lives[:-1]  # [T]
    g, out = 0.0, np.zeros(len(r))
    for t in range(len(r) - 1, -1, -1):
        g = r[t] + (0.0 if lost[t] else gamma * g)
        out[t] = g
    return out


def probe_targets(layout: list[tuple[str, int]], state: np.ndarray) -> dict[str, np.ndarray]:
    """Scalar fields of a state [T, S] (not lives) and each component of fields of 2-4 numbers
    (Reacher's fingertip and target: "target[0]"...), plus ball x - paddle x where both exist."""
    targets, start = {}, 0
    for name, size in layout:
        if size == 1 and name != "lives":
            targets[name] = state[:, start]
        elif 2 <= size <= 4:
            targets.update({f"{name}[{k}]": state[:, start + k] for k in range(size)})
        start += size
    if "ball_x" in targets and "paddle_x" in targets:
        targets["ball_x - paddle_x"] = targets["ball_x"] - targets["paddle_x"]
    return targets


@torch.no_grad()
def diagnose(agent: SearchAgent, env, episodes: int = 3, seed: int = 0, max_steps: int = 5000, gamma: float = 0.99,
             reward_clip: float = 1.0, replay: ReplayDataset | None = None, probe_episodes: int = 40) -> dict:
    """`env` is a card's env (`make_env`); its recorded state fields, if any, are probed (on `replay`
    when given, else on the played episodes)."""
    model = agent.model
    played = play(env, agent, episodes, seed, max_steps)
    try:
        layout = env.get_wrapper_attr("layout")  # (name, size) per state field, known once an episode ran
    except AttributeError:
        layout = []
    z_all, q_all, g_all, split, effect, error = [], [], [], [], [], []
    states = []
    for e, ep in enumerate(played):
        z = torch.cat([model.encode(torch.as_tensor(ep["obs"][i:i + 256])) for i in range(0, len(ep["obs"]), 256)])
        if model.continuous:  # the value of the policy prior's action; the effect of 4 fixed actions
            maxq = model.q(z[:-1], model.pi(z[:-1], deterministic=True)[0]).mean(0)  # [T]
            a = torch.as_tensor(agent.to_unit(np.stack(ep["action"]))) if len(ep["action"]) else torch.zeros(0, model.num_actions)
            probes = [torch.full_like(a, v) for v in (-1.0, -0.33, 0.33, 1.0)]
        else:
            maxq = model.q(z[:-1]).mean(0).max(-1).values  # [T]
            a = torch.as_tensor(ep["action"])
            probes = [torch.full_like(a, b) for b in range(model.num_actions)]
        nexts = torch.stack([model.step(z[:-1], b)[0] for b in probes])  # [P, T, D]
        pairs = [(i, j) for i in range(len(probes)) for j in range(i + 1, len(probes))]
        effect.append(torch.stack([(nexts[i] - nexts[j]).abs().mean(-1) for i, j in pairs]).mean(0))
        taken = model.step(z[:-1], a)[0]
        same_life = torch.as_tensor(ep["lives"][1:] == ep["lives"][:-1])
        error.append((taken - z[1:]).abs().mean(-1)[same_life])
        z_all.append(z[:-1].numpy())
        q_all.append(maxq.numpy())
        g_all.append(returns_to_life_end(ep["reward"], ep["lives"], gamma, reward_clip))
        split.append(np.full(len(a), e == len(played) - 1))
        if ep["state"] is not None:
            states.append(ep["state"][:-1])
    z, maxq, g, test = map(np.concatenate, (z_all, q_all, g_all, split))
    if model.continuous:  # the share of action components in 5 equal bins of [-1, 1]
        units = np.concatenate([agent.to_unit(np.stack(ep["action"])) for ep in played if len(ep["action"])]).ravel()
        histogram = np.histogram(units, bins=5, range=(-1, 1))[0] / max(len(units), 1)
    else:
        actions = np.concatenate([ep["action"] for ep in played])
        histogram = np.bincount(actions, minlength=model.num_actions) / len(actions)
    result = {
        "episodes": len(played), "steps": int(len(z)),
        "return_mean": float(np.mean([ep["reward"].sum() for ep in played])),
        "spearman_maxq_return": float(spearmanr(maxq, g).statistic) if np.std(maxq) > 0 and np.std(g) > 0 else float("nan"),
        "action_effect_l1": float(torch.cat(effect).mean()),
        "model_error_l1": float(torch.cat(error).mean()),
        "action_histogram": histogram.tolist(),
        "probe_r2": {},
    }
    recent = None if replay is None else recent_rows(replay, probe_episodes)  # (episode ids, rows)
    z_replay = None if replay is None else encode_rows(model, replay, recent[1])  # encoded once
    if replay is not None and not model.continuous:
        result["replay_q"] = replay_q_spread(model, z_replay)
    if replay is not None and replay.states is not None:
        result["probe_r2"] = replay_probes(model, replay, probe_episodes, z_replay)
        result["probe_r2_pixels"] = pixel_probes(replay, probe_episodes)
        result["probe_source"] = f"replay: last {len(recent[0])} episodes"
    elif states and layout:
        result["probe_source"] = f"{len(played)} played episodes"
        targets = probe_targets(layout, np.concatenate(states))
        keep = targets["ball_y"] != 0 if "ball_y" in targets else np.ones(len(z), bool)  # ball in play
        if episodes < 2:  # no later episode to hold out: the last 30% of steps
            test = np.arange(len(z)) >= int(0.7 * len(z))
        result["probe_r2"] = fit_probes(z, targets, keep & ~test, keep & test)
    return result


RIDGES = (1.0, 10.0, 100.0, 1000.0, 10000.0)


def fit_probes(z: np.ndarray, targets: dict[str, np.ndarray], train: np.ndarray, test: np.ndarray) -> dict[str, float]:
    """Held-out R² per target of a ridge regression from z [N, D]; train / test are row masks [N].
    The ridge is chosen per target on the last quarter of the training rows (a latent of thousands of
    numbers fitted on a few thousand rows needs far more than 1: held-out R² of -25 on Breakout's
    3,136-number conv latent with ridge 1)."""
    if train.sum() <= 10 or test.sum() <= 10:
        return {}
    rows = np.flatnonzero(train)
    fit, val = np.zeros_like(train), np.zeros_like(train)
    fit[rows[: int(0.75 * len(rows))]], val[rows[int(0.75 * len(rows)):]] = True, True
    out = {}
    for name, y in targets.items():
        ridge = max(RIDGES, key=lambda r: np.nan_to_num(linear_probe_r2(z[fit], y[fit], z[val], y[val], ridge=r), nan=-np.inf))
        out[name] = float(linear_probe_r2(z[train], y[train], z[test], y[test], ridge=ridge))
    return out


PROBE_ROWS = 12_000  # the probes' rows at least, however short the episodes


def recent_rows(replay: ReplayDataset, episodes: int, min_rows: int = PROBE_ROWS) -> tuple[np.ndarray, np.ndarray]:
    """(episode ids, rows: observations with an action) of the last `episodes` episodes of a replay,
    or of more until they hold `min_rows` rows. Short episodes need more: a field fixed for an
    episode (Reacher's target) has one value per episode, and 40 of Reacher's 50-step episodes gave
    the probe 30 targets to fit (target R² 0.59/0.86 there; 0.02/-0.01 on 240 held-out episodes)."""
    from_end = np.cumsum(replay.episode_steps[::-1])  # rows of the last 1, 2, ... episodes
    enough = int(np.searchsorted(from_end, min_rows)) + 1
    ids = np.arange(replay.num_episodes)[-max(episodes, enough):]
    return ids, np.concatenate([replay.episode_start[e] + np.arange(replay.episode_steps[e]) for e in ids])


@torch.no_grad()
def encode_rows(model, replay: ReplayDataset, rows: np.ndarray) -> torch.Tensor:
    return torch.cat([model.encode(torch.as_tensor(replay.stacks(rows[i:i + 256]))) for i in range(0, len(rows), 256)])


def _probe_rows(replay: ReplayDataset, episodes: int) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Rows of the last `episodes` episodes, their probe targets, and the train / test masks
    (the ball in play where the card has one; every fourth episode held out)."""
    ids, rows = recent_rows(replay, episodes)
    targets = probe_targets(replay.state_layout, replay.states[rows])
    keep = targets["ball_y"] != 0 if "ball_y" in targets else np.ones(len(rows), bool)  # ball in play
    test = np.isin(replay.row_episode[rows], ids[3::4])
    return rows, targets, keep & ~test, keep & test


def replay_probes(model, replay: ReplayDataset, episodes: int, z: torch.Tensor | None = None) -> dict[str, float]:
    """Probes of the latent on the last `episodes` episodes of a replay (the agent's recent play);
    every fourth of them is held out. `z`: those rows' latents, when already encoded."""
    rows, targets, train, test = _probe_rows(replay, episodes)
    z = (encode_rows(model, replay, rows) if z is None else z).numpy()
    return fit_probes(z, targets, train, test)


def pixel_probes(replay: ReplayDataset, episodes: int) -> dict[str, float]:
    """The same probes as `replay_probes`, fitted on the pixels of each row's last frame, 2x2
    mean-pooled (84x84 -> 42x42; ~1,800 numbers per channel): what a linear read of the frame itself
    gives, the reference for the latent's figures (Breakout at 100k, seed 1: ball y 0.710 from the
    pixels, 0.837 from the acting latent; ball x 0.912 and 0.910)."""
    rows, targets, train, test = _probe_rows(replay, episodes)
    frames = torch.cat([torch.as_tensor(replay.stacks(rows[i:i + 512])[:, -1]).float() for i in range(0, len(rows), 512)])
    pixels = F.avg_pool2d(frames, 2, ceil_mode=True).flatten(1).numpy() / 255  # [N, C * H/2 * W/2]
    return fit_probes(pixels, targets, train, test)


@torch.no_grad()
def replay_q_spread(model, z: torch.Tensor) -> dict:
    """Does Q depend on the state? Over the replay states' latents z [T, D] (discrete actions): the
    std of max_a Q and the share of states where each action is the argmax. A std near 0 with one
    action everywhere is how the heads failed when their units died."""
    q = model.q(z).mean(0)  # [T, A]
    share = torch.bincount(q.argmax(-1), minlength=model.num_actions) / len(q)
    return {"maxq_std_over_states": float(q.max(-1).values.std()), "argmax_share": share.tolist()}


def format_diagnostics(result: dict) -> str:
    lines = [f"{result['episodes']} episodes, {result['steps']} steps, return {result['return_mean']:.2f}",
             f"Spearman(max Q, return to the next lost life): {result['spearman_maxq_return']:.3f}",
             f"one-step action effect (L1 between actions) {result['action_effect_l1']:.4f} vs model error "
             f"{result['model_error_l1']:.4f} (ratio {result['action_effect_l1'] / max(result['model_error_l1'], 1e-12):.2f})",
             "actions: " + " ".join(f"{p:.2f}" for p in result["action_histogram"])]
    if "replay_q" in result:
        r = result["replay_q"]
        lines.append(f"on replay states: std of max Q {r['maxq_std_over_states']:.4f}, argmax share "
                     + " ".join(f"{p:.2f}" for p in r["argmax_share"]))
    pixels = result.get("probe_r2_pixels", {})
    lines += [f"probe R² {name}: {r2:.3f} ({result['probe_source']}"
              + (f"; the frame's own pixels: {pixels[name]:.3f})" if name in pixels else ")")
              for name, r2 in result["probe_r2"].items()]
    return "\n".join(lines)
