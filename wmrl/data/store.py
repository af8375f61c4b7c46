"""Replay datasets on disk, in Minari's arrow layout, lossless and crash-safe.

    <root>/data/metadata.json        Minari's dataset metadata, plus a "wmrl" section
    <root>/data/<id>/part-0.arrow    one episode, N+1 rows (Minari pads the last row's action,
                                     reward and flags); observations are single frames [C, H, W]
                                     and ground-truth state sits in infos.state
    <root>/data/<id>/metadata.json   {"id", "total_steps", "seed"}

So ``MINARI_DATASETS_PATH=<parent of root> minari.load_dataset("<root name>")`` reads it.
Frames are stored raw inside zstd-compressed arrow buffers (one buffer per episode, so the
compressor sees consecutive frames: lossless and far smaller than Minari's JPEG).

Crash safety: an episode is written into a hidden folder and renamed into place, then the
metadata is replaced atomically. A SIGKILL at any moment leaves every finished episode readable;
`DatasetWriter.open` repairs the count if the kill fell between the two.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pyarrow as pa

from wmrl.errors import DatasetError
from wmrl.types import Episode

FORMAT_VERSION = 1
_CODEC = pa.Codec("zstd", compression_level=3)
_EPISODE_FILE = "part-0.arrow"


def data_dir(root: str | Path) -> Path:
    return Path(root) / "data"


def is_dataset(root: str | Path) -> bool:
    return (data_dir(root) / "metadata.json").is_file()


def read_metadata(root: str | Path) -> dict[str, Any]:
    path = data_dir(root) / "metadata.json"
    if not Path(root).exists():
        raise DatasetError(f"dataset not found: {root}")
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise DatasetError(f"{root} is not a wmrl dataset (no data/metadata.json)") from None
    except (OSError, json.JSONDecodeError) as e:
        raise DatasetError(f"{path} is unreadable: {e}") from None
    if not isinstance(meta, dict) or "wmrl" not in meta or meta.get("data_format") != "arrow":
        raise DatasetError(f"{root} is not a wmrl dataset (its metadata has no 'wmrl' section)")
    return meta


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write `obj` as JSON to `path` through a temporary file and a rename: a kill leaves the old or the new file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def fixed_list(values: np.ndarray) -> pa.FixedSizeListArray:
    flat = values.reshape(len(values), -1)
    return pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1)), flat.shape[1])


def write_ipc(batch: pa.RecordBatch, sink) -> None:
    """One record batch as an arrow IPC file, every buffer zstd-compressed."""
    with pa.ipc.new_file(sink, batch.schema, options=pa.ipc.IpcWriteOptions(compression=_CODEC)) as writer:
        writer.write_batch(batch)


def pad_last(x: np.ndarray) -> np.ndarray:
    """Append one zero row: Minari stores N+1 rows with the last action/reward/flags empty."""
    return np.concatenate([x, np.zeros((1, *x.shape[1:]), x.dtype)])


def episode_to_batch(ep: Episode) -> pa.RecordBatch:
    columns = {
        "observations": fixed_list(ep.frames),
        "actions": pa.array(pad_last(ep.actions)) if ep.actions.ndim == 1 else fixed_list(pad_last(ep.actions)),
        "rewards": pa.array(pad_last(ep.rewards.astype(np.float64))),
        "terminations": pa.array(pad_last(ep.terminations.astype(bool))),
        "truncations": pa.array(pad_last(ep.truncations.astype(bool))),
    }
    if ep.states is not None:
        state = fixed_list(ep.states.astype(np.float32))
        field = pa.field("state", state.type, metadata={"shape": str(ep.states.shape[1])})
        columns["infos"] = pa.StructArray.from_arrays([state], fields=[field])
    return pa.RecordBatch.from_pydict(columns)


def batch_to_episode(batch: pa.RecordBatch, frame_shape: tuple[int, ...], seed: int | None = None) -> Episode:
    n = batch.num_rows - 1

    def column(name: str) -> np.ndarray:
        col = batch.column(name)
        if isinstance(col, pa.FixedSizeListArray):
            return col.values.to_numpy(zero_copy_only=False).reshape(len(col), -1)
        return col.to_numpy(zero_copy_only=False)

    frames = column("observations").reshape(n + 1, *frame_shape)
    actions = column("actions")[:n]
    states = None
    if "infos" in batch.schema.names:
        infos = batch.column("infos")
        states = infos.field("state").values.to_numpy().reshape(n + 1, -1)
    return Episode(frames, actions, column("rewards")[:n], column("terminations")[:n].astype(bool),
                   column("truncations")[:n].astype(bool), states, seed)


def read_episode(root: str | Path, episode_id: int, frame_shape: tuple[int, ...]) -> Episode:
    folder = data_dir(root) / str(episode_id)
    try:
        with pa.memory_map(str(folder / _EPISODE_FILE)) as source:
            batch = pa.ipc.open_file(source).get_batch(0)
        episode_meta = json.loads((folder / "metadata.json").read_text())
        episode = batch_to_episode(batch, frame_shape, episode_meta.get("seed"))
        episode.check()
    except (OSError, pa.ArrowException, ValueError, KeyError, json.JSONDecodeError) as e:
        raise DatasetError(f"episode {episode_id} of {root} is unreadable: {e}") from None
    return episode


class DatasetWriter:
    """Appends episodes to a dataset, one crash-safe episode at a time."""

    def __init__(self, root: Path, meta: dict[str, Any]):
        self.root = Path(root)
        self.meta = meta
        self.frame_shape = tuple(meta["wmrl"]["frame_shape"])
        self._bytes = disk_bytes(root)  # kept up to date, not re-walked per episode

    @classmethod
    def create(cls, root: str | Path, frame_space: gym.spaces.Box, action_space: gym.Space,
               wmrl_info: dict[str, Any]) -> DatasetWriter:
        """Start an empty dataset at `root` (which must not hold one)."""
        import minari
        from minari.serialization import serialize_space

        root = Path(root)
        check_new_dataset_path(root)
        data_dir(root).mkdir(parents=True, exist_ok=True)
        meta = {
            "dataset_id": root.name,
            "total_episodes": 0,
            "total_steps": 0,
            "data_format": "arrow",
            "jpeg_encoding": False,
            "observation_space": serialize_space(frame_space),
            "action_space": serialize_space(action_space),
            "minari_version": minari.__version__,
            "dataset_size": 0.0,
            "wmrl": {"format": FORMAT_VERSION, "frame_shape": list(frame_space.shape), **wmrl_info,
                     "collections": []},
        }
        writer = cls(root, meta)
        writer._flush_metadata()
        return writer

    @classmethod
    def open(cls, root: str | Path) -> DatasetWriter:
        """Open an existing dataset for appending, repairing the effects of a killed writer."""
        root = Path(root)
        meta = read_metadata(root)
        folder = data_dir(root)
        for leftover in folder.glob(".tmp-*"):  # an episode whose write was interrupted
            shutil.rmtree(leftover, ignore_errors=True)
        count, steps = 0, 0
        while (folder / str(count) / _EPISODE_FILE).is_file():
            steps += json.loads((folder / str(count) / "metadata.json").read_text())["total_steps"]
            count += 1
        meta["total_episodes"], meta["total_steps"] = count, steps
        writer = cls(root, meta)
        writer._flush_metadata()
        return writer

    @property
    def total_episodes(self) -> int:
        return self.meta["total_episodes"]

    def set_state_layout(self, layout: list[tuple[str, int]]) -> None:
        """Name and size of each ground-truth state field, in the order of the state vector."""
        layout = [[name, int(size)] for name, size in layout]
        known = self.meta["wmrl"].get("state_layout")
        if known is not None and known != layout:
            raise DatasetError(f"{self.root} records state {known}, but the env gives {layout}")
        self.meta["wmrl"]["state_layout"] = layout
        self._flush_metadata()

    def add_collection(self, info: dict[str, Any]) -> None:
        """Record how a batch of episodes was gathered (policy, seed, ...)."""
        self.meta["wmrl"]["collections"].append({"first_episode": self.total_episodes, **info})
        self._flush_metadata()

    def write(self, episode: Episode) -> int:
        """Store one finished episode; returns its id. Durable against SIGKILL once returned."""
        episode.check()
        if tuple(episode.frames.shape[1:]) != self.frame_shape:
            raise ValueError(f"frames {episode.frames.shape[1:]} do not match the dataset's {self.frame_shape}")
        episode_id = self.total_episodes
        tmp = data_dir(self.root) / f".tmp-{episode_id}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        batch = episode_to_batch(episode)
        with pa.OSFile(str(tmp / _EPISODE_FILE), "wb") as sink:
            write_ipc(batch, sink)
        (tmp / "metadata.json").write_text(json.dumps({"id": episode_id, "total_steps": len(episode), "seed": episode.seed}))
        self._bytes += sum(p.stat().st_size for p in tmp.iterdir())
        os.rename(tmp, data_dir(self.root) / str(episode_id))
        self.meta["total_episodes"] += 1
        self.meta["total_steps"] += len(episode)
        self._flush_metadata()
        return episode_id

    def _flush_metadata(self) -> None:
        self.meta["dataset_size"] = round(self._bytes / 1e6, 1)
        write_json_atomic(data_dir(self.root) / "metadata.json", self.meta)


def check_new_dataset_path(root: str | Path) -> None:
    """A new dataset may go only where no dataset (and nothing else) is."""
    root = Path(root)
    if is_dataset(root):
        raise DatasetError(f"{root} already holds a dataset; pass --append to add to it or choose another --out")
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise DatasetError(f"{root} exists and is not an empty folder; choose another --out")


def disk_bytes(root: str | Path) -> int:
    return sum(p.stat().st_size for p in data_dir(root).rglob("*") if p.is_file())
