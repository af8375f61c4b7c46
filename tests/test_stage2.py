"""Stage 2: causal mask, rollout shapes, two-hot heads, learning on tiny data, save/load, resume, CLI."""

import json

import numpy as np
import pytest
import torch
from conftest import collect_random, run_cli

from wmrl.config import ExperimentConfig, from_dict
from wmrl.data.replay import ReplayDataset
from wmrl.errors import ConfigError
from wmrl.models.ac_predictor import block_causal_mask
from wmrl.models.config import EncoderConfig, WorldModelConfig
from wmrl.models.heads import TwoHot
from wmrl.models.vit import VisionTransformer
from wmrl.models.world_model import WorldModel
from wmrl.train.checkpoint import load_checkpoint
from wmrl.train.config import OptimConfig, Stage2Config
from wmrl.train.stage1 import Stage1Trainer
from wmrl.train.stage2 import Stage2Trainer, continuation, lambda_returns, state_columns
from test_stage1 import TINY_YAML, tiny_config

TINY_STAGE2 = """
stage2:
  model: {pool: [1, 1, 1], width: 32, depth: 1, heads: 2, max_steps: 8}
  rollout_steps: 2
  optim: {steps: STEPS2, batch_size: 8, lr: 0.002, warmup_steps: 2}
  eval_every: 5
  checkpoint_every: 3
  val_batches: 1
"""


def tiny_world_model(discrete=True, proprio=0, value=True, step_tokens="per_latent") -> WorldModel:
    torch.manual_seed(0)
    encoder = VisionTransformer(EncoderConfig(width=16, depth=1, heads=2), 4, 1, (16, 16))
    return WorldModel(WorldModelConfig(width=32, depth=2, heads=2, max_steps=8, value=value, step_tokens=step_tokens),
                      encoder, 4 if discrete else 2, discrete, proprio)


@pytest.fixture(scope="module")
def encoder_run(tmp_path_factory):
    """A tiny Breakout dataset (with lives) and a stage-1 encoder trained on it for a few steps."""
    root = tmp_path_factory.mktemp("s2")
    collect_random("breakout", root / "bo", 600)
    Stage1Trainer(tiny_config(steps=4), ReplayDataset(root / "bo"), root / "enc", progress=False).train()
    return root / "bo", root / "enc"


def test_block_causal_mask():
    mask = block_causal_mask(3, 2)
    assert mask.shape == (6, 6)
    assert mask[0, 1] and mask[1, 0] and not mask[1, 2] and mask[5, 0] and not mask[2, 4]


@pytest.mark.parametrize("step_tokens", ["per_latent", "single"])
@pytest.mark.parametrize("discrete", [True, False])
def test_future_inputs_never_change_past_outputs(discrete, step_tokens):
    wm = tiny_world_model(discrete, proprio=3, step_tokens=step_tokens).eval()
    with torch.no_grad():  # output layers start at zero; make every output depend on its inputs
        for p in wm.parameters():
            if p.ndim == 2 and not p.any():
                p.normal_()
    z = torch.randn(2, 6, wm.num_latents, wm.latent_dim)
    action = torch.randint(0, 4, (2, 6)) if discrete else torch.randn(2, 6, 2)
    proprio = torch.randn(2, 6, 3)
    before = wm.predict(z, action, proprio)
    z2, a2, p2 = z.clone(), action.clone(), proprio.clone()
    z2[:, 4:] += 5.0
    p2[:, 4:] -= 3.0
    a2[:, 4:] = (a2[:, 4:] + 1) % 4 if discrete else a2[:, 4:] + 1
    after = wm.predict(z2, a2, p2)
    for b, a in zip(before, after):
        torch.testing.assert_close(b[:, :4], a[:, :4])
        assert not torch.allclose(b[:, 4:], a[:, 4:])


def test_rollout_shapes_and_consistency_with_teacher_forcing():
    wm = tiny_world_model().eval()
    obs = torch.randint(0, 255, (3, 4, 1, 16, 16), dtype=torch.uint8)
    z0 = wm.encode(obs)
    assert z0.shape == (3, wm.num_latents, wm.latent_dim)
    actions = torch.randint(0, 4, (3, 5))
    with torch.no_grad():
        wm.predictor.latent_out.weight.normal_(std=0.1)
        z, reward, cont = wm.rollout(z0, actions)
        assert z.shape == (3, 5, wm.num_latents, wm.latent_dim) and reward.shape == cont.shape == (3, 5)
        assert ((cont > 0) & (cont < 1)).all()
        # Feeding the imagined latents back in teacher-forced mode reproduces them.
        history = torch.cat([z0[:, None], z[:, :-1]], 1)
        torch.testing.assert_close(wm.predict(history, actions)[0], z, atol=1e-5, rtol=1e-5)
        # A longer rollout than max_steps slides its window.
        assert wm.rollout(z0, torch.randint(0, 4, (3, 12)))[0].shape[1] == 12
    with pytest.raises(ValueError, match="needs more than"):
        wm.rollout(torch.stack([z0, z0], 1), actions[:, :1])


