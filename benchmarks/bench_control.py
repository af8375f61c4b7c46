"""Benchmark of control speed: planner milliseconds per action, imagination vs real env steps/s.

1. Planner: an `MPCAgent` with the `plan` section of `--config` (default reacher: CEM, 256
   candidates, horizon 8, 3 iterations) over the trained world model of `--checkpoint`, or
   without one over random weights of the config's shapes. Candidates that share an action
   prefix share its computation, so a trained model (whose CEM distribution concentrates as it
   would in use) and random weights cost differently: report the trained one. Each action =
   encode the frame stack + optimize (population x iterations rollouts of `horizon` steps,
   KV-cached), on frame stacks of a random-policy episode of the real env. Reported: mean and
   median ms per action over `--actions` calls after a warm-up, and the time spent encoding.
2. Imagination env: `ImaginationVecEnv` with `--num-envs` envs (one batched world-model step
   for all), random actions: steps/s summed over envs. Real env: the card's env (preprocessing
   and frame stack included), one env, random actions: steps/s. Their ratio is the speed-up.

Both are timed in the same run, since the machine is shared and absolute rates drift; "cores
used" (process CPU time / wall time) below the thread count means other processes took cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from wmrl.config import load_experiment
from wmrl.control.agent import MPCAgent
from wmrl.control.imagination import ImaginationVecEnv
from wmrl.envs import load_card, make_env
from wmrl.models.vit import VisionTransformer
from wmrl.models.world_model import WorldModel
from wmrl.train.checkpoint import load_checkpoint

TARGETS = {"ms_per_action": 20.0, "imagination_ratio": 10.0}


def timed(fn, seconds: float, at_least: int) -> tuple[list[float], float]:
    """Call fn repeatedly for `seconds` (at least `at_least` times): per-call seconds, cores used."""
    times, cpu0, wall0 = [], time.process_time(), time.perf_counter()
    while len(times) < at_least or time.perf_counter() - wall0 < seconds:
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times, (time.process_time() - cpu0) / (time.perf_counter() - wall0)


def real_frame_stacks(env: gym.Env, count: int) -> np.ndarray:
    """`count` consecutive frame stacks [count, K, C, H, W] of a seeded random-policy episode."""
    obs, _ = env.reset(seed=0)
    env.action_space.seed(0)
    stacks = [obs]
    while len(stacks) < count:
        obs, _, terminated, truncated, _ = env.step(env.action_space.sample())
        stacks.append(obs if not (terminated or truncated) else env.reset()[0])
    return np.stack(stacks)


def bench_planner(wm: WorldModel, cfg, env: gym.Env, seconds: float, actions: int) -> dict:
    agent = MPCAgent(wm, cfg, env.action_space)
    obs = real_frame_stacks(env, 64)
    agent.predict(obs[0])  # warm-up
    calls = iter(range(10**9))
    times, cores = timed(lambda: agent.predict(obs[next(calls) % len(obs)]), seconds, actions)
    with torch.no_grad():
        enc, _ = timed(lambda: wm.encode(torch.as_tensor(obs[:1])), min(seconds, 2.0), 5)
    ms = 1000 * np.array(times)
    return {"method": cfg.method, "population": cfg.population, "horizon": cfg.horizon, "iterations": cfg.iterations,
            "actions": len(ms), "ms_per_action_mean": float(ms.mean()), "ms_per_action_median": float(np.median(ms)),
            "encode_ms": 1000 * float(np.median(enc)), "cores_used": cores}


def bench_imagination(wm: WorldModel, env: gym.Env, num_envs: int, seconds: float) -> dict:
    starts = torch.randn(1024, wm.num_latents, wm.latent_dim)
    venv = ImaginationVecEnv(wm, starts, num_envs, horizon=15, action_space=env.action_space)
    venv.seed(0)
    venv.reset()
    sample = lambda: np.stack([env.action_space.sample() for _ in range(num_envs)])  # noqa: E731
    venv.step(sample())  # warm-up
    steps, cores = timed(lambda: venv.step(sample()), seconds, 5)
    imagined = num_envs * len(steps) / sum(steps)

    env.reset(seed=0)

    def real_step():
        *_, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            env.reset()

    real, real_cores = timed(real_step, seconds, 50)
    real_rate = len(real) / sum(real)
    return {"num_envs": num_envs, "imagined_steps_per_s": imagined, "real_steps_per_s": real_rate,
            "ratio": imagined / real_rate, "cores_used": cores, "real_cores_used": real_cores}


def build_world_model(cfg, card, checkpoint: Path | None) -> tuple[WorldModel, gym.Env]:
    env = make_env(card)
    if checkpoint is not None:
        return WorldModel.from_checkpoint(load_checkpoint(checkpoint)), env
    k, c, h, w = env.observation_space.shape
    encoder = VisionTransformer(cfg.stage1.model.encoder, k, c, (h, w))
    discrete = isinstance(env.action_space, gym.spaces.Discrete)
    action_dim = env.action_space.n if discrete else env.action_space.shape[0]
    torch.manual_seed(0)
    return WorldModel(cfg.stage2.model, encoder, action_dim, discrete).eval(), env


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # The two-stage MPC agent acts where the online agent does not yet: continuous actions.
    p.add_argument("--config", default="reacher")
    p.add_argument("--checkpoint", type=Path, help="a trained stage-2 world model of the config's env (default: random weights)")
    p.add_argument("--seconds", type=float, default=10.0, help="timed seconds per measurement")
    p.add_argument("--actions", type=int, default=10, help="planned actions at least")
    p.add_argument("--num-envs", type=int, default=64, help="imagined envs per batch")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--quick", action="store_true", help="a tiny run (for the tests)")
    p.add_argument("--out-dir", type=Path, default=Path("benchmarks/results"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = load_experiment(args.config)
    if args.quick:
        args.seconds, args.actions, args.num_envs = 0.5, 2, 8
        cfg.plan.population, cfg.plan.elites = 32, 4
    card = load_card(cfg.env)
    wm, env = build_world_model(cfg, card, args.checkpoint)
    try:
        planner = bench_planner(wm, cfg.plan, env, args.seconds, args.actions)
        cfg.plan.method = "mppi"
        mppi = bench_planner(wm, cfg.plan, env, args.seconds, args.actions)
        imagination = bench_imagination(wm, env, args.num_envs, args.seconds)
    finally:
        env.close()
    machine = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "threads": args.threads,
               "torch": torch.__version__, "load_avg": [round(x, 2) for x in os.getloadavg()],
               "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    m = wm.cfg
    model = (f"encoder {wm.encoder.num_tokens} tokens x {wm.latent_dim}, predictor width {m.width} depth {m.depth}, "
             f"{wm.num_latents} latents x {wm.latent_dim} ({m.step_tokens} tokens per step), "
             + (f"trained: {args.checkpoint}" if args.checkpoint else "random weights"))

    def mark(ok: bool) -> str:
        return "✓" if ok else "✗"

    lines = [f"# Control speed: {card.name} ({model})", "",
             f"{machine['cores']} cores, {args.threads} torch threads, torch {machine['torch']}, load {machine['load_avg']}", "",
             "| planner | candidates x horizon x iterations | ms/action (mean) | median | encode ms | cores used |",
             "|---|---|---|---|---|---|"]
    for r in (planner, mppi):
        lines.append(f"| {r['method']} | {r['population']} x {r['horizon']} x {r['iterations']} | "
                     f"{r['ms_per_action_mean']:.1f} {mark(r['ms_per_action_mean'] <= TARGETS['ms_per_action'])} | "
                     f"{r['ms_per_action_median']:.1f} | {r['encode_ms']:.1f} | {r['cores_used']:.2f} |")
    i = imagination
    lines += ["", "| imagined envs | imagined steps/s | real steps/s (1 env) | ratio |", "|---|---|---|---|",
              f"| {i['num_envs']} | {i['imagined_steps_per_s']:.0f} | {i['real_steps_per_s']:.0f} | "
              f"{i['ratio']:.1f}x {mark(i['ratio'] >= TARGETS['imagination_ratio'])} |", "",
              f"Targets: ≤ {TARGETS['ms_per_action']:.0f} ms per action; imagination ≥ {TARGETS['imagination_ratio']:.0f}x "
              "the real env (✓ met, ✗ missed)."]
    text = "\n".join(lines) + "\n"
    print(text)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"control_{card.name}_cpu" + ("_quick" if args.quick else "")
    (args.out_dir / f"{stem}.md").write_text(text)
    (args.out_dir / f"{stem}.json").write_text(json.dumps(
        {"machine": machine, "targets": TARGETS, "model": model, "planner": [planner, mppi], "imagination": imagination},
        indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
