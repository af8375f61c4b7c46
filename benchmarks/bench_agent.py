"""Benchmark of the online agent's speed: ms per action for N envs in one batch, learner updates/s.

1. Acting: the search agent of `--config` at depth 1 (greedy Q), 2 (Breakout: 16 action
   sequences, Q at the leaves) and the config's (learning, `search.depth`; the trained agent,
   `search.eval_depth`), over random weights of the config's shapes (the
   search costs the same for trained weights: it scores every sequence), on real frame stacks of
   the card's env; one call acts for `--num-envs` envs at once (encode + search). Reported: ms per call and per env-step.
2. Learning: `Learner.update` at the config's batch size, unroll and n-step, on a replay filled
   with real random-policy frames; updates/s.
3. The wall time one 100k-step seed of `wmrl run` needs at these rates (acting + updates at the
   config's replay ratio, env stepping excluded), against the 4-hour target.

    python benchmarks/bench_agent.py --config breakout --out-dir benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from wmrl.config import load_experiment
from wmrl.control.search import SearchAgent
from wmrl.data.memory import TransitionMemory
from wmrl.envs import load_card, make_vector_env
from wmrl.models.agent_model import AgentWorldModel
from wmrl.train.learner import Learner

TARGETS = {"ms_per_action_batch": 10.0, "hours_per_100k": 4.0}


def timed(fn, seconds: float, at_least: int) -> list[float]:
    times, wall0 = [], time.perf_counter()
    while len(times) < at_least or time.perf_counter() - wall0 < seconds:
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="breakout")
    p.add_argument("--num-envs", type=int, default=8)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--device", default="cpu", help="where the agent acts and learns: cpu (default) or cuda")
    p.add_argument("--quick", action="store_true", help="a tiny run (for the tests)")
    p.add_argument("--out-dir", type=Path, default=Path("benchmarks/results"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = load_experiment(args.config)
    if args.quick:
        args.seconds = 0.3
    card = load_card(cfg.env)
    venv = make_vector_env(card, args.num_envs, asynchronous=False)
    try:
        obs, _ = venv.reset(seed=0)
        stack_shape = venv.single_observation_space.shape
        memory = TransitionMemory(4000, stack_shape[1:], card.frame_stack)
        last = [memory.start(obs[i, -1]) for i in range(args.num_envs)]
        stacks = []
        rng = np.random.default_rng(0)
        for _ in range(2000 // args.num_envs):
            actions = rng.integers(venv.single_action_space.n, size=args.num_envs)
            obs, reward, term, trunc, info = venv.step(actions)
            stacks.append(obs)
            for i in range(args.num_envs):
                if term[i] or trunc[i]:
                    memory.add(last[i], actions[i], reward[i], bool(term[i]), True, info["final_obs"][i][-1])
                    last[i] = memory.start(obs[i, -1])
                else:
                    last[i] = memory.add(last[i], actions[i], reward[i], False, False, obs[i, -1])
    finally:
        venv.close()
    torch.manual_seed(0)
    model = AgentWorldModel(cfg.stage1.model.encoder, cfg.learner.model, stack_shape, int(venv.single_action_space.n))
    model = model.to(args.device)
    calls = iter(range(10**9))
    acting = {}  # search depth -> (ms per call for all envs, ms per call for one env)
    trained = cfg.search.trained_depth
    for depth in sorted({1, 2, cfg.search.depth, trained}):  # greedy Q, the 2-step search, the config's
        agent = SearchAgent(model, depth, cfg.learner.gamma)
        agent.act(stacks[0])  # warm-up
        acting[depth] = (1000 * np.array(timed(lambda: agent.act(stacks[next(calls) % len(stacks)]), args.seconds, 5)),
                         1000 * np.array(timed(lambda: agent.act(stacks[next(calls) % len(stacks)][:1]), args.seconds / 2, 5)))
    act, one = acting[cfg.search.depth]
    learner = Learner(model, cfg.learner, args.device)
    sample = lambda: memory.sample(cfg.learner.batch_size, cfg.learner.sequence_length)  # noqa: E731
    learner.update(sample())
    upd = np.array(timed(lambda: learner.update(sample()), args.seconds, 3))
    r = cfg.run
    updates = r.replay_ratio * (r.budget - r.seed_steps)
    hours = (r.budget / args.num_envs * act.mean() / 1000 + updates * upd.mean()) / 3600
    result = {"env": card.name, "num_envs": args.num_envs, "depth": cfg.search.depth, "eval_depth": trained,
              "ms_per_call_by_depth": {d: float(a.mean()) for d, (a, _) in acting.items()},
              "encoder_tokens": model.encoder.num_tokens,
              "ms_per_call_mean": float(act.mean()), "ms_per_call_median": float(np.median(act)),
              "ms_per_env_step": float(act.mean() / args.num_envs), "ms_per_call_one_env": float(one.mean()),
              "update_s_mean": float(upd.mean()), "updates_per_s": float(1 / upd.mean()),
              "batch_size": cfg.learner.batch_size, "unroll": cfg.learner.unroll, "n_step": cfg.learner.n_step,
              "replay_ratio": r.replay_ratio, "hours_per_budget": hours, "budget": r.budget}
    gpu = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else None
    machine = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "threads": args.threads,
               "torch": torch.__version__, "device": gpu or "cpu", "load_avg": [round(x, 2) for x in os.getloadavg()]}

    def mark(ok: bool) -> str:
        return "✓" if ok else "✗"

    text = "\n".join([
        f"# Online agent speed: {card.name} (encoder {model.encoder.num_tokens} tokens, latent {model.latent_dim}, "
        "random weights)", "",
        f"{machine['cores']} cores, {args.threads} torch threads, torch {machine['torch']}, device {machine['device']}, "
        f"load {machine['load_avg']}", "",
        "| acting | ms per call (mean) | median | ms per env-step | 1 env: ms per call |", "|---|---|---|---|---|",
        *(f"| {args.num_envs} envs, search depth {d} ({model.num_actions ** d} sequences)"
          f"{' (learning)' if d == cfg.search.depth else ''}{' (the trained agent)' if d == trained else ''} | "
          f"{a.mean():.1f} {mark(a.mean() <= TARGETS['ms_per_action_batch'])} | {np.median(a):.1f} | "
          f"{a.mean() / args.num_envs:.2f} | {o.mean():.1f} |" for d, (a, o) in acting.items()), "",
        "| learner | s per update | updates/s |", "|---|---|---|",
        f"| batch {cfg.learner.batch_size}, unroll {cfg.learner.unroll}, n-step {cfg.learner.n_step} | {upd.mean():.3f} | "
        f"{1 / upd.mean():.2f} |", "",
        f"One {r.budget:,}-step seed at replay ratio {r.replay_ratio} ({updates:,.0f} updates), acting and updating only: "
        f"{hours:.2f} h {mark(hours <= TARGETS['hours_per_100k'] * r.budget / 100_000)}", "",
        f"Targets: ≤ {TARGETS['ms_per_action_batch']:.0f} ms per call for {args.num_envs} envs; ≤ "
        f"{TARGETS['hours_per_100k']:.0f} h per 100k-step seed (✓ met, ✗ missed)."]) + "\n"
    print(text)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"agent_{card.name}_{'cuda' if gpu else 'cpu'}" + ("_quick" if args.quick else "")
    (args.out_dir / f"{stem}.md").write_text(text)
    (args.out_dir / f"{stem}.json").write_text(json.dumps({"machine": machine, "targets": TARGETS, **result}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
