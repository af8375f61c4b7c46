"""VPT shards: segments written by the test as VPT ships them (H.264 mp4 from PyAV, jsonl lines with
the contractor logs' keys, WebDataset tars or folders), actions checked against values worked out
by hand, the scaler against numpy, bad segments skipped and counted, and stage 2 learning on them."""

from __future__ import annotations

import io
import json
import tarfile

import av
import numpy as np
import pytest

from wmrl.cli import main
from wmrl.errors import DatasetError
from wmrl.offline.vpt import (CONTINUOUS, FULL_NAMES, LAYOUTS, ActionScaler, RunningMoments, VptConfig, fit_scaler,
                              open_vpt, parse_log, step_actions, synthetic_segment, write_shard)

IDENTITY = dict(names=list(CONTINUOUS), mean=[0.0] * 4, std=[1.0] * 4, count=1)


def line(tick, dx=0.0, dy=0.0, keys=(), buttons=(), hotbar=0, yaw=0.0, pitch=0.0, gui=False):
    """A contractor log line, every field as VPT records it."""
    return {"mouse": {"x": 640.0, "y": 360.0, "dx": dx, "dy": dy, "scaledX": dx, "scaledY": dy, "dwheel": 0.0,
                      "buttons": list(buttons), "newButtons": []},
            "keyboard": {"keys": [f"key.keyboard.{k}" for k in keys], "newKeys": [], "chars": ""},
            "isGuiOpen": gui, "isGuiInventory": False, "hotbar": hotbar, "yaw": yaw, "pitch": pitch,
            "xpos": 10.0 + tick, "ypos": 64.0, "zpos": -3.0, "tick": tick, "milli": 1650000000000 + 50 * tick,
            "inventory": [], "serverTick": tick, "serverTickDurationMs": 50.0, "stats": {}}


