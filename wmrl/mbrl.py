"""`wmrl run`: the model-based loop at a fixed budget of real env steps.

Round 0 collects `run.seed_steps` with random actions; each later round collects `run.round_steps`
with the MPC agent of the newest world model (exploring with `plan.explore`). After each
collection stage 1 trains (round 0) or continues (`run.stage1_round_steps` more) on all data so
far, and stage 2 trains a world model over that encoder, warm-started from the last round's.
After the last round the deterministic planner plays `run.eval_episodes` full episodes.

Everything lives under the run folder and every phase resumes: the budget is counted in the
dataset's stored transitions (a killed collection continues where its data ends), the trainers
resume from their checkpoints, and a round is done once `run.json` records it.

    out/data/                  the replay dataset of all rounds
    out/encoder/               the stage-1 run, resumed with more steps each round
    out/world_model/round-N/   the stage-2 run of round N
    out/agent.pt               the newest MPC agent (a `--policy` for `wmrl collect`)
    out/run.json               the config, one row per round, the final evaluation
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import numpy as np
import torch

from wmrl.config import ExperimentConfig, from_dict, to_dict
from wmrl.control.agent import MPCAgent
from wmrl.data.collect import collect, open_writer
from wmrl.data.replay import ReplayDataset
from wmrl.data.store import write_json_atomic
from wmrl.envs import load_card, make_env, make_vector_env
from wmrl.errors import UserError
from wmrl.eval.episodes import run_episodes
from wmrl.eval.tasks import episode_measure
from wmrl.policies import RandomPolicy
from wmrl.train.checkpoint import CHECKPOINT_NAME, load_checkpoint
from wmrl.train.stage1 import Stage1Trainer
from wmrl.train.stage2 import Stage2Trainer


def round_targets(budget: int, seed_steps: int, round_steps: int) -> list[int]:
    """The dataset's total real steps at the end of each round."""
    targets = [min(seed_steps, budget)]
    while targets[-1] < budget:
        targets.append(min(targets[-1] + round_steps, budget))
    return targets


