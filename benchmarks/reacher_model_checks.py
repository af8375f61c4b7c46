"""Diagnostic: does a trained Reacher agent's world model know what reaching needs?

On fresh random-play episodes of the `reacher` card (pixels as the agent sees them, the MuJoCo
state beside them) it measures, for the agent of a `wmrl run` folder:
0. what the latent holds: a ridge probe from the real latent to the fingertip-target offset (fitted
   on half the episodes), and the correlation of the distance it implies with the real one on the
   other half: the most the reward could know;
1. the distance part of the reward k steps ahead: the model unrolls from the real latent along the
   real torques, and its predicted reward plus the known torque cost (Reacher-v5: r = -distance -
   |a|^2) is correlated with minus the real fingertip-target distance, k = 1, 3, 5, 10. (The whole
   reward's correlation is dominated by the torque cost, which the model reads off its input.)
2. Q's ranking of torques: 8 directions of equal size, so equal torque cost; the physics ranks them
   by the distance after holding each for 3 steps from the true state; reported: Spearman of
   Q(z, a) with that ranking and how often Q's best is the true best or a neighbour (chance 3/8).

    .venv/bin/python benchmarks/reacher_model_checks.py benchmarks/results/robots/reacher/wmrl/seed-0
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from scipy.stats import spearmanr

from wmrl.envs import load_card, make_env
from wmrl.online import load_agent

STEPS_AHEAD = (1, 3, 5, 10)


def random_play(episodes: int, seed: int) -> list[dict[str, np.ndarray]]:
    """Episodes of uniform random torques: stacks [T+1, K, C, H, W], actions [T, 2], dist [T] (after
    each step), state [T+1, S]."""
    env, rng, out = make_env(load_card("reacher")), np.random.default_rng(seed), []
    for e in range(episodes):
        obs, info = env.reset(seed=seed + e)
        stacks, states, actions, dist = [obs], [info["state"]], [], []
        done = False
        while not done:
            action = rng.uniform(-1, 1, 2).astype(np.float32)
            obs, _, terminated, truncated, info = env.step(action)
            stacks.append(obs), states.append(info["state"]), actions.append(action), dist.append(-info["reward_dist"])
            done = terminated or truncated
        out.append({"stacks": np.stack(stacks), "actions": np.stack(actions), "dist": np.array(dist),
                    "state": np.stack(states)})
    env.close()
    return out


@torch.no_grad()
def latent_distance_probe(model, episodes) -> float:
    """corr(distance read from a linear probe of the latent, real distance) on held-out episodes."""
    def data(eps):
        z = torch.cat([model.encode(torch.as_tensor(ep["stacks"][1:])) for ep in eps]).numpy()
        state = np.concatenate([ep["state"][1:] for ep in eps])
        return z, state[:, 8:10] - state[:, 11:13]  # the fingertip-target offset, x and y
    half = len(episodes) // 2
    z, offset = data(episodes[:half])
    mean, std, offset_mean = z.mean(0), z.std(0) + 1e-6, offset.mean(0)
    x = (z - mean) / std
    weights = np.linalg.solve(x.T @ x + np.eye(x.shape[1]), x.T @ (offset - offset_mean))  # ridge
    z, offset = data(episodes[half:])
    predicted = (z - mean) / std @ weights + offset_mean
    return float(np.corrcoef(np.linalg.norm(predicted, axis=1), np.linalg.norm(offset, axis=1))[0, 1])


@torch.no_grad()
def distance_prediction(model, episodes) -> dict[int, float]:
    """corr(predicted -distance, real -distance) k steps ahead, from every start with 10 steps left."""
    horizon = max(STEPS_AHEAD)
    starts = [(e, t) for e, ep in enumerate(episodes) for t in range(0, len(ep["actions"]) - horizon + 1, 2)]
    z = model.encode(torch.as_tensor(np.stack([episodes[e]["stacks"][t] for e, t in starts])))
    out = {}
    for k in range(horizon):
        a = np.stack([episodes[e]["actions"][t + k] for e, t in starts])
        z, reward_logits, _ = model.step(z, torch.as_tensor(a))
        if k + 1 in STEPS_AHEAD:
            predicted = model.reward(reward_logits).numpy() + np.square(a).sum(1)  # -> minus the distance
            real = -np.array([episodes[e]["dist"][t + k] for e, t in starts])
            out[k + 1] = float(np.corrcoef(predicted, real)[0, 1])
    return out


@torch.no_grad()
def torque_ranking(model, episodes, states_per_episode: int = 10) -> tuple[float, float]:
    """(mean Spearman of Q over 8 equal-size torques with the physics' ranking, share of states
    where Q's best is the true best or a neighbour)."""
    env = make_env(load_card("reacher"))
    sim = env.unwrapped
    sim.reset(seed=0)
    angle = np.linspace(0, 2 * np.pi, 8, endpoint=False)
    torques = (0.7 * np.stack([np.cos(angle), np.sin(angle)], 1)).astype(np.float32)  # [8, 2]
    rhos, hits = [], []
    for ep in episodes:
        for t in np.linspace(0, len(ep["actions"]) - 1, states_per_episode).astype(int):
            qpos, qvel = ep["state"][t][0:4], ep["state"][t][4:8]
            true = []
            for a in torques:
                sim.set_state(qpos, qvel)
                for _ in range(3):
                    sim.do_simulation(a, sim.frame_skip)
                true.append(-np.linalg.norm(sim.get_body_com("fingertip")[:2] - sim.get_body_com("target")[:2]))
            z = model.encode(torch.as_tensor(ep["stacks"][t][None])).expand(len(torques), -1)
            q = model.q(z, torch.as_tensor(torques)).mean(0).numpy()
            rhos.append(spearmanr(q, true)[0])
            gap = abs(int(q.argmax()) - int(np.argmax(true)))
            hits.append(min(gap, 8 - gap) <= 1)
    env.close()
    return float(np.nanmean(rhos)), float(np.mean(hits))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a `wmrl run` folder (its agent.pt, or its last learner.pt)")
    parser.add_argument("--episodes", type=int, default=20, help="random-play episodes to measure on")
    parser.add_argument("--seed", type=int, default=5_000_000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = load_agent(args.run).model.eval()
    episodes = random_play(args.episodes, args.seed)
    print(f"distance read from a linear probe of the real latent vs the real one (held-out random play): "
          f"{latent_distance_probe(model, episodes):.2f}")
    corr = distance_prediction(model, episodes)
    print("predicted vs real minus distance, k steps ahead (random play): "
          + ", ".join(f"k={k} {c:.2f}" for k, c in corr.items()))
    rho, hit = torque_ranking(model, episodes)
    print(f"Q over 8 equal-size torques vs the physics' ranking: Spearman {rho:.2f}, "
          f"Q's best within one of the true best {hit:.2f} (chance 0.38)")


if __name__ == "__main__":
    main()
