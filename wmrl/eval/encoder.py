"""Stage-1 evaluation: linear probes from frozen encoder features to recorded ground truth.

Features are the target encoder's tokens, mean-pooled, for frame stacks from the dataset; probes
are fit on training episodes and scored (R²) on held-out episodes, beside the same probe on a
randomly initialised encoder of the same shape, so a number means something.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from wmrl.data.replay import ReplayDataset, as_dataset
from wmrl.errors import DatasetError, UserError
from wmrl.eval.probes import collapse_stats, linear_probe_r2
from wmrl.models.vit import VisionTransformer

MAX_FIELD_SIZE = 16  # probe named state fields up to this size (not, say, 128 bytes of RAM)
RIDGES = (1e-2, 1.0, 1e2, 1e4)  # candidate ridge strengths for standardised features


@torch.no_grad()
def encode_rows(encoder: VisionTransformer, data: ReplayDataset, rows: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Mean-pooled features [len(rows), D] of the stacks at `rows`."""
    encoder.eval()
    out = [encoder(torch.from_numpy(data.stacks(rows[i:i + batch_size]))).mean(1).numpy()
           for i in range(0, len(rows), batch_size)]
    return np.concatenate(out)


def probe_fields(data: ReplayDataset, fields: list[str] | None) -> list[tuple[str, slice]]:
    """(name, columns of the state vector) of the fields to probe."""
    spans = data.state_spans
    if not spans:
        raise DatasetError(f"{data.root} records no ground-truth state to probe")
    if fields is None:
        return [(n, s) for n, s in spans.items() if s.stop - s.start <= MAX_FIELD_SIZE]
    unknown = [f for f in fields if f not in spans]
    if unknown:
        raise DatasetError(f"{data.root} records no state field '{unknown[0]}' (fields: {', '.join(spans)})")
    return [(f, spans[f]) for f in fields]


def probe_encoders(encoders: dict[str, VisionTransformer], data: ReplayDataset, val_fraction: float = 0.1,
                   fields: list[str] | None = None, max_rows: int = 4000, seed: int = 0) -> dict:
    """R² per field on held-out episodes for each named encoder, plus collapse statistics.

    The ridge strength is chosen per field and encoder on a slice of the training episodes
    (every fifth), so neither encoder is judged with a regulariser that suits only the other.
    """
    train_ids, val_ids = data.split(val_fraction)
    if len(val_ids) == 0 or len(train_ids) < 2:
        raise DatasetError(f"{data.root} has too few episodes to hold any out for probing")
    select_ids = train_ids[4::5] if len(train_ids) >= 5 else train_ids[-1:]
    rng = np.random.default_rng(seed)

    def rows_of(ids: np.ndarray, n: int) -> np.ndarray:
        rows = np.flatnonzero(np.isin(data.row_episode, ids))
        return np.sort(rng.choice(rows, min(n, len(rows)), replace=False))

    train_rows, val_rows = rows_of(train_ids, max_rows), rows_of(val_ids, max_rows // 2)
    selecting = np.isin(data.row_episode[train_rows], select_ids)  # [len(train_rows)]
    chosen = probe_fields(data, fields)
    result = {"fields": [n for n, _ in chosen], "train_rows": len(train_rows), "val_rows": len(val_rows)}
    for name, encoder in encoders.items():
        x_train, x_val = encode_rows(encoder, data, train_rows), encode_rows(encoder, data, val_rows)
        r2, ridges = {}, {}
        for field, cols in chosen:
            y_train, y_val = data.states[train_rows, cols], data.states[val_rows, cols]

            def score(ridge: float, fit: np.ndarray, test_x: np.ndarray, test_y: np.ndarray) -> float:
                scores = linear_probe_r2(x_train[fit], y_train[fit], test_x, test_y, ridge=ridge)
                return float(np.nanmean(scores)) if np.isfinite(scores).any() else float("nan")

            trials = {ridge: score(ridge, ~selecting, x_train[selecting], y_train[selecting]) for ridge in RIDGES}
            ridges[field] = max(RIDGES, key=lambda r: -np.inf if np.isnan(trials[r]) else trials[r])
            r2[field] = score(ridges[field], np.ones(len(train_rows), bool), x_val, y_val)
        result[name] = {"r2": r2, "ridge": ridges, "collapse": collapse_stats(x_val)}
    return result


def evaluate_stage1(checkpoint: str | Path, data_root: str | Path | ReplayDataset, fields: list[str] | None = None,
                    max_rows: int = 4000, seed: int = 0) -> dict:
    """Probe a stage-1 checkpoint's target encoder beside a random-init encoder of the same shape."""
    from wmrl.config import from_dict
    from wmrl.models.jepa import JEPA
    from wmrl.train.checkpoint import load_checkpoint
    from wmrl.train.config import Stage1Config
    from wmrl.train.stage1 import build_model

    payload = load_checkpoint(checkpoint)
    if payload.get("stage") != 1:
        raise UserError(f"{checkpoint} is not a stage-1 checkpoint")
    stack_shape = tuple(payload["stack_shape"])
    data = as_dataset(data_root)
    data.require_stack_shape(stack_shape, "the encoder")
    trained = build_model(payload)
    torch.manual_seed(seed + 1000)
    random_init = JEPA(from_dict(Stage1Config, payload["config"]).model, stack_shape).eval()
    return probe_encoders({"trained": trained.target_encoder, "random init": random_init.target_encoder}, data,
                          val_fraction=payload["val_fraction"], fields=fields, max_rows=max_rows, seed=seed)


def format_probe_table(result: dict, names: list[str]) -> str:
    lines = [f"{'field':<16}" + "".join(f"{'R² ' + n:>18}" for n in names)]
    for field in result["fields"]:
        lines.append(f"{field:<16}" + "".join(f"{result[n]['r2'][field]:>18.3f}" for n in names))
    for n in names:
        c = result[n]["collapse"]
        lines.append(f"{n}: feature std {c['std_mean']:.4f} (min {c['std_min']:.4f}), effective rank "
                     f"{c['effective_rank']:.1f} of {c['effective_rank'] / max(c['rank_fraction'], 1e-9):.0f}")
    lines.append(f"probes fit on {result['train_rows']} stacks of training episodes, scored on {result['val_rows']} held-out")
    return "\n".join(lines)