def mp4(levels, height=36, width=64) -> bytes:
    """An H.264 mp4 (as VPT's recordings) of flat grey frames, one per level."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=20)
        stream.height, stream.width, stream.pix_fmt = height, width, "yuv420p"
        stream.options = {"crf": "0"}
        for level in levels:
            frame = np.full((height, width, 3), level, np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return buffer.getvalue()


def jsonl(lines) -> bytes:
    return "".join(json.dumps(x) + "\n" for x in lines).encode()


def tar(path, members: dict[str, bytes]):
    with tarfile.open(path, "w") as t:
        for name, blob in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            t.addfile(info, io.BytesIO(blob))
    return path


# Seven frames. Worked by hand below for frameskip 2 (observations at frames 0, 2, 4, 6).
SCRIPT = [
    line(0, dx=3, dy=1, keys=("w",), yaw=170.0),
    line(1, dx=2, keys=("w", "space"), buttons=(0,), yaw=175.0),
    line(2, yaw=-178.0),  # a null frame: no key, no button, no motion; the camera crossed ±180
    line(3, hotbar=4, yaw=-178.0),  # the hotbar changes 0 -> 4: a press of number key 5
    line(4, dx=-5, hotbar=4, yaw=-170.0, pitch=10.5, gui=True),
    line(5, keys=("e",), hotbar=4, yaw=-170.25, pitch=10.5, gui=True),
    line(6, dx=1, hotbar=4, yaw=-160.0, pitch=12.0),
]


def expected(rows: dict[int, dict[str, float]]) -> np.ndarray:
    out = np.zeros((len(rows), len(FULL_NAMES)), np.float32)
    for t, values in rows.items():
        for name, v in values.items():
            out[t, FULL_NAMES.index(name)] = v
    return out


def test_actions_match_hand_computed_values(tmp_path):
    shard = tar(tmp_path / "vpt-000000.tar", {"seg.mp4": mp4([20 * i for i in range(7)]), "seg.jsonl": jsonl(SCRIPT)})
    scaler = ActionScaler(**IDENTITY, frameskip=2, null_frames="keep")
    data = open_vpt(str(shard), VptConfig(size=16, frameskip=2, frame_stack=1), scaler, quiet=True)
    want = expected({
        0: {"mouse_dx": 5, "mouse_dy": 1, "yaw_delta": 12.0, "key.w": 1, "key.space": 1, "button.attack": 1, "hotbar.0": 1},
        1: {"yaw_delta": 8.0, "pitch_delta": 10.5, "number.5": 1, "hotbar.4": 1},
        2: {"mouse_dx": -5, "yaw_delta": 10.0, "pitch_delta": 1.5, "key.e": 1, "hotbar.4": 1, "gui": 1},
    })
    np.testing.assert_allclose(data.actions[:3], want)
    # Observations are frames 0, 2, 4, 6 (grey levels 0, 40, 80, 120), resized to 16 x 16.
    assert data.frames.shape == (4, 3, 16, 16)
    np.testing.assert_allclose(data.frames.mean((1, 2, 3)), [0, 40, 80, 120], atol=2)
    np.testing.assert_allclose(data.states[:, 0], [10, 12, 14, 16])  # xpos at those frames
    assert data.truncated[2] and not data.terminated.any()

    # Dropping null frames (only frame 2 is null) before the frameskip: observations at frames 0, 3, 5.
    dropped = open_vpt(str(shard), VptConfig(size=16, frameskip=2, frame_stack=1, null_frames="drop"),
                       ActionScaler(**IDENTITY, frameskip=2, null_frames="drop"), quiet=True)
    np.testing.assert_allclose(dropped.actions[:2], expected({
        0: {"mouse_dx": 5, "mouse_dy": 1, "yaw_delta": 12.0, "key.w": 1, "key.space": 1, "button.attack": 1, "hotbar.0": 1},
        1: {"mouse_dx": -5, "yaw_delta": 7.75, "pitch_delta": 10.5, "number.5": 1, "hotbar.4": 1, "gui": 1},
    }))
    np.testing.assert_allclose(dropped.frames.mean((1, 2, 3)), [0, 60, 100], atol=2)

    # The seed design's 13-D layout: the four continuous columns and the hotbar one-hot.
    small = open_vpt(str(shard), VptConfig(size=16, frameskip=2, layout="13d"), scaler, quiet=True)
    assert small.actions.shape[1] == 13 and len(LAYOUTS["13d"]) == 13
    np.testing.assert_allclose(small.actions[:3], want[:, [FULL_NAMES.index(n) for n in LAYOUTS["13d"]]])


def test_frameskip_one_and_pressed_number_keys():
    log = parse_log(jsonl([line(0, keys=("3",)), line(1, hotbar=2), line(2, hotbar=2, keys=("left.shift",))]))
    frames, actions = step_actions(log)
    assert frames.tolist() == [0, 1, 2]
    names = [[FULL_NAMES[i] for i in np.flatnonzero(row)] for row in actions]
    # A pressed "3" and the change of slot it caused on the next frame both read as number key 3.
    assert names == [["number.3", "hotbar.0"], ["number.3", "hotbar.2"]]


def test_scaler_is_numpy_mean_std_over_shards_and_travels_in_the_checkpoint(tmp_path):
    rng = np.random.default_rng(1)
    for s in range(2):
        write_shard(tmp_path / f"vpt-{s:06d}.tar", {f"k{s}{i}": synthetic_segment(rng, 30 + 7 * i, 32, 18) for i in range(3)})
    spec = str(tmp_path / "vpt-{000000..000001}.tar")
    cfg = VptConfig(size=16, frameskip=3)
    scaler = fit_scaler(spec, cfg)

    # numpy over the same steps, every segment at once
    from wmrl.offline.vpt import iter_segments

    steps = np.concatenate([step_actions(parse_log(raw.jsonl), 3)[1][:, :4] for raw in iter_segments(spec)]).astype(np.float64)
    assert scaler.count == len(steps) == sum((30 + 7 * i - 1) // 3 for i in range(3)) * 2
    np.testing.assert_allclose(scaler.mean, steps.mean(0), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(scaler.std, steps.std(0), rtol=1e-10)
    moments = RunningMoments(4)
    for chunk in np.array_split(steps, 7):
        moments.update(chunk)
    np.testing.assert_allclose(moments.std, steps.std(0), rtol=1e-10)

    path = tmp_path / "scaler.json"
    scaler.save(path)
    data = open_vpt(spec, VptConfig(size=16, frameskip=3, scaler=str(path)), quiet=True)
    moving = data.actions[~data.is_last][:, :4]
    np.testing.assert_allclose(moving.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(moving.std(0), 1, atol=1e-4)
    assert data.meta["wmrl"]["source"]["action_scaler"] == scaler.to_dict()
    with pytest.raises(DatasetError, match="frameskip 3"):
        open_vpt(spec, VptConfig(size=16, frameskip=2, scaler=str(path)), quiet=True)


def test_shards_and_folders_read_the_same(tmp_path):
    rng = np.random.default_rng(2)
    segments = {f"player-{i}": synthetic_segment(rng, 25, 32, 18) for i in range(2)}
    write_shard(tmp_path / "shard.tar", segments)
    folder = tmp_path / "raw"
    folder.mkdir()
    for key, (video, log) in segments.items():
        (folder / f"{key}.mp4").write_bytes(video)
        (folder / f"{key}.jsonl").write_bytes(log)
    cfg = VptConfig(size=16, frameskip=2)
    a, b = open_vpt(str(tmp_path / "*.tar"), cfg, quiet=True), open_vpt(str(folder), cfg, quiet=True)
    np.testing.assert_array_equal(a.frames, b.frames)
    np.testing.assert_array_equal(a.actions, b.actions)
    assert a.num_episodes == 2 and len(a.frames) == 2 * 13


def test_bad_segments_are_skipped_and_counted(tmp_path, capsys):
    good = jsonl([line(t, dx=t) for t in range(6)])
    bad_line = good.replace(b'"dy": 0.0', b'"dy": 0.0,,', 1)
    tar(tmp_path / "vpt-000000.tar", {
        "good.mp4": mp4(range(6)), "good.jsonl": good,
        "garbage.mp4": b"\x00not an mp4" * 50, "garbage.jsonl": good,
        "unparsable.mp4": mp4(range(6)), "unparsable.jsonl": bad_line,
        "short.mp4": mp4(range(5)), "short.jsonl": good,  # 5 video frames, 6 log lines
        "lonely.jsonl": good,
    })
    data = open_vpt(str(tmp_path / "vpt-000000.tar"), VptConfig(size=16), quiet=False)
    assert data.num_episodes == 1 and data.episode_steps.tolist() == [5]
    skipped = data.meta["wmrl"]["source"]["skipped"]
    assert skipped == {"bad video": 1, "bad log": 1, "frame count mismatch": 1, "missing file": 1}
    err = capsys.readouterr().err
    assert "unparsable" in err and "line 1" in err and "4 skipped" in err

    assert main(["vpt", "info", "--shards", str(tmp_path / "vpt-000000.tar")]) == 0
    out = capsys.readouterr().out
    assert "1 usable, 4 skipped" in out and "frames       6" in out

    for spec in (str(tmp_path / "none-{000..003}.tar"), str(tmp_path / "*.tgz")):
        assert main(["vpt", "info", "--shards", spec]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("wmrl: error:")
    assert main(["run", "--config", "vpt", "--out", str(tmp_path / "run")]) == 2  # offline data: no env to run
    assert "needs an env" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["vpt", "fit-scaler", "--shards", str(tmp_path / "empty"), "--out", str(tmp_path / "s.json")]) == 2
    assert "no usable VPT segment" in capsys.readouterr().err


def test_stage2_trains_on_vpt_and_eval_reuses_the_checkpoint_scaler(tmp_path, capsys):
    assert main(["vpt", "synth", "--out", str(tmp_path / "shards"), "--shards", "2", "--segments", "4",
                 "--frames", "120", "--seed", "0"]) == 0
    spec = "vpt:" + str(tmp_path / "shards" / "vpt-shards-{000000..000001}.tar")
    config = tmp_path / "vpt-tiny.yaml"
    config.write_text("""