@pytest.mark.parametrize("step_tokens", ["per_latent", "single"])
@pytest.mark.parametrize("discrete", [True, False])
def test_cached_rollout_equals_recomputing_the_window(discrete, step_tokens):
    wm = tiny_world_model(discrete=discrete, proprio=0 if discrete else 3, step_tokens=step_tokens).eval()
    with torch.no_grad():
        for p in wm.parameters():
            if p.ndim == 2 and not p.any():
                p.normal_(std=0.1)
        history = torch.randn(4, 3, wm.num_latents, wm.latent_dim)  # C = 3 observed steps
        actions = torch.randint(0, 4, (4, 2 + 5)) if discrete else torch.randn(4, 2 + 5, 2)
        proprio = None if discrete else torch.randn(4, 3, 3)
        for c in (1, 3):  # from the latest latent alone, and from a history
            cached = wm._rollout_cached(history[:, -c:], actions[:, 3 - c:], None if proprio is None else proprio[:, -c:])
            window = wm._rollout_sliding(history[:, -c:], actions[:, 3 - c:], None if proprio is None else proprio[:, -c:])
            for a, b in zip(cached, window):
                assert a.shape[1] == 5
                torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
        # Past the window (max_steps 8) the rollout slides, recomputing.
        z, reward, cont = wm.rollout(history[:, -1], actions[:, :1].repeat(1, 12) if discrete else actions[:, :1].repeat(1, 12, 1),
                                     None if proprio is None else proprio[:, -1:])
        assert z.shape[1] == reward.shape[1] == 12


