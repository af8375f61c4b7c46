"""Tables and plots from saved benchmark cells (`wmrl bench --report DIR`).

Per env and agent, over seeds: the mean and the interquartile mean (IQM) of the per-seed mean
evaluation return, each with a stratified-bootstrap 95% confidence interval (rliable), the std, the human-normalised score where the card has reference scores, the
success rate on goal cards, and learning curves (return vs env steps). Published numbers sit in
their own, labelled table: they come from other code, budgets and machines.
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from wmrl.envs import load_card
from wmrl.errors import UserError

# benchmarks/PROTOCOL.md: paper tables at 100k agent steps (Atari) and the authors' own settings.
PUBLISHED = {
    "breakout": [("random", 1.7), ("human", 30.5), ("SimPLe", 16.4), ("TWM", 20.0), ("STORM", 15.9),
                 ("DreamerV3", 31.0), ("IRIS", 83.7), ("DIAMOND", 132.5), ("BBF", 370.6), ("EfficientZero", 414.1)],
    # Crafter score (%) at 1M env steps (Hafner 2021 and DreamerV3), over all training episodes.
    "crafter": [("random", 1.6), ("SB3 PPO", 4.6), ("DreamerV2", 10.0), ("DreamerV3", 14.5), ("human", 50.5)],
    # Goal reaching from goal images with offline data (benchmarks/PROTOCOL.md): other env versions and
    # goal definitions than this benchmark's reward-planning agents, so context only.
    "reacher": [("DINO-WM (DMC Reach, pretrained DINOv2 encoder, CEM to a goal image)", 0.92)],
    "pusht": [("DINO-WM (its own PushT goal definition)", 0.90),
              ("Diffusion Policy, image PushT (expert demonstrations): mean coverage, not success", 0.84)],
}
PUBLISHED_WHAT = {"breakout": "return at 100k agent steps", "crafter": "Crafter score (%) at 1M env steps",
                  "reacher": "success rate at their own data budgets", "pusht": "success rate at their own data budgets"}


def interval_estimates(per_seed, reps: int = 2000, seed: int = 0) -> dict[str, float]:
    """Mean and IQM of per-seed scores [runs], each with its stratified-bootstrap 95% CI, by rliable
    (Agarwal et al. 2021). One task here, so the bootstrap resamples the runs; one run gives a CI of
    zero width. Seeded: a report rebuilt from the same cells prints the same intervals."""
    from rliable import library as rly
    from rliable import metrics

    scores = {"agent": np.asarray(per_seed, float).reshape(-1, 1)}  # [runs, tasks]
    # rliable draws its resamples from NumPy's global generator (not from its random_state argument):
    # seed that for the call and give the caller's state back.
    saved = np.random.get_state()
    np.random.seed(seed)
    try:
        point, ci = rly.get_interval_estimates(
            scores, lambda x: np.array([metrics.aggregate_mean(x), metrics.aggregate_iqm(x)]), reps=reps)
    finally:
        np.random.set_state(saved)
    (mean, iqm), ((mean_lo, iqm_lo), (mean_hi, iqm_hi)) = point["agent"], ci["agent"]
    return {"mean": float(mean), "mean_lo": float(mean_lo), "mean_hi": float(mean_hi),
            "iqm": float(iqm), "iqm_lo": float(iqm_lo), "iqm_hi": float(iqm_hi)}


def load_results(root: Path) -> list[dict]:
    results = []
    for path in sorted(root.glob("**/result.json")):
        try:
            results.append({**json.loads(path.read_text()), "folder": path.parent})
        except json.JSONDecodeError:
            raise UserError(f"corrupt benchmark result {path}: remove it to rerun that cell") from None
    return results


def summarise(results: list[dict]) -> list[dict]:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in results:
        groups[(r["env"], r["agent"], r["budget"])].append(r)
    rows = []
    for (env, agent, budget), rs in sorted(groups.items()):
        means = np.array([r["return_mean"] for r in rs])
        stats = interval_estimates(means)
        row = {"env": env, "agent": agent, "budget": budget, "seeds": len(rs),
               "episodes": sum(r["episodes"] for r in rs), "return_mean": stats["mean"],
               "return_ci": (stats["mean_lo"], stats["mean_hi"]), "return_std": float(means.std()),
               "return_iqm": stats["iqm"], "return_iqm_ci": (stats["iqm_lo"], stats["iqm_hi"]),
               "train_hours": sum(r["train_seconds"] for r in rs) / 3600 / len(rs),
               "train_partial": any(r.get("train_resumed", False) for r in rs),  # then a lower bound
               "ms_per_action": float(np.mean([r["ms_per_action_mean"] for r in rs]))}
        if all("success_rate" in r for r in rs):
            row["success_rate"] = float(np.mean([r["success_rate"] for r in rs]))
        if all("progress_mean" in r for r in rs):  # PushT: the final coverage
            row["progress_mean"] = float(np.mean([r["progress_mean"] for r in rs]))
        if all("score" in r for r in rs):  # Crafter: the achievement score, in %
            scores = np.array([r["score"] for r in rs])
            row["score_mean"], row["score_std"] = float(scores.mean()), float(scores.std())
        card = load_card(env)
        if card.reference_scores:  # in the units of card.reference_metric: the return, or Crafter's score
            value = row["score_mean"] if card.reference_metric == "score_pct" else row["return_mean"]
            ref = card.reference_scores
            row["hns"] = (value - ref["random"]) / (ref["human"] - ref["random"])
        rows.append(row)
    return rows


def formatted(r: dict) -> dict[str, str]:
    """A summary row's table cells."""
    return {"env": r["env"], "agent": r["agent"], "budget": f"{r['budget']:,}", "seeds": str(r["seeds"]),
            "return": f"{r['return_mean']:.2f} [{r['return_ci'][0]:.2f}, {r['return_ci'][1]:.2f}]",
            "std": f"{r['return_std']:.2f}",
            "iqm": f"{r['return_iqm']:.2f} [{r['return_iqm_ci'][0]:.2f}, {r['return_iqm_ci'][1]:.2f}]",
            "hns": f"{r['hns']:.3f}" if "hns" in r else "–",
            "success": (f"{r['success_rate']:.2f}" if "success_rate" in r
                        else f"{r['score_mean']:.1f}% ± {r['score_std']:.1f}" if "score_mean" in r else "–")
            + (f" (progress {r['progress_mean']:.2f})" if "progress_mean" in r else ""),
            "train": f"{'≥' if r.get('train_partial') else ''}{r['train_hours']:.2f}",  # ≥: resumed, a lower bound
            "ms": f"{r['ms_per_action']:.1f}"}


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def markdown(rows: list[dict]) -> str:
    columns = ["env", "agent", "budget", "seeds", "return", "std", "iqm", "hns", "success", "train", "ms"]
    lines = table(["env", "agent", "env steps", "seeds", "return mean [95% CI]", "std", "IQM [95% CI]", "human-norm.",
                   "success / score",
                   "train h/seed", "ms/action"], [[formatted(r)[c] for c in columns] for r in rows])
    envs = sorted({r["env"] for r in rows} & set(PUBLISHED))
    for env in envs:
        lines += ["", f"Published {env}, {PUBLISHED_WHAT[env]} (paper tables, other code and machines; not measured here):",
                  "", f"| method | {PUBLISHED_WHAT[env].split(' at ')[0]} |", "|---|---|"]
        lines += [f"| {name} | {score} |" for name, score in PUBLISHED[env]]
    return "\n".join(lines) + "\n"


