"""Stage 1: encoder shapes, masks, EMA, learning on tiny data, exact resume after SIGKILL, CLI."""

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from conftest import collect_random, run_cli

from wmrl.config import ExperimentConfig, from_dict, load_yaml
from wmrl.data.replay import ReplayDataset
from wmrl.errors import ConfigError
from wmrl.models.config import EncoderConfig, JEPAConfig, MaskConfig, PredictorConfig
from wmrl.models.jepa import JEPA
from wmrl.models.masks import sample_masks
from wmrl.models.config import SIZES
from wmrl.models.vit import VisionTransformer, sincos_3d
from wmrl.train.config import OptimConfig, Stage1Config
from wmrl.train.stage1 import Stage1Trainer

TINY_YAML = """
env: breakout
data: {val_fraction: 0.5}
stage1:
  model: {encoder: {size: micro, width: 32, depth: 1, heads: 2, patch: 12}, predictor: {width: 32, depth: 1, heads: 2}}
  mask: {strategy: multiblock, short_blocks: 3, short_scale: 0.15, long_blocks: 1, long_scale: 0.4}
  optim: {steps: STEPS, batch_size: 8, lr: 0.002, warmup_steps: 5}
  eval_every: 5
  checkpoint_every: 2
"""


def tiny_config(steps=40, patch=12) -> Stage1Config:
    """Patch 12 divides Breakout's 84x84 frames; pass 8 for the 64x64 cards."""
    return Stage1Config(model=JEPAConfig(EncoderConfig(width=32, depth=1, heads=2, patch=patch), PredictorConfig(32, 1, 2)),
                        mask=MaskConfig(short_blocks=3, long_blocks=1, long_scale=0.4),
                        optim=OptimConfig(steps=steps, batch_size=8, lr=0.002, warmup_steps=5), eval_every=10,
                        checkpoint_every=10, val_batches=1)


@pytest.fixture(scope="module")
def breakout_data(tmp_path_factory):
    return collect_random("breakout", tmp_path_factory.mktemp("s1") / "bo", 600)


def test_encoder_shapes_sizes_and_positions():
    enc = VisionTransformer(EncoderConfig(width=48, depth=1, heads=4), frames=4, channels=3, image_size=(64, 32))
    x = torch.randint(0, 255, (2, 4, 3, 64, 32), dtype=torch.uint8)
    assert enc.grid == (2, 8, 4) and enc(x).shape == (2, 64, 48)
    keep = torch.tensor([[0, 5, 9], [1, 2, 63]])
    assert enc(x, keep=keep).shape == (2, 3, 48)
    assert set(SIZES) >= {"tiny", "small", "base", "large", "huge", "giant"}
    assert EncoderConfig(size="base").dims() == (768, 12, 12)
    pos = sincos_3d((2, 8, 8), 96)
    assert pos.shape == (128, 96) and len(torch.unique(pos, dim=0)) == 128
    with pytest.raises(ValueError, match="not divisible"):
        VisionTransformer(EncoderConfig(tubelet=3), 4, 1, (64, 64))


@pytest.mark.parametrize("strategy", ["multiblock", "random", "spatial", "temporal"])
def test_masks_partition_tokens(strategy):
    grid, n = (2, 8, 8), 128
    masks = sample_masks(MaskConfig(strategy=strategy, ratio=0.75), grid, 16, np.random.default_rng(0))
    assert len(masks) == (2 if strategy == "multiblock" else 1)
    for context, target in masks:
        assert context.shape[0] == target.shape[0] == 16 and context.shape[1] > 0 and target.shape[1] > 0
        for c, t in zip(context, target):
            assert len(np.intersect1d(c, t)) == 0, "context and target overlap"
            assert c.max() < n and t.max() < n and (np.diff(c) > 0).all()
    context, target = masks[0]
    if strategy in ("random", "spatial"):
        assert target.shape[1] == round(0.75 * (n if strategy == "random" else 64)) * (1 if strategy == "random" else 2)
    if strategy == "spatial":  # tubes: a masked position is masked at every time step
        assert all(set(t[t < 64]) == set(t[t >= 64] - 64) for t in target)
    if strategy == "temporal":
        assert (target == np.arange(64, 128)).all() and (context == np.arange(64)).all()


def test_ema_update_and_loss_gradients():
    model = JEPA(JEPAConfig(EncoderConfig(width=32, depth=1, heads=2), PredictorConfig(32, 1, 2)), (4, 1, 16, 16))
    before = [p.clone() for p in model.target_encoder.parameters()]
    with torch.no_grad():
        for p in model.encoder.parameters():
            p.add_(1.0)
    model.update_target(0.9)
    for b, t, s in zip(before, model.target_encoder.parameters(), model.encoder.parameters()):
        torch.testing.assert_close(t, 0.9 * b + 0.1 * s)
    assert not any(p.requires_grad for p in model.target_encoder.parameters())
    x = torch.randint(0, 255, (4, 4, 1, 16, 16), dtype=torch.uint8)
    model.loss(x, sample_masks(MaskConfig(strategy="random"), model.grid, 4, np.random.default_rng(0))).backward()
    assert all(p.grad is None for p in model.target_encoder.parameters())
    assert model.predictor.mask_token.grad is not None


