"""Does the agent's Q learn to rank states? The online learner's updates on a fixed replay (offline).

A fast check of a design before a 100k-step run: the learner of `--config` (with `--set` overrides)
samples sequences from the replay of an earlier run (every tenth episode held out) for `--updates`
updates; every `--every` updates it reports, over the states of the last 30 held-out episodes:
the spread of max_a Q over states, the Spearman correlation of max_a Q with the realised
discounted return to the next lost life, and each action's share of the argmax. A Q that ignores
the state shows as a spread near 0, a correlation near 0 and one action everywhere.

    python benchmarks/offline_q.py --data runs/bo/data --updates 2000 \
        --set learner.model.latent=conv learner.model.q_head=dqn learner.model.standardise=false

Measured on Breakout (the replay of a 100k-step run, 1 thread, 2026-11-28): see
benchmarks/results/breakout-100k-variants/README.md.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from minari.serialization import deserialize_space
from scipy.stats import spearmanr

from wmrl.config import load_experiment
from wmrl.data.memory import TransitionMemory
from wmrl.data.replay import ReplayDataset
from wmrl.eval.agent import returns_to_life_end
from wmrl.models.agent_model import AgentWorldModel
from wmrl.train.learner import Learner
from wmrl.types import Episode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="a replay dataset (a `wmrl run` folder's data/) with lives recorded")
    parser.add_argument("--config", default="breakout")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    parser.add_argument("--updates", type=int, default=2000)
    parser.add_argument("--every", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    cfg = load_experiment(args.config, args.set)
    data = ReplayDataset(args.data)
    if "lives" not in data.state_spans:
        raise SystemExit(f"{args.data} records no lives: the held-out returns need them")
    lives = data.states[:, data.state_spans["lives"]][:, 0]
    episodes = np.arange(data.num_episodes)
    held_out = episodes[episodes % 10 == 9][-30:]
    memory = TransitionMemory(len(data.frames), data.frame_shape, data.frame_stack, seed=args.seed)
    for e in episodes[episodes % 10 != 9]:
        memory.add_episode(_episode(data, e), lives[data.episode_start[e]:data.episode_start[e] + data.episode_steps[e] + 1])

    rows = np.concatenate([data.episode_start[e] + np.arange(data.episode_steps[e]) for e in held_out])
    returns = np.concatenate([returns_to_life_end(data.rewards[s:s + n], lives[s:s + n + 1], cfg.learner.gamma, 1.0)
                              for s, n in ((data.episode_start[e], data.episode_steps[e]) for e in held_out)])
    torch.manual_seed(args.seed)
    model = AgentWorldModel(cfg.stage1.model.encoder, cfg.learner.model, data.stack_shape, deserialize_space(data.meta["action_space"]).n)
    learner = Learner(model, cfg.learner, seed=args.seed)
    start = time.perf_counter()
    for update in range(1, args.updates + 1):
        learner.update(memory.sample(cfg.learner.batch_size, cfg.learner.sequence_length))
        if update % args.every == 0:
            model.eval()
            with torch.no_grad():
                z = torch.cat([model.encode(torch.as_tensor(data.stacks(rows[i:i + 512]))) for i in range(0, len(rows), 512)])
                q = model.q(z).mean(0)  # [T, A]
            model.train()
            best = q.max(-1).values.numpy()
            print(json.dumps({"updates": update, "seconds": round(time.perf_counter() - start),
                              "maxq_std_over_states": round(float(best.std()), 5),
                              "spearman_maxq_return": round(float(spearmanr(best, returns).statistic), 3),
                              "argmax_share": np.round(np.bincount(q.argmax(-1).numpy(), minlength=q.shape[1]) / len(q), 2).tolist()}),
                  flush=True)


def _episode(data: ReplayDataset, e: int) -> Episode:
    s, n = data.episode_start[e], data.episode_steps[e]
    return Episode(data.frames[s:s + n + 1], data.actions[s:s + n], data.rewards[s:s + n], data.terminated[s:s + n],
                   data.truncated[s:s + n])


if __name__ == "__main__":
    main()