# The README's headline table sits between these lines; `wmrl bench --report DIR... --readme README.md`
# rewrites what is between them from the result files, so the README cannot drift from them.
HEADLINE_BEGIN = "<!-- headline table: written by `wmrl bench --report ... --readme`; do not edit by hand -->"
HEADLINE_END = "<!-- end of headline table -->"


def headline(roots: list[Path]) -> str:
    """One row per env x agent over every finished cell under `roots`; the best mean per env in bold."""
    rows = summarise([r for root in roots for r in load_results(Path(root))])
    if not rows:
        raise UserError(f"no finished benchmark cells under {', '.join(map(str, roots))}")
    best = {env: max(r["return_mean"] for r in rows if r["env"] == env) for env in {r["env"] for r in rows}}
    cells = []
    for r in rows:
        f = formatted(r)
        if r["return_mean"] == best[r["env"]]:
            f["return"] = f"**{f['return']}**"
        cells.append([f[c] for c in ("env", "agent", "budget", "seeds", "return", "iqm", "hns", "success", "ms")])
    lines = table(["env", "agent", "env steps", "seeds", "return: mean over seeds [95% CI]", "IQM [95% CI]", "human-norm.",
                   "success / score", "ms/action"], cells)
    return "\n".join(lines) + "\n"


def update_readme(readme: Path, roots: list[Path]) -> None:
    """Replace the text between the headline markers in `readme` (kept otherwise byte for byte)."""
    if not Path(readme).is_file():
        raise UserError(f"no such file: {readme}")
    text = Path(readme).read_text()
    if text.count(HEADLINE_BEGIN) != 1 or text.count(HEADLINE_END) != 1:
        raise UserError(f"{readme} needs the headline markers once each: {HEADLINE_BEGIN} ... {HEADLINE_END}")
    head, rest = text.split(HEADLINE_BEGIN)
    _, tail = rest.split(HEADLINE_END)
    tmp = Path(readme).with_suffix(".tmp")
    tmp.write_text(f"{head}{HEADLINE_BEGIN}\n{headline(roots)}{HEADLINE_END}{tail}")
    tmp.replace(readme)


