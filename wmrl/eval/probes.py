"""Frozen-feature diagnostics: how much a world model's latents know, and whether they collapsed.

A JEPA encoder trained without enough regularisation can map every frame to (nearly) the same
vector, or to a low-dimensional subspace, while its prediction loss still falls. Two cheap checks
catch that from features alone, with no gradients and no torch:

* `linear_probe_r2`: ridge regression from features to ground-truth state (positions,
  velocities, ...). High held-out R² means the state is linearly decodable from the latent.
* `collapse_stats` / `collapse_warning`: per-dimension spread and the effective rank of the
  feature matrix (Roy & Vetterli, 2007), which flag complete and dimensional collapse.
"""

from __future__ import annotations

import numpy as np


def _as_2d(name: str, a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"{name} must be 2-D [N, D], got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or inf")
    return a


def linear_probe_r2(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
                    ridge: float = 1e-2) -> np.ndarray:
    """Held-out R² of a ridge regression from features to targets, per target column.

    train_x [N, D], train_y [N, S] or [N]; test_x [M, D], test_y [M, S] or [M] (same rank as
    train_y). Features are standardised with the training mean and std; the bias is fitted
    unpenalised and `ridge` is the L2 penalty on the standardised weights. Returns R² [S]
    (a 0-d array when the targets are 1-D), computed as 1 - SSE/SST about the test targets' own
    mean, so 0 means "no better than predicting the test mean" and values can be negative.
    A test target column with zero variance has no R²: its entry is nan.
    """
    if ridge < 0:
        raise ValueError(f"ridge must be >= 0, got {ridge}")
    train_y, test_y = np.asarray(train_y), np.asarray(test_y)
    vector = train_y.ndim == 1
    if train_y.ndim != test_y.ndim or train_y.ndim not in (1, 2):
        raise ValueError(f"train_y and test_y must both be [N] or [N, S], got {train_y.shape} and {test_y.shape}")
    x, tx = _as_2d("train_x", train_x), _as_2d("test_x", test_x)
    y, ty = _as_2d("train_y", train_y.reshape(len(train_y), -1)), _as_2d("test_y", test_y.reshape(len(test_y), -1))
    if x.shape[1] != tx.shape[1]:
        raise ValueError(f"train_x has {x.shape[1]} features but test_x has {tx.shape[1]}")
    if len(x) != len(y) or len(tx) != len(ty):
        raise ValueError(f"row counts differ: train_x {len(x)} vs train_y {len(y)}, "
                         f"test_x {len(tx)} vs test_y {len(ty)}")
    if y.shape[1] != ty.shape[1]:
        raise ValueError(f"train_y has {y.shape[1]} targets but test_y has {ty.shape[1]}")
    if len(x) == 0 or len(tx) == 0:
        raise ValueError("linear_probe_r2 needs at least one train and one test row")

    mean, std = x.mean(0), x.std(0)
    std[std == 0] = 1.0  # a dead dimension stays zero instead of becoming nan
    x, tx = (x - mean) / std, (tx - mean) / std
    # Centred features and targets make the unpenalised bias exactly the training target mean.
    y_mean = y.mean(0)
    yc = y - y_mean
    n, d = x.shape
    if d <= n:  # primal: [D, D] system
        w = _solve(x.T @ x + ridge * np.eye(d), x.T @ yc)
    else:  # dual: [N, N] system, w = X^T (X X^T + λI)^-1 y
        w = x.T @ _solve(x @ x.T + ridge * np.eye(n), yc)
    pred = tx @ w + y_mean  # [M, S]

    sse = ((ty - pred) ** 2).sum(0)
    sst = ((ty - ty.mean(0)) ** 2).sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = np.where(sst > 0, 1.0 - sse / np.where(sst > 0, sst, 1.0), np.nan)
    return r2.reshape(()) if vector else r2


def _solve(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    try:
        return np.linalg.solve(a, b)
    except np.linalg.LinAlgError:  # only with ridge=0 and rank-deficient features
        return np.linalg.lstsq(a, b, rcond=None)[0]


def collapse_stats(features: np.ndarray) -> dict[str, float]:
    """Spread and effective rank of features [N, D] (N >= 2).

    std_mean / std_min: mean and min over dimensions of the per-dimension std (complete collapse
    drives both to 0). effective_rank: exp of the Shannon entropy of the centred features'
    singular values normalised to sum to 1 (Roy & Vetterli 2007); it is 1 when one direction
    carries all variance and min(N, D) when all directions carry equal variance, and 0 for
    exactly constant features. rank_fraction = effective_rank / min(N, D).
    """
    f = _as_2d("features", features)
    n, d = f.shape
    if n < 2:
        raise ValueError(f"collapse_stats needs at least 2 rows, got {n}")
    std = f.std(0)
    s = np.linalg.svd(f - f.mean(0), compute_uv=False)
    total = s.sum()
    if total > 0:
        p = s[s > 0] / total
        effective_rank = float(np.exp(-(p * np.log(p)).sum()))
    else:
        effective_rank = 0.0
    return {"std_mean": float(std.mean()), "std_min": float(std.min()), "effective_rank": effective_rank,
            "rank_fraction": effective_rank / min(n, d)}


def collapse_warning(stats: dict[str, float], min_std: float = 1e-3, min_rank_fraction: float = 0.05) -> str | None:
    """One line describing why `collapse_stats` output looks collapsed, or None if it looks healthy."""
    problems = []
    if stats["std_mean"] < min_std:
        problems.append(f"mean per-dimension std {stats['std_mean']:.2e} < {min_std:g} (features are nearly constant)")
    if stats["rank_fraction"] < min_rank_fraction:
        problems.append(f"effective rank {stats['effective_rank']:.2f} is {stats['rank_fraction']:.1%} of the "
                        f"maximum (< {min_rank_fraction:.0%}; features span few directions)")
    if not problems:
        return None
    return "features look collapsed: " + "; ".join(problems)
