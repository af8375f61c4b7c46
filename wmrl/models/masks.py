"""Which tokens the context encoder sees and which the predictor must fill in.

Each strategy marks target tokens on the (t, h, w) token grid; the context is the rest, so
context and target never overlap. Counts are equalised across the batch (by dropping random
tokens from the larger sets) so that indices stack into [B, Nc] and [B, Nt] tensors.

- multiblock (V-JEPA): a "short" mask (many small blocks) and a "long" one (few large blocks),
  each a union of random rectangles repeated over all time steps; both are trained every step.
- random: i.i.d. tokens; spatial: random spatial positions, repeated over time (tubes);
  temporal: the last time steps entirely (predict the future part of the stack).
"""

from __future__ import annotations

import math
import numpy as np

from wmrl.models.config import MaskConfig


Mask = tuple[np.ndarray, np.ndarray]  # (context [B, Nc], target [B, Nt]) token indices, sorted


def sample_masks(cfg: MaskConfig, grid: tuple[int, int, int], batch: int, rng: np.random.Generator) -> list[Mask]:
    """One (context, target) pair per mask generator of the strategy (two for multiblock)."""
    t, h, w = grid
    if cfg.strategy == "multiblock":
        return [_equalise([_blocks(grid, cfg.short_blocks, cfg.short_scale, cfg.aspect, rng) for _ in range(batch)], rng),
                _equalise([_blocks(grid, cfg.long_blocks, cfg.long_scale, cfg.aspect, rng) for _ in range(batch)], rng)]
    if cfg.strategy == "random":
        masks = [_exact(t * h * w, cfg.ratio, rng).reshape(grid) for _ in range(batch)]
    elif cfg.strategy == "spatial":
        masks = [np.broadcast_to(_exact(h * w, cfg.ratio, rng).reshape(1, h, w), grid) for _ in range(batch)]
    else:  # temporal
        if t < 2:
            raise ValueError("temporal masking needs at least two time steps of tokens (frames / tubelet >= 2)")
        future = min(t - 1, max(1, round(cfg.ratio * t)))
        mask = np.zeros(grid, bool)
        mask[t - future:] = True
        masks = [mask] * batch
    return [_equalise(masks, rng)]


def _exact(n: int, ratio: float, rng: np.random.Generator) -> np.ndarray:
    """A boolean [n] mask with round(ratio * n) entries set, at least one set and one clear."""
    k = min(n - 1, max(1, round(ratio * n)))
    mask = np.zeros(n, bool)
    mask[rng.choice(n, k, replace=False)] = True
    return mask


def _blocks(grid, count: int, scale: float, aspect: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    """Union of `count` random rectangles on the (h, w) grid, repeated over time: [T, H, W]."""
    t, h, w = grid
    for _ in range(100):  # resample in the rare case the blocks cover every token
        spatial = np.zeros((h, w), bool)
        for _ in range(count):
            ar = math.exp(rng.uniform(math.log(aspect[0]), math.log(aspect[1])))
            area = scale * h * w
            bh = min(h, max(1, round(math.sqrt(area * ar))))
            bw = min(w, max(1, round(math.sqrt(area / ar))))
            top, left = rng.integers(0, h - bh + 1), rng.integers(0, w - bw + 1)
            spatial[top:top + bh, left:left + bw] = True
        if not spatial.all():
            return np.broadcast_to(spatial, grid)
    raise ValueError(f"mask blocks of scale {scale} cover the whole {h}x{w} grid; lower it")


def _equalise(masks: list[np.ndarray], rng: np.random.Generator) -> Mask:
    flat = [m.reshape(-1) for m in masks]
    targets = [np.flatnonzero(m) for m in flat]
    contexts = [np.flatnonzero(~m) for m in flat]
    nt, nc = min(map(len, targets)), min(map(len, contexts))

    def pick(idx: np.ndarray, n: int) -> np.ndarray:
        return idx if len(idx) == n else np.sort(rng.choice(idx, n, replace=False))

    return (np.stack([pick(c, nc) for c in contexts]), np.stack([pick(t, nt) for t in targets]))
