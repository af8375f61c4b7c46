"""Self-describing training checkpoints, written atomically and read back safely.

A checkpoint is one ``torch.save`` file holding a plain dict: model and optimizer state dicts,
the config, counters, and the RNG states needed to resume bit-for-bit. Two rules keep it usable:

* Writes go to a temp file in the same directory and are then ``os.replace``d over the target,
  so a SIGKILL mid-write leaves either the old checkpoint or the new one, never half of one.
* Reads always use ``weights_only=True``: a checkpoint from the internet cannot run code on load.
  That restricts payloads to tensors, dicts, lists, tuples, and Python scalars/strings, which is
  why the RNG helpers below turn NumPy arrays into lists before they go in.
"""

from __future__ import annotations

import os
import pickle
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wmrl.errors import UserError

CHECKPOINT_NAME = "checkpoint.pt"

# Marks a NumPy array encoded as a plain list, so decoding can restore its dtype.
_ARRAY_TAG = "__ndarray__"


class CheckpointError(UserError):
    """A checkpoint that is missing, truncated, or not a wmrl checkpoint."""


def _resolve(path: str | Path) -> Path:
    """A run directory stands for the checkpoint inside it."""
    path = Path(path)
    return path / CHECKPOINT_NAME if path.is_dir() else path


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write `payload` to `path` (or `<path>/checkpoint.pt` if `path` is a directory), atomically."""
    path = _resolve(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Same directory as the target: os.replace is only atomic within one filesystem.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())  # the bytes must be on disk before the rename makes them visible
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _reason(e: BaseException) -> str:
    """torch's errors run to paragraphs of advice; a one-line CLI error keeps the first sentence."""
    text = str(e).strip()
    first = text.splitlines()[0].split(". ")[0] if text else ""
    if isinstance(e, RuntimeError) and first:  # torch's own errors already say what failed
        return first
    return f"{type(e).__name__}: {first}" if first else type(e).__name__


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint file or run directory; any failure is one `CheckpointError` line."""
    given = Path(path)
    path = _resolve(given)
    if not given.exists():
        raise CheckpointError(f"checkpoint not found: {given}")
    if not path.is_file():
        raise CheckpointError(f"{given} is a directory without a {CHECKPOINT_NAME}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except MemoryError:
        raise
    except PermissionError:
        raise CheckpointError(f"cannot read {path}: permission denied") from None
    except pickle.UnpicklingError as e:
        text = str(e)
        if "weights only" not in text.lower():
            raise CheckpointError(f"{path} is corrupt or truncated: {_reason(e)}") from None
        # torch's message is a paragraph; the line naming the offending global is what matters
        detail = next((line.strip() for line in text.splitlines() if "Unsupported global" in line), "")
        detail = detail.split(" was not an allowed global")[0].replace("WeightsUnpickler error: ", "")
        raise CheckpointError(f"{path} is corrupt or not a wmrl checkpoint: it holds objects that "
                              f"weights_only=True refuses{': ' + detail if detail else ''}") from None
    except Exception as e:
        # Damaged bytes surface as almost any exception (zip, unicode, key, storage-size errors),
        # and the file is torch.load's only input, so all of them mean the same thing here.
        if "deserialize object on" in str(e):  # saved on a device this machine lacks
            raise CheckpointError(f"cannot load {path} with map_location={map_location!r}: {_reason(e)}") from None
        raise CheckpointError(f"{path} is corrupt or truncated: {_reason(e)}") from None
    if not isinstance(payload, dict):
        raise CheckpointError(f"{path} is not a wmrl checkpoint (holds a {type(payload).__name__}, not a dict)")
    return payload


def _encode(value: Any) -> Any:
    """NumPy arrays and scalars -> lists and Python scalars, recursively (weights_only-safe)."""
    if isinstance(value, np.ndarray):
        return {_ARRAY_TAG: str(value.dtype), "values": value.tolist()}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if _ARRAY_TAG in value:
            return np.array(value["values"], dtype=value[_ARRAY_TAG])
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def rng_state() -> dict[str, Any]:
    """The global RNGs of Python, NumPy (legacy `np.random`), torch CPU, and every CUDA device."""
    version, internal, gauss_next = random.getstate()
    algorithm, key, pos, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
        "numpy": {"algorithm": algorithm, "key": _encode(key), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` captured.

    CUDA states are restored device by device for the devices both runs have: resuming on a
    machine without CUDA, or with fewer GPUs visible, should not make a checkpoint unusable.
    """
    py = state["python"]
    random.setstate((py["version"], tuple(py["internal"]), py["gauss_next"]))
    npy = state["numpy"]
    np.random.set_state((npy["algorithm"], _decode(npy["key"]), npy["pos"], npy["has_gauss"],
                         npy["cached_gaussian"]))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        for device, cuda_state in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state.cpu(), device)


def generator_state(gen: np.random.Generator) -> dict[str, Any]:
    """A NumPy Generator's bit-generator state, in weights_only-loadable form.

    PCG64's 128-bit state stays a Python int (pickle and weights_only loading handle any size);
    MT19937/Philox/SFC64 keep arrays, which become tagged lists.
    """
    return _encode(gen.bit_generator.state)


def set_generator_state(gen: np.random.Generator, state: dict[str, Any]) -> None:
    """Restore `gen` to a state from `generator_state`; the bit generator kinds must match."""
    state = _decode(state)
    kind = type(gen.bit_generator).__name__
    if state.get("bit_generator") != kind:
        raise CheckpointError(f"checkpoint holds a {state.get('bit_generator')} generator state, "
                              f"but the generator is {kind}")
    gen.bit_generator.state = state
