"""The `wmrl` command as a user runs it: smoke runs, bad input (one line, exit 2), SIGKILL."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import minari
import numpy as np
import pytest
from conftest import run_cli

from wmrl.data.replay import ReplayDataset
from wmrl.data.store import data_dir


def assert_user_error(result, fragment):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("wmrl: error:"), result.stderr
    assert fragment in lines[0], lines[0]


def test_collect_and_info(tmp_path):
    out = tmp_path / "bo"
    r = run_cli("collect", "--env", "ALE/Breakout-v5", "--steps", 300, "--out", out, "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "collected 300 steps" in r.stdout
    r = run_cli("data", "info", out)
    assert r.returncode == 0, r.stderr
    assert "episodes" in r.stdout and "bytes/frame" in r.stdout and "breakout (ALE/Breakout-v5)" in r.stdout


def test_collect_from_config_with_two_async_envs(tmp_path):
    out = tmp_path / "re"
    r = run_cli("collect", "--config", "reacher", "--steps", 120, "--out", out, "--no-progress")
    assert r.returncode == 0, r.stderr
    data = ReplayDataset(out)
    assert data.episode_steps.sum() == 120 and data.frame_shape == (3, 64, 64)
    assert data.meta["wmrl"]["collections"][0]["num_envs"] == 2


@pytest.fixture
def user_cards(tmp_path):
    typo = tmp_path / "typo.yaml"
    typo.write_text("name: t\ngym_id: CartPole-v1\npixels: render\nframe_stak: 4\n")
    missing = tmp_path / "missing_pkg.yaml"
    missing.write_text("name: m\ngym_id: Foo-v0\nimports: [not_a_real_package_xyz]\nextra: foo\n")
    return typo, missing


def test_bad_input_is_one_line_and_exit_2(tmp_path, user_cards):
    typo, missing = user_cards
    out = tmp_path / "x"
    assert_user_error(run_cli("collect", "--env", "Pong-v99", "--out", out), "unknown env 'Pong-v99'")
    assert_user_error(run_cli("collect", "--env", typo, "--out", out), "unknown key 'frame_stak'")
    assert_user_error(run_cli("collect", "--env", missing, "--out", out), "pip install 'wmrl[foo]'")
    assert_user_error(run_cli("collect", "--env", tmp_path / "nope.yaml", "--out", out), "env card not found")
    assert_user_error(run_cli("collect", "--env", "breakout", "--policy", tmp_path / "m.zip", "--out", out),
                      "policy file not found")
    (tmp_path / "bad.zip").write_bytes(b"not a zip")
    assert_user_error(run_cli("collect", "--env", "breakout", "--policy", tmp_path / "bad.zip", "--out", out),
                      "not a Stable-Baselines3 model zip")
    assert_user_error(run_cli("collect", "--env", "breakout", "--steps", 0, "--out", out), "--steps must be >= 1")
    assert_user_error(run_cli("collect", "--config", tmp_path / "c.yaml", "--out", out), "config file not found")
    assert_user_error(run_cli("data", "info", tmp_path / "none"), "dataset not found")
    assert_user_error(run_cli("run", "--config", "breakout", "--out", out, "--device", "gpu"), "not a torch device")
    card = Path(__file__).parents[1] / "envs" / "breakout.yaml"
    (tmp_path / "badidx.yaml").write_text(card.read_text().replace("index: [72]", "index: [500]"))
    assert_user_error(run_cli("collect", "--env", tmp_path / "badidx.yaml", "--steps", 20, "--out", tmp_path / "b"),
                      "state field 'paddle_x' indexes [500] of 'ale_ram', which has 128 numbers")
    assert not (tmp_path / "b").exists()  # nothing was collected, so no empty dataset is left behind
    assert not out.exists()  # refused before anything was written


def test_existing_output_and_corrupt_dataset(tmp_path):
    out = tmp_path / "bo"
    assert run_cli("collect", "--env", "breakout", "--steps", 200, "--out", out, "--no-progress").returncode == 0
    before = (data_dir(out) / "metadata.json").read_text()
    assert_user_error(run_cli("collect", "--env", "breakout", "--steps", 50, "--out", out), "--append")
    assert (data_dir(out) / "metadata.json").read_text() == before, "a refused run must not touch the data"
    assert_user_error(run_cli("collect", "--env", "crafter", "--steps", 50, "--out", out, "--append"),
                      "collected from env card 'breakout'")
    part = data_dir(out) / "0" / "part-0.arrow"
    part.write_bytes(part.read_bytes()[:100])
    assert_user_error(run_cli("data", "info", out), "episode 0 of")


def test_sigkill_mid_run_loses_no_finished_episode(tmp_path):
    out = tmp_path / "bo"
    proc = subprocess.Popen([sys.executable, "-m", "wmrl", "collect", "--env", "breakout", "--steps", "10000000",
                             "--out", str(out), "--no-progress"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    meta_path = data_dir(out) / "metadata.json"
    deadline = time.time() + 120
    try:
        while time.time() < deadline:
            if meta_path.exists() and json.loads(meta_path.read_text())["total_episodes"] >= 4:
                break
            time.sleep(0.05)
        else:
            pytest.fail("collector wrote no episodes in time")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    data = ReplayDataset(out)  # readable as left, every episode intact
    assert data.num_episodes >= 4
    ds = minari.MinariDataset(data_dir(out))
    assert ds.total_episodes == data.num_episodes
    r = run_cli("collect", "--env", "breakout", "--steps", 100, "--out", out, "--append", "--no-progress")
    assert r.returncode == 0, r.stderr
    grown = ReplayDataset(out)
    assert grown.num_episodes > data.num_episodes
    np.testing.assert_array_equal(grown.frames[: len(data.frames)], data.frames)
    assert grown.meta["wmrl"]["collections"][1]["seed"] != 0, "appending without --seed picks fresh seeds"


def test_version_and_help_with_defaults():
    r = run_cli("--version")
    assert r.returncode == 0 and r.stdout.startswith("wmrl ")
    r = run_cli("run", "--help")
    assert r.returncode == 0 and "torch device: cpu or cuda[:N] (default: cpu)" in " ".join(r.stdout.split())
    r = run_cli("onex", "generate", "--help")
    assert "random seed (default: 0)" in " ".join(r.stdout.split())