@pytest.mark.parametrize("step_tokens", ["per_latent", "single"])
def test_shared_prefix_rollout_equals_the_plain_one(step_tokens):
    wm = tiny_world_model(step_tokens=step_tokens).eval()
    with torch.no_grad():
        for p in wm.parameters():
            if p.ndim == 2 and not p.any():
                p.normal_(std=0.1)
        z = torch.randn(3, wm.num_latents, wm.latent_dim)  # three envs' start latents
        actions = torch.randint(0, 4, (40, 5))
        actions[:10] = actions[10:20]  # duplicates, and many shared prefixes
        actions[20:30, :3] = actions[0, :3]
        start = torch.arange(40) % 3  # the same sequences from different starts stay apart
        last, reward, cont = wm.rollout_shared(z, actions, start)
        zs, reward_ref, cont_ref = wm.rollout(z[start], actions)
        torch.testing.assert_close(last, zs[:, -1], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(reward, reward_ref, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(cont, cont_ref, atol=1e-5, rtol=1e-4)


def test_two_hot_round_trip():
    th = TwoHot(81, 10.0)
    y = torch.tensor([0.0, 1.0, 4.0, 7.0, -3.5, 250.0])
    target = th.encode(y)
    torch.testing.assert_close(target.sum(-1), torch.ones(6))
    assert ((target > 0).sum(-1) <= 2).all()
    torch.testing.assert_close(th.decode(torch.log(target + 1e-12)), y, rtol=1e-3, atol=1e-3)


def test_lambda_returns_span_one_step_td_to_the_clip_return():
    reward = torch.tensor([[0.0, 1.0, 0.0, 2.0]])
    cont = torch.tensor([[1.0, 1.0, 0.0, 1.0]])  # a life is lost after transition 2
    bootstrap = torch.tensor([[0.5, 0.25, 3.0, 4.0]])  # V(z_{t+1})
    td = lambda_returns(reward, cont, bootstrap, 0.9, 0.0)
    torch.testing.assert_close(td, reward + 0.9 * cont * bootstrap)
    full = lambda_returns(reward, cont, bootstrap, 0.9, 1.0)
    # lambda = 1: rewards summed up to the life loss, nothing after it; the last step bootstraps
    torch.testing.assert_close(full, torch.tensor([[0.9, 1.0, 0.0, 2.0 + 0.9 * 4.0]]))
    half = lambda_returns(reward, cont, bootstrap, 0.9, 0.5)
    assert torch.all((half - td).abs() <= (full - td).abs() + 1e-6)  # lies between the two


def test_life_loss_ends_continuation(encoder_run):
    data = ReplayDataset(encoder_run[0])
    lives = data.states[:, state_columns(data, ["lives"])[0]]
    lost = np.flatnonzero((lives[1:] < lives[:-1]) & ~data.is_last[:-1])
    assert len(lost) > 0, "a 600-step random Breakout run loses lives"
    cont = continuation(data, life_loss=True)
    assert (cont[lost] == 0).all() and (cont[data.terminated] == 0).all()
    mid_game = lost[~data.terminated[lost]]  # the last life lost is also the game-over terminal
    assert len(mid_game) > 0 and continuation(data, life_loss=False)[mid_game].min() == 1.0


def tiny_stage2(steps: int) -> Stage2Config:
    return Stage2Config(model=WorldModelConfig(pool=(1, 1, 1), width=32, depth=1, heads=2, max_steps=8), rollout_steps=2,
                        optim=OptimConfig(steps=steps, batch_size=8, lr=0.003, warmup_steps=2), eval_every=10,
                        checkpoint_every=10, val_batches=1)


def test_stage2_learns_and_checkpoint_rebuilds_the_model(encoder_run, tmp_path):
    data_root, enc = encoder_run
    trainer = Stage2Trainer(tiny_stage2(60), load_checkpoint(enc), ReplayDataset(data_root), tmp_path / "wm",
                            clip_len=6, val_fraction=0.5, progress=False)
    assert not any(p.requires_grad for p in trainer.model.encoder.parameters())
    encoder_before = {k: v.clone() for k, v in trainer.model.encoder.state_dict().items()}
    trainer.train()
    rows = [json.loads(line) for line in (tmp_path / "wm" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert len(losses) == 60 and np.mean(losses[-10:]) < 0.7 * np.mean(losses[:10])
    for k, v in trainer.model.encoder.state_dict().items():  # frozen means frozen
        torch.testing.assert_close(v, encoder_before[k])

    rebuilt = WorldModel.from_checkpoint(load_checkpoint(tmp_path / "wm"))
    obs = torch.from_numpy(ReplayDataset(data_root).stacks(np.arange(5)))
    actions = torch.randint(0, 4, (5, 4))
    model = trainer.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.encode(obs), model.encode(obs))
        for a, b in zip(rebuilt.rollout(rebuilt.encode(obs), actions), model.rollout(model.encode(obs), actions)):
            torch.testing.assert_close(a, b)
    # Standardised latents: about zero mean, unit spread over the dataset.
    assert abs(float(trainer.z.mean())) < 0.1 and 0.5 < float(trainer.z.std()) < 1.5


def test_stage2_cli_train_resume_and_errors(encoder_run, tmp_path):
    data_root, enc = encoder_run
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_YAML.replace("STEPS", "4").replace("val_fraction: 0.5", "val_fraction: 0.5, clip_len: 6")
                      + TINY_STAGE2.replace("STEPS2", "6"))
    args = ["train", "--stage", 2, "--config", config, "--data", data_root, "--no-progress"]
    r = run_cli(*args, "--encoder", enc, "--out", tmp_path / "full")
    assert r.returncode == 0, r.stderr
    assert "stage 2: step 6" in r.stdout and "copy-last" in r.stdout
    r = run_cli("eval", "--stage", 2, "--checkpoint", tmp_path / "full", "--data", data_root, "--horizon", 3, "--clips", 16)
    assert r.returncode == 0, r.stderr
    assert "teacher-forced" in r.stdout and "termination AUC" in r.stdout
    result = json.loads((tmp_path / "full" / "eval_stage2.json").read_text())
    assert len(result["open_loop"]) == len(result["copy_first"]) == 3 and result["clips"] == 16
    # Step 1 of the open-loop rollout is the teacher-forced step 1; copy-first there is copy-last.
    assert result["open_loop"][0] == pytest.approx(result["teacher_forced"][0], rel=1e-5)
    assert result["copy_first"][0] == pytest.approx(result["copy_last"][0])
    assert (tmp_path / "full" / "eval_stage2.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    r = run_cli("eval", "--stage", 2, "--checkpoint", tmp_path / "full", "--data", data_root, "--horizon", 2,
                "--clips", 8, "--video", tmp_path / "imagined.mp4")
    assert r.returncode == 0, r.stderr
    import av

    with av.open(str(tmp_path / "imagined.mp4")) as container:  # H.264 in yuv420p: plays in a browser
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    assert len(frames) == 4 * 3 and frames[0].shape == (84 * 4, 2 * 84 * 4, 3)  # 4 clips of horizon + 1
    r = run_cli("eval", "--stage", 2, "--checkpoint", tmp_path / "full", "--data", data_root, "--horizon", 50)
    assert r.returncode == 2 and "--horizon" in r.stderr

    # Stopped after 3 steps (the checkpoint there), resumed: the same losses as the full run.
    r = run_cli(*args, "--encoder", enc, "--out", tmp_path / "part", "--steps", 3)
    assert r.returncode == 0, r.stderr
    part_cfg = json.loads((tmp_path / "part" / "config.json").read_text())
    assert part_cfg["stage2"]["optim"]["steps"] == 3
    r = run_cli(*args, "--encoder", enc, "--out", tmp_path / "part", "--resume")
    assert r.returncode == 0, r.stderr

    def losses(run):  # training rows only: the shorter first leg also validated at its last step
        return [(row["step"], row["loss"], row["latent"], row["reward"])
                for row in map(json.loads, (tmp_path / run / "metrics.jsonl").read_text().splitlines()) if "loss" in row]

    assert len(losses("full")) == 6 and losses("part") == losses("full")

    r = run_cli(*args, "--out", tmp_path / "x")
    assert r.returncode == 2 and "--encoder" in r.stderr and r.stderr.count("\n") == 1
    r = run_cli(*args, "--encoder", data_root, "--out", tmp_path / "y")
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    r = run_cli(*args, "--encoder", tmp_path / "full", "--out", tmp_path / "z")
    assert r.returncode == 2 and "stage-1" in r.stderr


def test_auc():
    from wmrl.eval.world_model import auc

    label = np.array([0, 0, 1, 1, 0, 1], bool)
    assert auc(np.array([0.1, 0.2, 0.8, 0.9, 0.3, 0.7]), label) == 1.0
    assert auc(np.array([0.9, 0.8, 0.1, 0.2, 0.7, 0.3]), label) == 0.0
    assert auc(np.array([0.1, 0.6, 0.5, 0.9, 0.3, 0.2]), label) == pytest.approx(6 / 9)  # pairs won: 0.5 beats 2, 0.9 beats 3, 0.2 beats 1
    assert np.isnan(auc(np.ones(3), np.zeros(3, bool)))
    assert auc(np.ones(6), label) == auc(np.ones(6), label[::-1]) == 0.5  # ties count half, whatever the order
    assert auc(np.array([0.1, 0.1, 0.5, 0.1, 0.1, 0.9]), label) == pytest.approx(7.5 / 9)  # 0.5, 0.9 beat all; 0.1 ties 3


def test_stage2_config_errors():
    with pytest.raises(ConfigError, match="stage2.model.widht"):
        from_dict(ExperimentConfig, {"env": "breakout", "stage2": {"model": {"widht": 3}}})
    with pytest.raises(ConfigError, match="pool"):
        from_dict(ExperimentConfig, {"env": "breakout", "stage2": {"model": {"pool": [1, 0, 2]}}})
    with pytest.raises(ConfigError, match="rollout_steps"):
        from_dict(ExperimentConfig, {"env": "breakout", "stage2": {"rollout_steps": 0}})


def test_stage2_ddp_two_gloo_processes_keep_replicas_identical(encoder_run, tmp_path):
    import os
    import subprocess
    import sys

    data_root, enc = encoder_run
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_YAML.replace("STEPS", "4").replace("val_fraction: 0.5", "val_fraction: 0.5, clip_len: 6")
                      + TINY_STAGE2.replace("STEPS2", "5"))
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        "-m", "wmrl", "train", "--stage", "2", "--config", str(config), "--data", str(data_root),
                        "--encoder", str(enc), "--out", str(tmp_path / "ddp"), "--no-progress"],
                       capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    assert "2 processes, replica parameter spread 0" in r.stdout
    rows = [json.loads(line) for line in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    assert [row["replica_spread"] for row in rows if "replica_spread" in row] == [0.0]
    assert sum("loss" in row for row in rows) == 5  # rank 0 alone logs