def read_curve(folder: Path) -> np.ndarray:
    """[E, 2]: env steps, return of each full episode seen while learning."""
    path = folder / "curve.csv"
    if not path.is_file():
        return np.zeros((0, 2))
    with open(path) as f:
        rows = list(csv.reader(f))[1:]
    return np.array(rows, float).reshape(-1, 2)


def plot_curves(results: list[dict], out: Path, points: int = 20) -> list[Path]:
    """One PNG per env: per agent, the return of learning episodes binned over env steps and
    averaged over seeds (each seed's bin mean first), with a 95% bootstrap band over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for env in sorted({r["env"] for r in results}):
        fig, ax = plt.subplots(figsize=(6, 4))
        agents = sorted({r["agent"] for r in results if r["env"] == env})
        for color, agent in zip(plt.cm.tab10.colors, agents):
            rs = [r for r in results if r["env"] == env and r["agent"] == agent]
            budget = max(r["budget"] for r in rs)
            edges = np.linspace(0, budget, points + 1)
            per_seed = []
            for r in rs:
                c = read_curve(Path(r["folder"]))
                idx = np.digitize(c[:, 0], edges[1:-1]) if len(c) else np.zeros(0, int)
                per_seed.append([c[idx == b, 1].mean() if (idx == b).any() else np.nan for b in range(points)])
            per_seed = np.array(per_seed, float)
            seen = np.isfinite(per_seed).any(0)  # bins where some seed finished an episode
            curve = np.array([np.nanmean(per_seed[:, b]) if seen[b] else np.nan for b in range(points)])
            ok = np.isfinite(curve)  # a line through the bins with episodes (wmrl-mpc: one point per round)
            centres = (edges[:-1] + edges[1:]) / 2
            ax.plot(centres[ok], curve[ok], marker=".", color=color, label=agent)
            # the band: the 95% bootstrap CI of the mean over the seeds with episodes in the bin (>= 2 seeds)
            band = [(b, interval_estimates(per_seed[np.isfinite(per_seed[:, b]), b], reps=500)) for b in range(points)
                    if np.isfinite(per_seed[:, b]).sum() >= 2]
            if band:
                ax.fill_between(centres[[b for b, _ in band]], [e["mean_lo"] for _, e in band],
                                [e["mean_hi"] for _, e in band], color=color, alpha=0.2, lw=0)
            ax.plot([budget], [np.mean([r["return_mean"] for r in rs])], marker="*", ms=12, color=color, ls="none")
        ax.set(xlabel="env steps", ylabel="episode return (learning)", title=f"{env}: learning episodes; ★ = final evaluation")
        ax.legend(fontsize=8)
        path = out / f"curves_{env}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths


def write_report(root: str | Path) -> Path:
    """Rebuild report.md, summary.csv and curves_<env>.png in `root` from its cells."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"no benchmark results at {root}")
    results = load_results(root)
    speed = sorted(p for p in root.glob("*.md") if p.name != "report.md")  # the speed suite's tables
    if not results and not speed:
        raise UserError(f"no finished benchmark cells (result.json) or speed tables under {root}")
    text = f"# Benchmark results: {root.name}\n\n"
    if results:
        text += cells_report(root, results)
    for path in speed:
        text += f"\n## Speed: {path.stem}\n\n" + path.read_text().split("\n", 1)[-1]
    (root / "report.md").write_text(text)
    return root / "report.md"


