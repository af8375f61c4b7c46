import random

import numpy as np
import pytest
import torch

from wmrl.errors import UserError
from wmrl.train.checkpoint import (CHECKPOINT_NAME, CheckpointError, generator_state, load_checkpoint, rng_state,
                                   save_checkpoint, set_generator_state, set_rng_state)


def _assert_equal(a, b):
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys()
        for k in a:
            _assert_equal(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b)
        for x, y in zip(a, b):
            _assert_equal(x, y)
    else:
        assert type(a) is type(b) and a == b


def _payload():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(3, 4)).square().sum().backward()
    opt.step()
    return {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "step": 17,
        "loss": 0.25,
        "config": {"name": "pusht", "layers": [1, 2, 3], "nested": {"lr": 1e-3, "tags": ["a", "b"]}, "none": None},
        "rng": rng_state(),
        "generator": generator_state(np.random.default_rng(3)),
    }


def test_round_trip_weights_only(tmp_path):
    payload = _payload()
    assert payload["optimizer"]["state"]  # AdamW has moments after one step
    save_checkpoint(tmp_path / "run" / CHECKPOINT_NAME, payload)  # parent dirs are created
    # load_checkpoint always uses weights_only=True; check that plain torch.load agrees too
    raw = torch.load(tmp_path / "run" / CHECKPOINT_NAME, weights_only=True)
    _assert_equal(payload, raw)
    _assert_equal(payload, load_checkpoint(tmp_path / "run"))  # a run directory works too


def test_save_is_atomic_and_replaces_whole(tmp_path):
    path = tmp_path / CHECKPOINT_NAME
    save_checkpoint(path, {"w": torch.zeros(10_000), "old": 1})
    save_checkpoint(path, {"w": torch.ones(3)})
    assert sorted(p.name for p in tmp_path.iterdir()) == [CHECKPOINT_NAME]  # no temp file left behind
    loaded = load_checkpoint(path)
    assert loaded.keys() == {"w"} and torch.equal(loaded["w"], torch.ones(3))


def test_failed_save_keeps_old_checkpoint(tmp_path):
    path = tmp_path / CHECKPOINT_NAME
    save_checkpoint(path, {"step": 1})
    with pytest.raises(Exception):
        save_checkpoint(path, {"bad": lambda: None})  # unpicklable: the write fails midway
    assert load_checkpoint(path) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == [CHECKPOINT_NAME]


@pytest.mark.parametrize("keep", [0.5, -5, 10, 0])
def test_truncated_checkpoint(tmp_path, keep):
    path = tmp_path / CHECKPOINT_NAME
    save_checkpoint(path, _payload())
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep) if isinstance(keep, float) else keep])
    with pytest.raises(CheckpointError, match="corrupt or truncated") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    assert isinstance(info.value, UserError)


def test_garbage_checkpoint(tmp_path):
    path = tmp_path / CHECKPOINT_NAME
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(path)
    torch.save([1, 2], path)  # loads fine, but is not a dict
    with pytest.raises(CheckpointError, match="not a wmrl checkpoint"):
        load_checkpoint(path)


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")
    with pytest.raises(CheckpointError, match=f"without a {CHECKPOINT_NAME}"):
        load_checkpoint(tmp_path)


def test_unsafe_payload_refused(tmp_path):
    path = tmp_path / "x.pt"
    torch.save({"obj": np.arange(3)}, path)  # an ndarray is not weights_only-loadable
    with pytest.raises(CheckpointError, match="weights_only=True refuses: Unsupported global"):
        load_checkpoint(path)


def _draws(gen):
    return (random.random(), random.gauss(0, 1), np.random.rand(3).tolist(), np.random.randn(),
            torch.rand(4).tolist(), gen.random(3).tolist(), gen.integers(0, 1 << 62))


@pytest.mark.parametrize("bit_generator", [np.random.PCG64, np.random.MT19937, np.random.Philox, np.random.SFC64])
def test_rng_round_trip(tmp_path, bit_generator):
    gen = np.random.Generator(bit_generator(7))
    random.gauss(0, 1)  # leaves a cached gaussian in Python's and NumPy's state
    np.random.randn()
    save_checkpoint(tmp_path / "c.pt", {"rng": rng_state(), "gen": generator_state(gen)})
    first = _draws(gen)
    state = load_checkpoint(tmp_path / "c.pt")
    set_rng_state(state["rng"])
    set_generator_state(gen, state["gen"])
    assert _draws(gen) == first


def test_generator_kind_mismatch():
    state = generator_state(np.random.default_rng(0))
    with pytest.raises(CheckpointError, match="PCG64"):
        set_generator_state(np.random.Generator(np.random.MT19937(0)), state)