class ModelBasedRun:
    def __init__(self, cfg: ExperimentConfig, out: str | Path, device: str = "cpu", progress: bool = True):
        self.cfg, self.out, self.device, self.progress = cfg, Path(out), device, progress
        if cfg.env is None:
            raise UserError("the model-based loop needs an env: the config names none (env: ...)")
        self.card = load_card(cfg.env)
        self.record_path = self.out / "run.json"
        self.record = {"config": to_dict(cfg), "rounds": [], "eval": None}

    @classmethod
    def resume(cls, out: str | Path, budget: int | None = None, **kwargs) -> ModelBasedRun:
        """Continue the run in `out` with its stored config (`budget` may extend it)."""
        path = Path(out) / "run.json"
        if not path.is_file():
            raise UserError(f"nothing to resume: {out} has no run.json")
        record = json.loads(path.read_text())
        cfg = from_dict(ExperimentConfig, record["config"], source=str(path))
        if budget is not None and budget != cfg.run.budget:
            cfg.run.budget = budget
            record["eval"] = None  # a longer run is evaluated again at its new end
        run = cls(cfg, out, **kwargs)
        run.record = {**record, "config": to_dict(cfg)}
        return run

    # ------------------------------------------------------------------ phases
    def collect_round(self, index: int, start: int, target: int) -> dict:
        """Collect until the dataset holds `target` steps (it held `start` when the round began):
        random in round 0, else the MPC agent. The round's collection record is saved as soon as
        collection ends, so a run killed during training resumes with it."""
        r = self.cfg.run
        saved = self.record.get("collected")
        venv = make_vector_env(self.card, r.num_envs, asynchronous=False)
        try:
            writer = open_writer(self.out / "data", self.card, venv, append=True)
            held = writer.meta["total_steps"]
            if held >= target:
                # Resumed after collection: the saved record (lost only if the kill came between the
                # last write to the dataset and the record's, then the episodes go uncounted).
                row = {k: v for k, v in saved.items() if k != "round"} if saved is not None and saved["round"] == index \
                    else {"steps": held, "episodes": 0, "return_mean": None, "collect_seconds": 0.0}
                return {**row, "resumed": True}
            if index == 0:
                policy, name = RandomPolicy(venv.action_space, r.seed), "random"
            else:
                policy, name = self.agent(venv.single_action_space), f"mpc round {index}"
            stats = collect(venv, policy, writer, target - held, seed=r.seed + 1000 * index, progress=self.progress,
                            policy_name=name)
        finally:
            venv.close()
        finished = stats.returns  # episodes that ended within this round (unfinished ones are stored truncated)
        row = {"steps": writer.meta["total_steps"], "episodes": len(finished),
               "return_mean": float(np.mean(finished)) if finished else None, "collect_seconds": stats.seconds}
        if held > start:  # a killed process collected part of this round: its episodes are not counted here
            row["resumed"] = True
        self.record["collected"] = {"round": index, **row}
        write_json_atomic(self.record_path, self.record)
        return row

    def train_round(self, index: int) -> dict:
        r, data = self.cfg.run, ReplayDataset(self.out / "data")
        common = dict(val_fraction=self.cfg.data.val_fraction, device=self.device, progress=self.progress)
        start = time.perf_counter()
        stage1 = copy.deepcopy(self.cfg.stage1)  # this round's step target; the config stays as given
        stage1.optim.steps = r.stage1_steps + index * r.stage1_round_steps
        encoder_dir = self.out / "encoder"
        trainer1 = Stage1Trainer(stage1, data, encoder_dir, **common)
        row1 = trainer1.train(resume=(encoder_dir / CHECKPOINT_NAME).is_file())
        stage1_seconds = time.perf_counter() - start

        stage2 = copy.deepcopy(self.cfg.stage2)
        stage2.optim.steps = r.stage2_steps if index == 0 else r.stage2_round_steps
        run_dir, previous = self.world_model_dir(index), self.world_model_dir(index - 1)
        resume = (run_dir / CHECKPOINT_NAME).is_file()
        warm = load_checkpoint(previous) if index > 0 and not resume else None
        trainer2 = Stage2Trainer(stage2, load_checkpoint(encoder_dir), data, run_dir, clip_len=self.cfg.data.clip_len,
                                 warm_start=warm, **common)
        row2 = trainer2.train(resume=resume)
        return {"stage1_step": trainer1.step, "stage1_val_loss": row1.get("val_loss"),
                "stage2_val_latent": row2.get("val_latent"), "stage2_val_copy_last": row2.get("val_copy_last"),
                "stage2_val_reward": row2.get("val_reward"), "stage1_seconds": stage1_seconds,
                "stage2_seconds": time.perf_counter() - start - stage1_seconds}

    def world_model_dir(self, index: int) -> Path:
        return self.out / "world_model" / f"round-{index}"

    def agent(self, action_space) -> MPCAgent:
        """The MPC agent of the newest world model (also saved as out/agent.pt)."""
        index = len(self.record["rounds"]) - 1
        agent = MPCAgent.from_checkpoint(load_checkpoint(self.world_model_dir(index)), self.cfg.plan, action_space)
        agent.save(self.out / "agent.pt")
        return agent

    def evaluate(self) -> dict:
        r = self.cfg.run
        env = make_env(self.card)
        try:
            agent = self.agent(env.action_space)
            torch.manual_seed(self.cfg.plan.seed)
            stats, _ = run_episodes(env, agent, r.eval_episodes, seed=r.seed + 10**6, max_steps=r.eval_max_steps,
                                    measure=episode_measure(self.card, env))
        finally:
            env.close()
        return stats.summary(self.card)

    # ------------------------------------------------------------------ the loop
    def run(self) -> dict:
        r = self.cfg.run
        self.out.mkdir(parents=True, exist_ok=True)
        targets = round_targets(r.budget, r.seed_steps, r.round_steps)
        for index in range(len(self.record["rounds"]), len(targets)):
            start = time.perf_counter()
            # resumed (set when part of the round ran in a killed process): its seconds are a lower bound
            row = {"round": index, **self.collect_round(index, targets[index - 1] if index else 0, targets[index])}
            row.update(self.train_round(index))
            row["seconds"] = time.perf_counter() - start
            self.record["rounds"].append(row)
            write_json_atomic(self.record_path, self.record)
            self.report(row)
        if r.eval_episodes and self.record["eval"] is None:
            self.record["eval"] = self.evaluate()
            write_json_atomic(self.record_path, self.record)
        return self.record

    def report(self, row: dict) -> None:
        def fmt(key: str, spec: str = ".4f") -> str:  # None: nothing was left to train after a resume
            return "-" if row[key] is None else format(row[key], spec)

        print(f"round {row['round']}: {row['steps']} real steps, {row['episodes']} episodes collected "
              f"(return {fmt('return_mean', '.2f')}), stage-1 step {row['stage1_step']}, next-latent L1 "
              f"{fmt('stage2_val_latent')} (copy-last {fmt('stage2_val_copy_last')}), {row['seconds']:.0f} s", flush=True)
