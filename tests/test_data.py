"""Replay datasets: invariants, lossless stacks, Minari compatibility, sampler boundaries, faults."""

import json

import gymnasium as gym
import minari
import numpy as np
import pytest
from conftest import RecordingPolicy

from wmrl.data.collect import collect, open_writer
from wmrl.data.replay import ReplayDataset, WindowSampler
from wmrl.data.store import DatasetWriter, data_dir, read_episode
from wmrl.envs import load_card, make_vector_env
from wmrl.errors import DatasetError
from wmrl.types import Episode


def collect_breakout(out, steps=400, seed=0, num_envs=1, asynchronous=False, append=False):
    card = load_card("breakout")
    venv = make_vector_env(card, num_envs, asynchronous=asynchronous)
    try:
        writer = open_writer(out, card, venv, append)
        policy = RecordingPolicy(venv.action_space, seed)
        stats = collect(venv, policy, writer, steps, seed=seed, progress=False)
    finally:
        venv.close()
    return policy, stats


@pytest.fixture(scope="module")
def breakout(tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "breakout"
    policy, stats = collect_breakout(out)
    return out, policy, stats


def test_episode_invariants_and_counts(breakout):
    out, _, stats = breakout
    data = ReplayDataset(out)
    assert stats.steps == 400 == data.episode_steps.sum() == data.meta["total_steps"]
    assert data.num_episodes == stats.episodes == data.meta["total_episodes"] >= 2
    for i in range(data.num_episodes):
        ep = read_episode(out, i, data.frame_shape)
        assert len(ep.frames) == len(ep.actions) + 1 == len(ep.states)
        assert ep.terminations[-1] or ep.truncations[-1]
    assert data.truncated[data.episode_start[-1] + data.episode_steps[-1] - 1], "budget cut is stored as truncation"
    assert data.seeds[0] == 0


def test_stacks_rebuilt_on_read_equal_what_the_policy_saw(breakout):
    out, policy, _ = breakout
    data = ReplayDataset(out)
    seen = np.concatenate(policy.seen)  # [steps, K, C, H, W]
    rows = np.flatnonzero(~data.is_last)  # every observation the policy acted on, in order
    assert len(rows) == len(seen)
    np.testing.assert_array_equal(data.stacks(rows), seen)


def test_minari_reads_the_same_data(breakout, monkeypatch):
    out, _, _ = breakout
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(out.parent))
    ds = minari.load_dataset(out.name)
    data = ReplayDataset(out)
    assert ds.total_episodes == data.num_episodes and ds.total_steps == data.episode_steps.sum()
    for ep in ds.iterate_episodes():
        ours = read_episode(out, ep.id, data.frame_shape)
        np.testing.assert_array_equal(ep.observations, ours.frames)
        np.testing.assert_array_equal(ep.actions, ours.actions)
        np.testing.assert_array_equal(ep.rewards, ours.rewards)
        np.testing.assert_array_equal(ep.terminations, ours.terminations)
        np.testing.assert_array_equal(ep.infos["state"], ours.states)