def achievement_table(results: list[dict]) -> list[str]:
    """Crafter: each achievement's success rate in % (episodes that unlocked it), averaged over
    seeds, one column per env and agent; [] when no cell recorded achievements."""
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in results:
        if "achievement_rates" in r:
            groups[(r["env"], r["agent"])].append(r["achievement_rates"])
    if not groups:
        return []
    keys = sorted(groups)
    names = sorted({name for rates in groups.values() for seed in rates for name in seed})
    cells = [[name] + [f"{np.mean([seed.get(name, 0.0) for seed in groups[k]]):.1f}" for k in keys] for name in names]
    return ["", "Success rate per achievement (% of evaluation episodes that unlocked it, mean over seeds):", "",
            *table(["achievement", *(f"{env} {agent}" for env, agent in keys)], cells)]


def machines(results: list[dict]) -> str:
    """Where the cells were trained: one line per machine, naming its cells (train h/seed is that machine's)."""
    where: dict[str, list[str]] = defaultdict(list)
    for r in results:
        cell = json.loads((Path(r["folder"]) / "cell.json").read_text())
        m = cell["machine"]
        name = (f"{m['cpu'] + ', ' if m.get('cpu') else ''}{m['cpus']} CPUs, {m['torch_threads']} torch threads, "
                f"torch {m['torch']}, " + (f"trained on GPU {m['cuda']}" if m.get("cuda") and str(cell.get("device", "cpu")).startswith("cuda")
                                           else "trained on the CPU"))
        where[name].append(f"{r['agent']} seed {r['seed']}")
    if len(where) == 1:
        return f"Machine: {next(iter(where))}."
    return "Machines (train h/seed is each cell's own machine's):\n" + "\n".join(
        f"- {name}: {', '.join(sorted(cells))}" for name, cells in where.items())


def cells_report(root: Path, results: list[dict]) -> str:
    rows = summarise(results)
    with open(root / "summary.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=sorted({k for r in rows for k in r}))
        writer.writeheader()
        writer.writerows(rows)
    text = ("Protocol: benchmarks/PROTOCOL.md: every agent learns at the same real-env step budget on the same env card "
            "and is evaluated on the same seeded full episodes (no reward clipping). Mean ± std and IQM are over "
            "seeds of each seed's mean evaluation return; the 95% confidence intervals are rliable's stratified "
            "bootstrap over seeds (2,000 resamples).\n\n" + machines(results) + "\n\n" + markdown(rows))
    if achievements := achievement_table(results):
        text += "\n".join(achievements) + "\n"
    for path in plot_curves(results, root):
        text += f"\n![{path.stem}]({path.name})\n"
    return text
