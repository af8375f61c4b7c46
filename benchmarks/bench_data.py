"""Benchmark of the wmrl data layer: collector overhead, bytes on disk, window-sampler read rate.

For each env card (``--env``, repeatable; default ``breakout``) it measures:

1. Collector throughput ratio. The raw step rate of the card's wrapped env
   (``make_vector_env(card, 1, asynchronous=False)`` stepped in a plain loop by a seeded
   ``RandomPolicy``, nothing recorded) against the rate of ``collect(...)`` writing a real
   dataset into a temp dir, with the same env, seed and step budget. Target: ratio >= 0.9.
2. Disk bytes per stored frame of that dataset (``disk_bytes(root)`` / frames, an episode of N
   steps storing N+1 frames), against raw C*H*W bytes; plus the frames alone, re-encoded per
   episode with the store's codec (zstd-3 arrow IPC). Target for Breakout 64x64 gray: <= 300 B.
3. Read rate of ``WindowSampler(ReplayDataset(root), clip_len=16, batch_size=32).sample()`` on
   one core (the process is pinned to CPU 0 while sampling): clips/s, stacks/s (B*T) and
   frames/s counting every frame of every stack (B*T*K). Target >= 20k frames/s. Also the time
   of ``ReplayDataset(root)`` itself, as frames loaded per second.

Why ratios: the machine is shared and noisy, so absolute rates drift by tens of percent from
minute to minute. Raw and collector runs are therefore interleaved (``--rounds`` rounds, the
order flipped every round) and the reported ratio is the median of the per-round ratios, each
taken from two runs seconds apart. Absolute rates are medians too, for orientation only.

    .venv/bin/python benchmarks/bench_data.py --env breakout --env reacher --env crafter
    .venv/bin/python benchmarks/bench_data.py --quick   # smoke test, a few seconds
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import numpy as np
import pyarrow as pa

from wmrl.data.collect import collect, open_writer
from wmrl.data.replay import ReplayDataset, WindowSampler
from wmrl.data.store import disk_bytes, fixed_list, write_ipc
from wmrl.envs.card import load_card
from wmrl.envs.make import make_vector_env
from wmrl.policies import RandomPolicy

DEFAULT_STEPS = {"breakout": 20000}  # other cards step 10-100x slower: 3000 keeps a run short
OTHER_STEPS, QUICK_STEPS = 3000, 500
CLIP_LEN, BATCH_SIZE, SEED = 16, 32, 0
TARGETS = {"ratio": 0.9, "bytes_per_frame": 300, "sampler_frames_per_s": 20000}


def raw_rate(venv, steps: int) -> tuple[float, int]:
    """Agent steps per second of the bare env loop (same policy, nothing recorded), and the
    number of episodes that ended, to check that the collector stepped the same trajectory."""
    policy = RandomPolicy(venv.action_space, SEED)
    obs, _ = venv.reset(seed=SEED)
    ended = 0
    start = time.perf_counter()
    for _ in range(steps):
        obs, _, terminated, truncated, _ = venv.step(policy(obs))
        ended += int(terminated[0] or truncated[0])
    return steps / (time.perf_counter() - start), ended


def collector_rate(venv, card, steps: int, root: Path):
    """Agent steps per second of `collect` writing a fresh dataset at `root` (its own clock)."""
    writer = open_writer(root, card, venv, append=False)
    stats = collect(venv, RandomPolicy(venv.action_space, SEED), writer, steps, seed=SEED, progress=False,
                    policy_name="random")
    return stats.steps_per_second, stats


def frames_only_bytes(data: ReplayDataset) -> int:
    """Bytes of the frames alone, each episode's frames one zstd-3 arrow buffer as the store writes them."""
    total = 0
    for start, n in zip(data.episode_start, data.episode_steps):
        sink = pa.BufferOutputStream()
        write_ipc(pa.RecordBatch.from_pydict({"observations": fixed_list(data.frames[start:start + n + 1])}), sink)
        total += sink.getvalue().size
    return total