def test_loss_decreases_on_tiny_data(breakout_data, tmp_path):
    trainer = Stage1Trainer(tiny_config(steps=60), ReplayDataset(breakout_data), tmp_path / "run", progress=False)
    trainer.train()
    rows = map(json.loads, (tmp_path / "run" / "metrics.jsonl").read_text().splitlines())
    losses = [r["loss"] for r in rows if "loss" in r]
    assert len(losses) == 60
    assert np.mean(losses[-10:]) < 0.7 * np.mean(losses[:10])


def test_resume_after_sigkill_reproduces_losses(breakout_data, tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_YAML.replace("STEPS", "30"))
    args = ["train", "--stage", 1, "--config", config, "--data", breakout_data, "--no-progress"]
    assert run_cli(*args, "--out", tmp_path / "full").returncode == 0

    proc = subprocess.Popen([sys.executable, "-m", "wmrl", *map(str, args), "--out", str(tmp_path / "killed")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = tmp_path / "killed" / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (metrics.exists() and len(metrics.read_text().splitlines()) >= 12):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    r = run_cli(*args, "--out", tmp_path / "killed", "--resume")
    assert r.returncode == 0, r.stderr

    def losses(run):
        return [(row["step"], row.get("loss"), row.get("val_loss"))
                for row in map(json.loads, (tmp_path / run / "metrics.jsonl").read_text().splitlines())]

    assert losses("killed") == losses("full")
    assert len(losses("full")) == 30 + 6


def test_stage1_config_errors(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("env: breakout\nstage1: {optim: {stpes: 3}}\n")
    with pytest.raises(ConfigError, match="stage1.optim.stpes"):
        load_yaml(ExperimentConfig, path)
    with pytest.raises(ConfigError, match="encoder size 'enormous'"):
        from_dict(ExperimentConfig, {"env": "breakout", "stage1": {"model": {"encoder": {"size": "enormous"}}}})
    with pytest.raises(ConfigError, match="mask.ratio"):
        from_dict(ExperimentConfig, {"env": "breakout", "stage1": {"mask": {"ratio": 1.5}}})


def test_train_and_eval_cli(breakout_data, tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_YAML.replace("STEPS", "6"))
    run = tmp_path / "run"
    r = run_cli("train", "--stage", 1, "--config", config, "--data", breakout_data, "--out", run, "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "stage 1: step 6" in r.stdout and (run / "checkpoint.pt").is_file()
    r = run_cli("train", "--stage", 1, "--config", config, "--data", breakout_data, "--out", run)
    assert r.returncode == 2 and "--resume" in r.stderr
    r = run_cli("eval", "--stage", 1, "--checkpoint", run, "--data", breakout_data, "--max-rows", 300)
    assert r.returncode == 0, r.stderr
    assert "paddle_x" in r.stdout and "R² random init" in r.stdout
    result = json.loads((run / "eval_stage1.json").read_text())
    assert set(result["trained"]["r2"]) == {"paddle_x", "ball_x", "ball_y", "lives"}
    r = run_cli("eval", "--stage", 1, "--checkpoint", tmp_path / "nope", "--data", breakout_data)
    assert r.returncode == 2 and r.stderr.count("\n") == 1


def test_ddp_two_gloo_processes_keep_replicas_identical(breakout_data, tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_YAML.replace("STEPS", "6"))
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        "-m", "wmrl", "train", "--stage", "1", "--config", str(config), "--data", str(breakout_data),
                        "--out", str(tmp_path / "ddp"), "--no-progress"], capture_output=True, text=True, timeout=300,
                       env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    assert "2 processes, replica parameter spread 0" in r.stdout
    rows = [json.loads(line) for line in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    assert [row["replica_spread"] for row in rows if "replica_spread" in row] == [0.0, 0.0]
    assert sum("loss" in row for row in rows) == 6  # rank 0 alone logs


def test_tri_temporal_objectives_train(breakout_data, tmp_path):
    from wmrl.models.config import TriTemporalConfig

    cfg = tiny_config(steps=4)
    cfg.model.tri_temporal = TriTemporalConfig(enabled=True, soon=1, eventually=3)
    trainer = Stage1Trainer(cfg, ReplayDataset(breakout_data), tmp_path / "tri", progress=False)
    clip = torch.from_numpy(trainer.sampler.sample().obs)
    assert clip.shape[1] == 4  # clips reach the EVENTUALLY stack
    masks = sample_masks(cfg.mask, trainer.model.grid, len(clip), np.random.default_rng(0))
    terms = trainer.model.tri_temporal_losses(clip, masks)
    assert set(terms) == {"now", "soon", "eventually"} and all(torch.isfinite(v) for v in terms.values())
    total = trainer.model(clip, masks)
    torch.testing.assert_close(total, terms["now"] + terms["soon"] + 0.5 * terms["eventually"])
    total.backward()
    assert trainer.model.outcome.queries.grad is not None and trainer.model.soon_shift.grad is not None
    assert np.isfinite(trainer.train()["val_loss"])
    with pytest.raises(ConfigError, match="soon < eventually"):
        from_dict(ExperimentConfig, {"env": "breakout", "stage1": {"model": {"tri_temporal": {"soon": 4, "eventually": 2}}}})
