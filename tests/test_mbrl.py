"""`wmrl run`: rounds at a real-step budget, warm-started world models, resuming after a kill."""

import json
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import run_cli
from test_stage1 import TINY_YAML
from wmrl.mbrl import round_targets
from wmrl.train.checkpoint import load_checkpoint

TINY_RUN = TINY_YAML.replace("STEPS", "4") + """
stage2:
  model: {pool: [1, 1, 1], width: 32, depth: 1, heads: 2, max_steps: 8}
  rollout_steps: 2
  optim: {steps: 4, batch_size: 8, lr: 0.002, warmup_steps: 2}
  eval_every: 2
  checkpoint_every: 2
  val_batches: 1
data: {clip_len: 6, val_fraction: 0.5}
plan: {horizon: 3, population: 8, elites: 2, iterations: 1, explore: 0.1}
run: {loop: rounds, budget: 420, seed_steps: 300, round_steps: 60, stage1_steps: 4, stage1_round_steps: 2, stage2_steps: 4,
      stage2_round_steps: 2, eval_episodes: 1, eval_max_steps: 15}
"""


def test_round_targets_end_at_the_budget():
    assert round_targets(100_000, 10_000, 20_000) == [10_000, 30_000, 50_000, 70_000, 90_000, 100_000]
    assert round_targets(500, 1000, 100) == [500]


def test_run_rounds_warm_start_resume_and_errors(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_RUN.replace("data: {val_fraction: 0.5}\n", ""))
    out = tmp_path / "run"
    args = ["run", "--config", config, "--out", out, "--no-progress"]
    r = run_cli(*args)
    assert r.returncode == 0, r.stderr
    record = json.loads((out / "run.json").read_text())
    rounds = record["rounds"]
    assert [row["steps"] for row in rounds] == [300, 360, 420]  # the dataset's stored steps
    assert [row["stage1_step"] for row in rounds] == [4, 6, 8]  # the encoder keeps training
    assert rounds[1]["episodes"] >= 0 and record["eval"]["episodes"] == 1 and record["eval"]["lengths"] == [15]
    assert "evaluation return" in r.stdout and r.stdout.count("round ") == 3
    # Round 2 started from round 1's predictor (then trained 2 steps), over round 2's encoder.
    first, second = load_checkpoint(out / "world_model/round-1"), load_checkpoint(out / "world_model/round-2")
    encoder = load_checkpoint(out / "encoder")
    assert second["step"] == 2
    assert torch.equal(second["model"]["encoder.patch_embed.weight"], encoder["model"]["target_encoder.patch_embed.weight"])
    assert not torch.equal(first["model"]["encoder.patch_embed.weight"], second["model"]["encoder.patch_embed.weight"])
    assert (out / "agent.pt").is_file()

    # The same out again is refused; a longer budget continues the run from where it ended.
    r = run_cli(*args)
    assert r.returncode == 2 and "already holds a run" in r.stderr and r.stderr.count("\n") == 1
    r = run_cli("run", "--out", out, "--resume", "--budget", 480, "--no-progress")
    assert r.returncode == 0, r.stderr
    record = json.loads((out / "run.json").read_text())
    assert [row["steps"] for row in record["rounds"]] == [300, 360, 420, 480] and record["eval"]["episodes"] == 1
    r = run_cli("run", "--out", tmp_path / "nothing", "--resume")
    assert r.returncode == 2 and "nothing to resume" in r.stderr


def test_run_killed_mid_round_resumes_without_losing_or_repeating_steps(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_RUN.replace("data: {val_fraction: 0.5}\n", "").replace("eval_episodes: 1", "eval_episodes: 0"))
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "wmrl", "run", "--config", str(config), "--out", str(out), "--no-progress"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    # Kill it once round 1's collection is recorded, while that round trains.
    def collected_round():
        try:
            return json.loads((out / "run.json").read_text()).get("collected", {}).get("round")
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    while time.time() < deadline and collected_round() != 1:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed = json.loads((out / "run.json").read_text())
    assert killed["rounds"][0]["steps"] == 300 and len(killed["rounds"]) == 1
    collected = killed["collected"]  # round 1's collection, saved before its training began
    assert collected["round"] == 1 and collected["steps"] == 360 and collected["collect_seconds"] > 0
    r = run_cli("run", "--out", out, "--resume", "--no-progress")
    assert r.returncode == 0, r.stderr
    record = json.loads((out / "run.json").read_text())
    assert [row["steps"] for row in record["rounds"]] == [300, 360, 420] and record["eval"] is None
    # The resumed round keeps its collection record, flagged: its seconds are only this process's.
    assert all(record["rounds"][1][k] == v for k, v in collected.items() if k != "round")
    assert record["rounds"][1]["resumed"] is True and "resumed" not in record["rounds"][2]
    assert load_checkpoint(out / "world_model/round-2")["step"] == 2


@pytest.mark.parametrize("key", ["budgte: 5", "budget: 0"])
def test_run_config_errors_are_one_line(tmp_path, key):
    config = tmp_path / "bad.yaml"
    config.write_text(f"env: breakout\nrun: {{{key}}}\n")
    r = run_cli("run", "--config", config, "--out", tmp_path / "x")
    assert r.returncode == 2 and r.stderr.count("\n") == 1
