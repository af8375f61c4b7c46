"""Benchmark suites: env x agent x seed cells at equal real-env step budgets, one folder each.

    out/<env>/<agent>/seed-<k>/cell.json     what the cell is (env, agent, budget, seed, SB3 settings, machine)
                               curve.csv     env_steps,return: full episodes seen while learning
                               result.json   the evaluation; written last, so it marks the cell done

A rerun skips the cells with a result.json and resumes the others from what their folders hold
(SB3 saves, `wmrl run` rounds), so a long suite can span sessions and machines.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from wmrl.bench.agents import ABLATIONS, AGENTS, SB3_SETTINGS, ZOO, evaluate, sb3_settings, supports, train_agent
from wmrl.config import find_config, load_experiment
from wmrl.data.store import write_json_atomic
from wmrl.envs import load_card
from wmrl.errors import ConfigError, UserError


@dataclass(frozen=True)
class Cell:
    env: str  # env card
    agent: str
    budget: int  # real env agent steps for learning
    eval_episodes: int
    config: str = ""  # the wmrl experiment config (wmrl agents); default: the card's name
    imagine_steps: int = 200_000  # wmrl-imagine: imagined steps for its SB3 learner
    eval_max_steps: int | None = None  # None: the card's own episode limit


def _grid(envs: dict[str, tuple[str, ...]], budget: int, episodes: int, **kw) -> list[Cell]:
    return [Cell(env, agent, budget, episodes, **kw) for env, agents in envs.items() for agent in agents]


# The imagination agent is out of the discrete suites: on Breakout (64x64 card, 2 seeds) it scored
# 0.90 against random's 1.20; the MPC agent of the two-stage design gave way to the online agent.
# Each SB3 baseline twice: on the card (the wmrl agents' frames) and on SB3's own Atari preprocessing
# (the zoo variants; Atari cards only), so the table compares with the stronger of the two.
DISCRETE_AGENTS = ("random", "ppo", "dqn", "a2c", "ppo-zoo", "dqn-zoo", "a2c-zoo", "wmrl")
CONTINUOUS_AGENTS = ("random", "ppo", "sac", "wmrl", "wmrl-mpc", "wmrl-imagine")

SUITES: dict[str, list[Cell]] = {
    # Proves the harness end to end in minutes: every agent kind on both action types.
    "quick": _grid({"breakout": (*DISCRETE_AGENTS, "wmrl-mpc", "wmrl-imagine")}, 2000, 2,
                   config="quick-breakout", imagine_steps=2048, eval_max_steps=500)
    + _grid({"reacher": ("random", "ppo", "sac")}, 1000, 2, eval_max_steps=50),
    # Atari-100k (benchmarks/PROTOCOL.md): 100k agent steps, 20 full episodes per seed; the online
    # agent's ablations (search while learning, pretraining, frozen encoder, world-model gradients) in the same table.
    "atari100k": _grid({"breakout": (*DISCRETE_AGENTS, *ABLATIONS)}, 100_000, 20),
    # Goal reaching from pixels (benchmarks/PROTOCOL.md): 50 seeded episodes, success rate.
    "robots": _grid({"reacher": CONTINUOUS_AGENTS, "pusht": CONTINUOUS_AGENTS, "fetch_reach": CONTINUOUS_AGENTS}, 50_000, 50),
    # Crafter at 100k env steps (its authors' budget is 1M; 100k fits this project's 2-core machine
    # in hours); the score is computed over 20 evaluation episodes.
    "crafter": _grid({"crafter": ("random", "ppo", "dqn", "wmrl")}, 100_000, 20),
}


def machine() -> dict:
    cpuinfo = Path("/proc/cpuinfo")
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")),
               None) if cpuinfo.is_file() else None
    return {"host": platform.node(), "cpu": cpu or platform.processor(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "python": platform.python_version()}


def cell_dir(out: Path, cell: Cell, seed: int) -> Path:
    return out / cell.env / cell.agent / f"seed-{seed}"


def run_cell(cell: Cell, seed: int, out: Path, progress: bool = False, device: str = "cpu") -> dict:
    """Train and evaluate one cell (resuming); returns its result."""
    folder = cell_dir(out, cell, seed)
    done = folder / "result.json"
    if done.is_file():
        return json.loads(done.read_text())
    card = load_card(cell.env)
    folder.mkdir(parents=True, exist_ok=True)
    # A cell started before (and killed) resumes from its saves; this process's clock then misses
    # the earlier processes' training time, so the result says its time is a lower bound.
    resumed = (folder / "cell.json").is_file()
    # SB3 agents: their settings here; wmrl agents: the whole experiment config is in wmrl-mpc's run.json.
    algo = ZOO.get(cell.agent, cell.agent)
    settings = sb3_settings(algo, cell.budget) if algo in SB3_SETTINGS else None
    (folder / "cell.json").write_text(json.dumps({**asdict(cell), "seed": seed, "sb3_settings": settings,
                                                  "device": device, "machine": machine()}, indent=1, default=str))
    torch.manual_seed(seed)
    start = time.perf_counter()
    policy, curve = train_agent(cell.agent, card, cell.budget, seed, folder, cell.config or card.name,
                                cell.imagine_steps, progress, device)
    train_seconds = time.perf_counter() - start
    # The training time survives a re-evaluation and a resume: an online wmrl run counts its own time
    # across resumes in run.json (also runs finished elsewhere); any other cell keeps the time of its
    # finished training in train_time.json (a rerun only loads its saved model). Then the time is
    # whole, not the lower bound of a resumed cell.
    record, timing, whole = folder / "run.json", folder / "train_time.json", False
    if (cell.agent == "wmrl" or cell.agent in ABLATIONS) and record.is_file():
        progress = json.loads(record.read_text())["progress"]
        train_seconds, whole = max(train_seconds, progress[-1]["seconds"] if progress else 0.0), True
    elif timing.is_file():
        train_seconds, whole = max(train_seconds, json.loads(timing.read_text())["train_seconds"]), True
    elif not resumed:
        write_json_atomic(timing, {"train_seconds": train_seconds})
        whole = True
    with open(folder / "curve.csv", "w", newline="") as f:
        csv.writer(f).writerows([("env_steps", "return"), *curve])
    # Every agent meets the same evaluation episodes: seeds fixed by the cell's seed, not its agent.
    result = evaluate(card, policy, cell.eval_episodes, seed=10**6 + 1000 * seed, max_steps=cell.eval_max_steps,
                      zoo=cell.agent in ZOO)
    result.update(env=cell.env, agent=cell.agent, seed=seed, budget=cell.budget, train_seconds=train_seconds,
                  train_resumed=resumed and not whole)
    tmp = done.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, done)
    return result


def suite_cells(suite: str, envs: list[str] | None = None) -> list[Cell]:
    """The suite's cells; with `envs`, those env cards' cells: a card the suite does not list (a
    game a user added, say) gets the cells of the suite's first env (same agents, budget, episodes),
    with its own experiment config for the wmrl agents (configs/<card name>.yaml)."""
    cells = SUITES[suite]
    if not envs:
        return cells
    template = [c for c in cells if c.env == cells[0].env]
    chosen = []
    for env in envs:
        name = load_card(env).name  # an unknown card: one line, exit 2
        chosen += [c for c in cells if c.env == name] or [replace(c, env=name, config="") for c in template]
    return chosen


def run_suite(suite: str, seeds: int | list[int], out: str | Path, agents: list[str] | None = None,
              progress: bool = False, envs: list[str] | None = None, device: str = "cpu") -> list[dict]:
    """Every cell of the suite for seeds 0..seeds-1 (or the listed seeds: one process per seed runs
    seeds side by side on a machine with cores to spare); finished cells are read back, not rerun."""
    if suite not in SUITES:
        raise UserError(f"unknown suite '{suite}' (suites: {', '.join([*SUITES, 'speed'])})")
    unknown = set(agents or []) - set(AGENTS)
    if unknown:
        raise UserError(f"unknown agent(s) {', '.join(sorted(unknown))} (agents: {', '.join(AGENTS)})")
    out, results = Path(out), []
    cells = [c for c in suite_cells(suite, envs) if (not agents or c.agent in agents) and supports(c.agent, load_card(c.env))]
    for cell in cells:  # before hours of training: every wmrl cell has a valid experiment config
        if cell.agent.startswith("wmrl"):
            try:
                find_config(cell.config or cell.env)
            except ConfigError as e:
                raise UserError(f"{e}: the wmrl agents on '{cell.env}' need configs/{cell.env}.yaml "
                                f"(e.g. a copy of configs/{SUITES[suite][0].env}.yaml with env: {cell.env})") from None
            load_experiment(cell.config or cell.env)  # a bad key: its own one-line error
    for seed in range(seeds) if isinstance(seeds, int) else seeds:
        for cell in cells:
            start = time.perf_counter()
            r = run_cell(cell, seed, out, progress, device)
            extra = f", success {r['success_rate']:.2f}" if "success_rate" in r else ""
            print(f"{cell.env:10s} {cell.agent:13s} seed {seed}: return {r['return_mean']:8.2f} ± {r['return_std']:.2f}"
                  f"{extra} ({time.perf_counter() - start:.0f} s)", flush=True)
            results.append(r)
    return results


# The speed suite runs the repository's benchmark scripts (benchmarks/, beside the package).
SPEED_SCRIPTS = [["bench_data.py", "--env", "breakout", "--env", "reacher"], ["bench_train.py"], ["bench_control.py"],
                 ["bench_agent.py"]]


def run_speed(out: str | Path, quick: bool = False) -> None:
    """Collector ÷ raw env rate, bytes/frame, sampler frames/s (bench_data); stage-1/2 frames/s and
    FLOP utilisation against the same run's matmul peak (bench_train); planner ms/action and
    imagination ÷ real env steps/s (bench_control); the online agent's ms per 8-env call and updates/s
    (bench_agent). Each writes its own table into `out`."""
    scripts = Path(__file__).resolve().parents[2] / "benchmarks"
    if not scripts.is_dir():
        raise UserError(f"the speed suite runs the scripts in a source checkout's benchmarks/, not found at {scripts}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for script, *args in SPEED_SCRIPTS:
        command = [sys.executable, str(scripts / script), *args, "--out-dir", str(out), *(["--quick"] if quick else [])]
        print("$", " ".join(command[1:]), flush=True)
        if subprocess.run(command).returncode != 0:
            raise UserError(f"speed benchmark {script} failed (its output is above)")
