"""Diagnostic: is a trained Reacher agent limited by its latent or by what it learns on it?

For a `wmrl run` folder of the `reacher` card, on the run's own replay (its states stored beside
the frames):
1. probes: an MLP from the acting latent z to the fingertip-target offset, the fingertip, the target
   (x, y, metres) and the two joint velocities, fitted on 20,000 rows and scored on 4,000 rows of
   held-out episodes (every fifth): R² and the median error. A probe on a few random-play episodes
   (benchmarks/reacher_model_checks.py) is starved of rows: on the same latent it read the offset
   at R² 0.94, median error 0.038, against 0.99 and 0.010 here.
   `--fresh stack each` adds the same probes on a freshly initialised keypoint tower of each kind
   (what training added).
2. `--sac-steps N`: SB3 SAC (its defaults) learning on the frozen latent for N steps, evaluated
   every 10,000 steps over 20 deterministic episodes: what a model-free learner makes of the same
   numbers. On the true state it reaches success 0.57 at 20k steps
   (benchmarks/reacher_state_sac.py gives 0.86 at 50k).

    .venv/bin/python benchmarks/reacher_latent_check.py benchmarks/results/robots/reacher/wmrl/seed-0 --sac-steps 50000
"""

from __future__ import annotations

import argparse
import dataclasses

import gymnasium as gym
import numpy as np
import torch
from reacher_state_sac import learn_and_evaluate  # this folder: scripts run as benchmarks/<name>.py

from wmrl.data.replay import ReplayDataset
from wmrl.envs import load_card, make_env
from wmrl.eval.agent import encode_rows
from wmrl.models.agent_model import AgentWorldModel
from wmrl.online import load_agent


def mlp_probe(x: np.ndarray, y: np.ndarray, x_test: np.ndarray, updates: int = 8000) -> np.ndarray:
    """Fit a 2x512 MLP from standardised x to standardised y by Adam (cosine schedule); predict y for x_test."""
    torch.manual_seed(0)
    mean, std = x.mean(0), x.std(0) + 1e-6
    y_mean, y_std = y.mean(0), y.std(0)
    inputs = torch.tensor((x - mean) / std, dtype=torch.float32)
    targets = torch.tensor((y - y_mean) / y_std, dtype=torch.float32)
    net = torch.nn.Sequential(torch.nn.Linear(x.shape[1], 512), torch.nn.ReLU(), torch.nn.Linear(512, 512), torch.nn.ReLU(),
                              torch.nn.Linear(512, y.shape[1]))
    optimizer = torch.optim.Adam(net.parameters(), 1e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, updates)
    for _ in range(updates):
        idx = torch.randint(0, len(inputs), (256,))
        loss = (net(inputs[idx]) - targets[idx]).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    with torch.no_grad():
        return net(torch.tensor((x_test - mean) / std, dtype=torch.float32)).numpy() * y_std + y_mean


def probes(model: AgentWorldModel, data: ReplayDataset, seed: int = 0) -> dict[str, tuple[float, float]]:
    """{quantity: (R², median error)} of MLP probes from the latent, on held-out episodes."""
    rng = np.random.default_rng(seed)
    held_out = data.row_episode % 5 == 4
    train = rng.choice(np.flatnonzero(~held_out), 20_000, replace=False)
    test = rng.choice(np.flatnonzero(held_out), 4_000, replace=False)
    spans = data.state_spans
    quantities = {"offset": lambda s: s[:, spans["fingertip"]][:, :2] - s[:, spans["target"]][:, :2],
                  "fingertip": lambda s: s[:, spans["fingertip"]][:, :2],
                  "target": lambda s: s[:, spans["target"]][:, :2],
                  "joint velocity": lambda s: s[:, spans["qvel"]][:, :2]}
    z, z_test = encode_rows(model, data, train).numpy(), encode_rows(model, data, test).numpy()
    out = {}
    for name, read in quantities.items():
        y, y_test = read(data.states[train]), read(data.states[test])
        predicted = mlp_probe(z, y, z_test)
        r2 = 1 - ((y_test - predicted) ** 2).sum() / ((y_test - y_test.mean(0)) ** 2).sum()
        out[name] = (float(r2), float(np.median(np.linalg.norm(predicted - y_test, axis=1))))
    return out


class LatentObservation(gym.ObservationWrapper):
    """The card's pixel stacks -> the frozen model's latent z [D]."""

    def __init__(self, env: gym.Env, model: AgentWorldModel):
        super().__init__(env)
        self.model = model
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (model.latent_dim,), np.float32)

    def observation(self, obs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return self.model.encode(torch.as_tensor(obs[None]))[0].numpy()


def latent_sac(model: AgentWorldModel, steps: int, seed: int) -> None:
    from stable_baselines3 import SAC

    card = load_card("reacher")
    agent = SAC("MlpPolicy", LatentObservation(make_env(card), model), seed=seed, learning_starts=1000, verbose=0)
    learn_and_evaluate(agent, lambda: LatentObservation(make_env(card), model), steps, 10_000, 20, "SAC on the frozen latent")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a `wmrl run` folder of the reacher card (its data/ and agent)")
    parser.add_argument("--fresh", nargs="*", default=(), choices=("stack", "each"),
                        help="also probe a freshly initialised keypoint tower of these kinds")
    parser.add_argument("--sac-steps", type=int, default=0, help="SB3 SAC steps on the frozen latent (0: none)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = load_agent(args.run).model.eval()
    data = ReplayDataset(f"{args.run}/data")
    towers = {"trained": model}
    for kind in args.fresh:
        torch.manual_seed(args.seed)
        cfg = dataclasses.replace(model.cfg, keypoint_frames=kind)
        towers[f"fresh {kind}"] = AgentWorldModel(model.encoder_cfg, cfg, model.stack_shape, model.num_actions, True).eval()
    for name, tower in towers.items():
        for quantity, (r2, error) in probes(tower, data, args.seed).items():
            print(f"{name} latent ({tower.latent_dim} numbers) -> {quantity}: R² {r2:.3f}, median error {error:.4f}", flush=True)
    if args.sac_steps:
        latent_sac(model, args.sac_steps, args.seed)


if __name__ == "__main__":
    main()