vpt: {size: 32, frameskip: 2, frame_stack: 2}
data: {clip_len: 6, val_fraction: 0.25}
stage1:
  model: {encoder: {size: micro, width: 48, depth: 2, heads: 4, patch: 8, tubelet: 2}, predictor: {width: 48, depth: 1, heads: 4}}
  optim: {steps: 10, batch_size: 8, warmup_steps: 2}
  eval_every: 10
  checkpoint_every: 10
stage2:
  model: {pool: [1, 2, 2], step_tokens: single, width: 48, depth: 2, heads: 4, max_steps: 8}
  rollout_steps: 2
  optim: {steps: 120, batch_size: 16, lr: 0.002, warmup_steps: 10}
  eval_every: 60
  checkpoint_every: 60
""")
    enc, wm = tmp_path / "enc", tmp_path / "wm"
    assert main(["train", "--stage", "1", "--config", str(config), "--data", spec, "--out", str(enc), "--no-progress"]) == 0
    assert main(["train", "--stage", "2", "--config", str(config), "--encoder", str(enc), "--data", spec,
                 "--out", str(wm), "--no-progress"]) == 0
    metrics = [json.loads(x) for x in (wm / "metrics.jsonl").read_text().splitlines()]
    # The teacher-forced next-latent loss falls from the copy-last baseline's level (where the
    # freshly initialised predictor starts, as its residual readout is zero) to below it.
    ratio = [m["latent"] / m["copy_last"] for m in metrics if "latent" in m]
    assert np.mean(ratio[:5]) > 0.99 and np.mean(ratio[-20:]) < 0.985
    final = [m for m in metrics if "val_latent" in m][-1]
    assert final["val_latent"] < final["val_copy_last"]

    from wmrl.train.checkpoint import load_checkpoint

    source = load_checkpoint(wm)["data_source"]
    assert source["kind"] == "vpt" and source["options"]["frameskip"] == 2
    assert source["action_names"] == list(FULL_NAMES) and len(source["action_scaler"]["mean"]) == 4
    capsys.readouterr()
    assert main(["eval", "--stage", "2", "--checkpoint", str(wm), "--data", spec, "--clips", "16", "--horizon", "4"]) == 0
    assert "teacher-forced" in capsys.readouterr().out
    result = json.loads((wm / "eval_stage2.json").read_text())
    assert len(result["teacher_forced"]) == 4