def test_same_seed_same_dataset_sync_or_async(tmp_path):
    collect_breakout(tmp_path / "a", steps=300, num_envs=2, asynchronous=False)
    collect_breakout(tmp_path / "b", steps=300, num_envs=2, asynchronous=True)
    collect_breakout(tmp_path / "c", steps=300, num_envs=2, seed=1)
    a, b, c = (ReplayDataset(tmp_path / n) for n in "abc")
    for name in ("frames", "actions", "rewards", "terminated", "states"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert sorted(s for s in a.seeds if s is not None) == [0, 1]  # first episode of each env
    assert not (a.frames.shape == c.frames.shape and np.array_equal(a.frames, c.frames))


def test_append_grows_and_refuses_without_flag(tmp_path):
    out = tmp_path / "d"
    collect_breakout(out, steps=150)
    with pytest.raises(DatasetError, match="--append"):
        collect_breakout(out, steps=10)
    first = ReplayDataset(out)
    collect_breakout(out, steps=150, seed=7, append=True)
    data = ReplayDataset(out)
    assert data.episode_steps.sum() == 300
    np.testing.assert_array_equal(data.frames[: len(first.frames)], first.frames)
    assert len(data.meta["wmrl"]["collections"]) == 2


def synthetic_dataset(root, lengths, k=3):
    """Episodes whose frames and states say (episode, step): frame value = step, state = [ep, step]."""
    writer = DatasetWriter.create(root, gym.spaces.Box(0, 255, (1, 8, 8), np.uint8), gym.spaces.Discrete(3),
                                  {"card": {"name": "synthetic", "gym_id": "none"}, "frame_stack": k})
    writer.set_state_layout([("episode", 1), ("step", 1)])
    for e, n in enumerate(lengths):
        steps = np.arange(n + 1)
        frames = np.broadcast_to(steps[:, None, None, None] % 256, (n + 1, 1, 8, 8)).astype(np.uint8)
        states = np.stack([np.full(n + 1, e), steps], 1).astype(np.float32)
        terminated = np.zeros(n, bool)
        terminated[-1] = True
        writer.write(Episode(frames, steps[:n] % 3, np.ones(n), terminated, np.zeros(n, bool), states))
    return writer


def test_sampler_never_crosses_episodes_and_pads_stacks(tmp_path):
    synthetic_dataset(tmp_path / "s", [3, 20, 7, 12, 1])
    data = ReplayDataset(tmp_path / "s")
    sampler = WindowSampler(data, clip_len=6, batch_size=64, seed=0)
    assert len(sampler) == (21 - 5) + (8 - 5) + (13 - 5)  # episodes with >= 6 observations
    for _ in range(20):
        b = sampler.sample()
        assert b.obs.shape == (64, 6, 3, 1, 8, 8) and b.action.shape == (64, 6) and b.state.shape == (64, 6, 2)
        episode, step = b.state[..., 0], b.state[..., 1]
        assert (episode == episode[:, :1]).all(), "a clip crossed an episode boundary"
        assert (np.diff(step, axis=1) == 1).all()
        newest = b.obs[:, :, -1, 0, 0, 0]
        np.testing.assert_array_equal(newest, step)
        expected = np.maximum(step[..., None] + np.arange(-2, 1), 0)  # padded with the first frame
        np.testing.assert_array_equal(b.obs[..., 0, 0, 0], expected)
        assert not b.is_last[:, :-1].any()
        np.testing.assert_array_equal(b.reward[b.is_last], 0.0)


def test_split_is_by_episode_and_stable_under_append(tmp_path):
    writer = synthetic_dataset(tmp_path / "s", [5] * 12)
    train, val = ReplayDataset(tmp_path / "s").split(0.25)
    assert set(train).isdisjoint(val) and len(train) + len(val) == 12 and len(val) == 3
    synthetic_dataset_more = [5] * 8
    for n in synthetic_dataset_more:
        steps = np.arange(n + 1)
        writer.write(Episode(np.zeros((n + 1, 1, 8, 8), np.uint8), steps[:n] % 3, np.ones(n),
                             np.eye(n, dtype=bool)[-1], np.zeros(n, bool), np.zeros((n + 1, 2), np.float32)))
    train2, val2 = ReplayDataset(tmp_path / "s").split(0.25)
    assert set(val) <= set(val2) and set(train) <= set(train2)
    with pytest.raises(DatasetError, match="no episode"):
        WindowSampler(ReplayDataset(tmp_path / "s"), clip_len=50, batch_size=2)


def test_corrupt_or_missing_dataset_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        ReplayDataset(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="not a wmrl dataset"):
        ReplayDataset(tmp_path / "empty")
    synthetic_dataset(tmp_path / "s", [10, 10, 10])
    part = data_dir(tmp_path / "s") / "1" / "part-0.arrow"
    part.write_bytes(part.read_bytes()[:200])
    with pytest.raises(DatasetError, match="episode 1 of .* is unreadable"):
        ReplayDataset(tmp_path / "s")
    (data_dir(tmp_path / "s") / "metadata.json").write_text("{not json")
    with pytest.raises(DatasetError, match="unreadable"):
        ReplayDataset(tmp_path / "s")


def test_writer_repairs_an_interrupted_write(tmp_path):
    root = tmp_path / "s"
    synthetic_dataset(root, [4, 4, 4])
    meta_path = data_dir(root) / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["total_episodes"], meta["total_steps"] = 2, 8  # killed after the rename, before metadata
    meta_path.write_text(json.dumps(meta))
    (data_dir(root) / ".tmp-3").mkdir()  # and a half-written next episode
    (data_dir(root) / ".tmp-3" / "part-0.arrow").write_bytes(b"garbage")
    assert ReplayDataset(root).num_episodes == 2  # readable as it stands
    writer = DatasetWriter.open(root)
    assert writer.total_episodes == 3 and writer.meta["total_steps"] == 12
    assert not (data_dir(root) / ".tmp-3").exists()
    assert ReplayDataset(root).num_episodes == 3
