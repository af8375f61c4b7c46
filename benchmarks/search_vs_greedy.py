"""Does the search over the world model beat greedy Q? The same trained agents, many distinct games.

For each trained `wmrl run` folder and each search depth (1 = greedy Q), plays `--episodes` games
of `--env` with `wmrl plan --depth D` (episode i resets with seed `--seed` + i, so every depth meets
the same starts); the default card, `breakout-sticky`, repeats an action with probability 0.25 per
raw frame, so every game differs (on the plain card a deterministic agent plays 4 distinct games in
20). Writes per (run, depth) the plan summary `RUN-dD.json`, then `search_vs_greedy.md`: per run the
mean return with its bootstrap 95% CI over games, the mean per-game difference from depth 1 (paired
by start seed), and the mean over runs with rliable's CI. Resumes: finished (run, depth) files are
read back, not replayed.

    python benchmarks/search_vs_greedy.py runs/w-s0 runs/w-s1 runs/w-s2 --depths 1 2 3 \\
        --out-dir benchmarks/results/breakout-search-vs-greedy
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from wmrl.bench.report import interval_estimates


def play(run: Path, depth: int, args: argparse.Namespace, out: Path) -> dict:
    path = out / f"{run.name}-d{depth}.json"
    if not path.is_file():
        subprocess.run([sys.executable, "-m", "wmrl", "plan", "--env", args.env, "--checkpoint", str(run), "--depth", str(depth),
                        "--episodes", str(args.episodes), "--seed", str(args.seed), "--max-steps", str(args.max_steps)], check=True)
        shutil.copy(run / "plan.json", path)
    return json.loads(path.read_text())


def ci(values) -> str:
    e = interval_estimates(values)
    return f"{e['mean']:.2f} [{e['mean_lo']:.2f}, {e['mean_hi']:.2f}]"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="+", type=Path, help="trained `wmrl run` folders")
    p.add_argument("--depths", nargs="+", type=int, default=[1, 2])
    p.add_argument("--env", default="breakout-sticky")
    p.add_argument("--episodes", type=int, default=50)
    p.add_argument("--seed", type=int, default=2_000_000)
    p.add_argument("--max-steps", type=int, default=27_000)
    p.add_argument("--out-dir", type=Path, default=Path("benchmarks/results/breakout-search-vs-greedy"))
    args = p.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    if 1 not in args.depths:
        args.depths = [1, *args.depths]
    returns = {(run.name, d): np.array(play(run, d, args, args.out_dir)["returns"], float) for run in args.runs for d in args.depths}

    lines = [f"# Search vs greedy Q on `{args.env}`: {args.episodes} games per agent and depth (starts seeded {args.seed}+i)", "",
             "Mean return over games [bootstrap 95% CI over games]; Δ: mean per-game difference from depth 1 on the same starts.", "",
             "| run | " + " | ".join(f"depth {d}" + (" (greedy)" if d == 1 else "") for d in args.depths) + " | "
             + " | ".join(f"Δ depth {d}" for d in args.depths[1:]) + " |",
             "|---|" + "---|" * (2 * len(args.depths) - 1)]
    for run in args.runs:
        base = returns[run.name, 1]
        lines.append(f"| {run.name} | " + " | ".join(ci(returns[run.name, d]) for d in args.depths) + " | "
                     + " | ".join(ci(returns[run.name, d] - base) for d in args.depths[1:]) + " |")
    if len(args.runs) > 1:
        means = {d: [returns[run.name, d].mean() for run in args.runs] for d in args.depths}
        lines.append(f"| mean over runs [rliable CI over runs] | " + " | ".join(ci(means[d]) for d in args.depths) + " | "
                     + " | ".join(ci(np.subtract(means[d], means[1])) for d in args.depths[1:]) + " |")
    table = args.out_dir / "search_vs_greedy.md"
    table.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