def sampler_rates(root: Path, seconds: float) -> dict:
    """Dataset load rate, then window-sampler rates, pinned to one core if the OS allows."""
    affinity = os.sched_getaffinity(0) if hasattr(os, "sched_setaffinity") else None
    if affinity is not None:
        os.sched_setaffinity(0, {min(affinity)})
    try:
        loads = []
        for _ in range(3):
            start = time.perf_counter()
            data = ReplayDataset(root)
            loads.append(time.perf_counter() - start)
        sampler = WindowSampler(data, clip_len=CLIP_LEN, batch_size=BATCH_SIZE, seed=SEED)
        sampler.sample()  # warm-up
        n, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds:
            sampler.sample()
            n += 1
    finally:
        if affinity is not None:
            os.sched_setaffinity(0, affinity)
    k = data.frame_stack
    return {"data": data, "pinned": affinity is not None, "load_s": statistics.median(loads),
            "load_frames_per_s": len(data.frames) / statistics.median(loads), "samples": n,
            "clips_per_s": n * BATCH_SIZE / elapsed, "stacks_per_s": n * BATCH_SIZE * CLIP_LEN / elapsed,
            "frames_per_s": n * BATCH_SIZE * CLIP_LEN * k / elapsed}


def bench_env(name: str, steps: int, rounds: int, sample_seconds: float) -> dict:
    card = load_card(name)
    venv = make_vector_env(card, 1, asynchronous=False)
    raws, cols, ratios, same = [], [], [], []
    try:
        with tempfile.TemporaryDirectory(prefix="bench_data_") as tmp:
            # Warm-up of both sides (first resets, lazy imports, first arrow write, allocator growth):
            # without it the first collector run pays one-off costs that the raw loop does not.
            raw_rate(venv, min(500, steps))
            collector_rate(venv, card, min(500, steps), Path(tmp) / "warmup")
            for r in range(rounds):
                root = Path(tmp) / f"round{r}"
                if r % 2 == 0:  # alternate the order so drift does not favour one side
                    raw, ended = raw_rate(venv, steps)
                    col, stats = collector_rate(venv, card, steps, root)
                else:
                    col, stats = collector_rate(venv, card, steps, root)
                    raw, ended = raw_rate(venv, steps)
                raws.append(raw), cols.append(col), ratios.append(col / raw)
                same.append(ended == len(stats.returns))  # both loops ended as many episodes
                print(f"  {name} round {r + 1}/{rounds}: raw {raw:,.0f} steps/s, collector {col:,.0f} steps/s, "
                      f"ratio {col / raw:.3f}", file=sys.stderr)
            s = sampler_rates(root, sample_seconds)
            data = s.pop("data")
            frames = len(data.frames)
            assert frames == stats.steps + stats.episodes, (frames, stats.steps, stats.episodes)
            on_disk, frames_only = disk_bytes(root), frames_only_bytes(data)
    finally:
        venv.close()
    raw_bytes = int(np.prod(data.frame_shape))
    return {"env": name, "gym_id": card.gym_id, "frame_shape": list(data.frame_shape), "frame_stack": data.frame_stack,
            "steps": steps, "rounds": rounds, "episodes": stats.episodes, "frames": frames,
            "raw_steps_per_s": statistics.median(raws), "collector_steps_per_s": statistics.median(cols),
            "ratio": statistics.median(ratios), "ratios": ratios, "raw_rates": raws, "collector_rates": cols,
            "same_episodes": same, "disk_bytes": on_disk, "bytes_per_frame": on_disk / frames, "frames_only_bytes_per_frame": frames_only / frames,
            "raw_bytes_per_frame": raw_bytes, "compression": raw_bytes * frames / on_disk,
            "clip_len": CLIP_LEN, "batch_size": BATCH_SIZE, "sample_seconds": sample_seconds, **s}


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else platform.processor()
    versions = {"python": platform.python_version()}
    for pkg in ("numpy", "torch", "gymnasium", "ale-py", "pyarrow", "minari", "mujoco", "crafter"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = "not installed"
    return {"cpu": cpu, "cores": os.cpu_count(), "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "load_avg": [round(x, 2) for x in os.getloadavg()], "platform": platform.platform(), "versions": versions,
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "command": shlex.join([os.path.relpath(sys.executable) if sys.executable.startswith(os.getcwd()) else sys.executable, *sys.argv])}


def mark(ok: bool | None) -> str:
    return "" if ok is None else (" ✓" if ok else " ✗")


def table(results: list[dict]) -> str:
    rows = ["| env | steps × rounds | raw steps/s | collector steps/s | ratio (median) | bytes/frame (disk) | frames only | raw B/frame | compression | load frames/s | clips/s | stacks/s | sampler frames/s |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        bpf_ok = r["bytes_per_frame"] <= TARGETS["bytes_per_frame"] if r["env"] == "breakout" else None
        rows.append(f"| {r['env']} | {r['steps']} × {r['rounds']} | {r['raw_steps_per_s']:,.0f} | {r['collector_steps_per_s']:,.0f} "
                    f"| {r['ratio']:.3f}{mark(r['ratio'] >= TARGETS['ratio'])} | {r['bytes_per_frame']:.0f}{mark(bpf_ok)} "
                    f"| {r['frames_only_bytes_per_frame']:.0f} | {r['raw_bytes_per_frame']} | {r['compression']:.1f}× "
                    f"| {r['load_frames_per_s']:,.0f} | {r['clips_per_s']:,.0f} | {r['stacks_per_s']:,.0f} "
                    f"| {r['frames_per_s']:,.0f}{mark(r['frames_per_s'] >= TARGETS['sampler_frames_per_s'])} |")
    return "\n".join(rows)


def report(results: list[dict], m: dict) -> str:
    v = m["versions"]
    per_round = "\n".join(f"- {r['env']}: ratios per round " + ", ".join(f"{x:.3f}" for x in r["ratios"])
                          + f"; {r['episodes']} episodes, {r['frames']} frames, {r['disk_bytes']:,} bytes on disk"
                          + ("" if all(r["same_episodes"]) else " (**raw and collector ended different numbers of episodes:"
                             " the env is not reproducible under a fixed seed, so the ratio also carries trajectory noise**)")
                          for r in results)
    return f"""# wmrl data layer benchmark (CPU)

{table(results)}

Targets: collector/raw ratio ≥ {TARGETS['ratio']}; Breakout 64x64 gray ≤ {TARGETS['bytes_per_frame']} bytes/frame on disk;
window sampler ≥ {TARGETS['sampler_frames_per_s']:,} frames/s on one core (✓ met, ✗ missed).

- ratio: collector steps/s ÷ raw steps/s of the same wrapped env (1 sync env, seeded random policy),
  per round, raw and collector back to back, order alternating; median over rounds. Absolute rates are medians.
- bytes/frame: disk_bytes(root) ÷ stored frames (N+1 per episode), metadata and state columns included;
  "frames only": the frames re-encoded per episode with the store's codec (zstd-3 arrow IPC).
- sampler: WindowSampler(clip_len={CLIP_LEN}, batch_size={BATCH_SIZE}).sample() in a loop, process pinned to one core;
  clips/s = B per sample, stacks/s = B*T, frames/s = B*T*K. load: ReplayDataset(root), frames/s, median of 3.

{per_round}

## Machine

- CPU: {m['cpu']}, {m['cores']} cores ({m['usable_cores']} usable); load average at start {m['load_avg']}
- {m['platform']}
- python {v['python']}, numpy {v['numpy']}, torch {v['torch']}, gymnasium {v['gymnasium']}, ale-py {v['ale-py']},
  pyarrow {v['pyarrow']}, minari {v['minari']}, mujoco {v['mujoco']}, crafter {v['crafter']}
- date: {m['date']}

Reproduce (from the repository root):

    {m['command']}
"""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--env", action="append", help="env card (repeatable; default breakout)")
    p.add_argument("--steps", type=int, help=f"agent steps per run, all envs (default: breakout 20000, others {OTHER_STEPS})")
    p.add_argument("--rounds", type=int, default=3, help="alternating raw/collector rounds (default 3)")
    p.add_argument("--sample-seconds", type=float, default=2.0, help="how long to time the window sampler")
    p.add_argument("--out-dir", type=Path, default=Path("benchmarks/results"))
    p.add_argument("--quick", action="store_true", help=f"smoke test: {QUICK_STEPS} steps, 0.3 s sampling, writes data_cpu_quick.*")
    args = p.parse_args(argv)
    envs = args.env or ["breakout"]
    sample_seconds = 0.3 if args.quick else args.sample_seconds
    results = []
    for name in envs:
        steps = args.steps or (QUICK_STEPS if args.quick else DEFAULT_STEPS.get(name, OTHER_STEPS))
        results.append(bench_env(name, steps, args.rounds, sample_seconds))
    m = machine()
    text = report(results, m)
    print(text)
    stem = "data_cpu_quick" if args.quick else "data_cpu"
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / f"{stem}.md").write_text(text)
    (args.out_dir / f"{stem}.json").write_text(json.dumps({"machine": m, "targets": TARGETS, "results": results}, indent=1) + "\n")
    print(f"wrote {args.out_dir / stem}.md and .json", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
