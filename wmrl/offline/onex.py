"""The 1X world-model challenge's token data (v1.1 layout), read in place with memmaps.

One split directory holds
    video.bin         raw `token_dtype` (default uint32) [N, s, s]: MAGVIT2 ids in [0, 2**18)
    segment_ids.bin   int32 [N], non-decreasing: which recording each frame comes from (optional)
    metadata.json     at least num_images and s; token_dtype optional; other keys are kept
    actions/*.bin     float32, one row per frame: joint_pos [N, 21], driving_command [N, 2],
                      neck_desired [N, 3] (documented as [N, 1]: widths come from file sizes),
                      l_hand_closure [N], r_hand_closure [N]
or, instead of actions/, actions.bin: one uint16 action token per frame (vocabulary 65536).

Frames are 30 Hz. A window is 16 frames `stride` 15 apart (2 Hz, 226 raw frames) inside one
segment, indexed exactly as the challenge's RawTokenDataset does, so `--max-examples 1000`
evaluates the same 1000 windows as the challenge's evaluate.py.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wmrl.errors import DatasetError, UserError

# A MAGVIT2 id is two 512-way factors: id = f0 + 512 * f1.
FACTORS, FACTOR_VOCAB = 2, 512
ACTION_FILES = ("joint_pos", "driving_command", "neck_desired", "l_hand_closure", "r_hand_closure")
ACTION_TOKEN_VOCAB = 65536
WINDOW, STRIDE = 16, 15  # the challenge's v1.1 evaluation windows


def factorize(ids: np.ndarray) -> np.ndarray:
    """Token ids [...] -> factors [..., 2], f_k = (id // 512**k) % 512."""
    ids = np.asarray(ids, dtype=np.int64)
    return np.stack([(ids // FACTOR_VOCAB ** k) % FACTOR_VOCAB for k in range(FACTORS)], -1)


def unfactorize(factors: np.ndarray) -> np.ndarray:
    """Factors [..., 2] -> token ids [...]."""
    factors = np.asarray(factors, dtype=np.int64)
    return sum(factors[..., k] * FACTOR_VOCAB ** k for k in range(FACTORS))


def window_starts(segment_ids: np.ndarray | None, num_frames: int, window: int, stride: int,
                  filter_overlaps: bool = False) -> np.ndarray:
    """First frames of the windows, as the challenge's RawTokenDataset lists them: every start whose
    first and last frame share a segment; with `filter_overlaps`, greedily those whose frames no
    earlier kept window uses (its evaluation set)."""
    span = (window - 1) * stride  # frames from a window's first to its last
    starts = np.arange(max(0, num_frames - span))
    if segment_ids is not None and len(starts):
        starts = starts[segment_ids[starts] == segment_ids[starts + span]]
    if not filter_overlaps:
        return starts
    kept: list[int] = []
    taken: set[int] = set()
    for s in starts.tolist():
        # Two windows share a frame only when their starts differ by a multiple of stride below span.
        if not any(s - i * stride in taken for i in range(1, window)):
            kept.append(s)
            taken.add(s)
    return np.array(kept, dtype=np.int64)


@dataclass
class ActionSpec:
    """How a split's actions enter a model: `dim` floats per frame, or one token of `dim` ids."""

    kind: str  # "continuous", "tokens" or "none"
    dim: int
    names: tuple[tuple[str, int], ...] = ()  # (file name, width) of the continuous columns, in order

    @property
    def discrete(self) -> bool:
        return self.kind != "continuous"


class TokenDataset:
    """A split of the 1X token data: windows of `window` frames `stride` apart, read lazily.

    `window(i)` -> tokens [T, s, s] int64, actions [T, A] float32 (or [T] int64 tokens);
    `batch(indices)` stacks them. Continuous actions are standardised with `action_mean/std`
    when those are set (from the training split, see `action_stats`).
    """

    def __init__(self, root: str | Path, window: int = WINDOW, stride: int = STRIDE, filter_overlaps: bool = False,
                 actions: str = "auto"):
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetError(f"1X data directory not found: {self.root}")
        self.metadata = read_metadata(self.root)
        n, s = self.metadata["num_images"], self.metadata["s"]
        self.num_frames, self.side = n, s
        self.video = _memmap(self.root / "video.bin", np.dtype(self.metadata.get("token_dtype", "uint32")), (n, s, s))
        seg_path = self.root / "segment_ids.bin"
        self.segment_ids = _memmap(seg_path, np.dtype(np.int32), (n,)) if seg_path.is_file() else None
        if self.segment_ids is not None and n > 1 and np.any(np.diff(self.segment_ids) < 0):
            raise DatasetError(f"{seg_path}: segment ids must be non-decreasing")
        self.action_spec, self._actions = self._open_actions(actions)
        self.action_mean: np.ndarray | None = None
        self.action_std: np.ndarray | None = None
        if window < 2 or stride < 1:
            raise UserError(f"a window needs >= 2 frames and stride >= 1, got window {window}, stride {stride}")
        self.window_len, self.stride = window, stride
        self.starts = window_starts(self.segment_ids, n, window, stride, filter_overlaps)

    def _open_actions(self, mode: str) -> tuple[ActionSpec, list[np.ndarray]]:
        folder, token_file = self.root / "actions", self.root / "actions.bin"
        if mode == "auto":
            mode = "continuous" if folder.is_dir() else "tokens" if token_file.is_file() else "none"
        if mode == "none":
            return ActionSpec("none", 1), []
        if mode == "tokens":
            if not token_file.is_file():
                raise DatasetError(f"{token_file} not found (actions: tokens)")
            return ActionSpec("tokens", ACTION_TOKEN_VOCAB), [_memmap(token_file, np.dtype(np.uint16), (self.num_frames,))]
        if mode != "continuous":
            raise UserError(f"actions must be auto, continuous, tokens or none, got '{mode}'")
        if not folder.is_dir():
            raise DatasetError(f"{folder} not found (actions: continuous)")
        arrays, names = [], []
        for name in ACTION_FILES:
            path = folder / f"{name}.bin"
            if not path.is_file():
                raise DatasetError(f"{path} not found")
            row_bytes, rest = divmod(path.stat().st_size, self.num_frames)
            if rest or row_bytes % 4 or row_bytes == 0:
                raise DatasetError(f"{path}: {path.stat().st_size} bytes is not {self.num_frames} rows of float32")
            width = row_bytes // 4
            arrays.append(_memmap(path, np.dtype(np.float32), (self.num_frames, width)))
            names.append((name, width))
        return ActionSpec("continuous", sum(w for _, w in names), tuple(names)), arrays

    def __len__(self) -> int:
        return len(self.starts)

    def frames(self, i: int) -> np.ndarray:
        """Frame indices [T] of window i."""
        return self.starts[i] + self.stride * np.arange(self.window_len)

    def raw_actions(self, frames: np.ndarray) -> np.ndarray:
        """Actions at frame indices [...]: [..., A] float32, or [...] int64 tokens."""
        if self.action_spec.kind == "none":
            return np.zeros(frames.shape, np.int64)
        if self.action_spec.kind == "tokens":
            return self._actions[0][frames].astype(np.int64)
        return np.concatenate([a[frames] for a in self._actions], -1)

    def batch(self, indices) -> tuple[np.ndarray, np.ndarray]:
        """tokens [B, T, s, s] int64 and actions [B, T, A] float32 (or [B, T] int64) of windows `indices`."""
        frames = np.stack([self.frames(i) for i in np.atleast_1d(indices)])  # [B, T]
        tokens = self.video[frames].astype(np.int64)
        actions = self.raw_actions(frames)
        if self.action_spec.kind == "continuous" and self.action_mean is not None:
            actions = (actions - self.action_mean) / self.action_std
        return tokens, actions.astype(np.float32) if self.action_spec.kind == "continuous" else actions

    def segments(self) -> int:
        return 1 if self.segment_ids is None or self.num_frames == 0 else int(len(np.unique(self.segment_ids)))

    def check_token_range(self, chunk: int = 1 << 16) -> int:
        """The largest token id (a full read, chunked); ids beyond 2**18 are an error."""
        top = 0
        for i in range(0, self.num_frames, chunk):
            top = max(top, int(self.video[i:i + chunk].max(initial=0)))
        if top >= FACTOR_VOCAB ** FACTORS:
            raise DatasetError(f"{self.root / 'video.bin'}: token id {top} is outside [0, {FACTOR_VOCAB ** FACTORS})")
        return top


def action_stats(data: TokenDataset, chunk: int = 1 << 16) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and std [A] of the continuous actions over every frame (streamed in chunks);
    a constant dimension gets std 1."""
    if data.action_spec.kind != "continuous":
        raise UserError(f"{data.root} has no continuous actions")
    total = np.zeros(data.action_spec.dim)
    squares = np.zeros(data.action_spec.dim)
    for i in range(0, data.num_frames, chunk):
        rows = data.raw_actions(np.arange(i, min(i + chunk, data.num_frames))).astype(np.float64)
        total += rows.sum(0)
        squares += (rows ** 2).sum(0)
    mean = total / max(1, data.num_frames)
    std = np.sqrt(np.maximum(squares / max(1, data.num_frames) - mean ** 2, 0.0))
    std[std < 1e-6] = 1.0
    return mean.astype(np.float32), std.astype(np.float32)


def read_metadata(root: Path) -> dict:
    path = root / "metadata.json"
    if not path.is_file():
        raise DatasetError(f"{path} not found")
    try:
        meta = json.loads(path.read_text())
    except ValueError as e:
        raise DatasetError(f"{path} is not valid JSON ({e})") from None
    for key in ("num_images", "s"):
        if not isinstance(meta.get(key), int) or meta[key] < (0 if key == "num_images" else 1):
            raise DatasetError(f"{path}: '{key}' must be a {'non-negative' if key == 'num_images' else 'positive'} integer")
    try:
        np.dtype(meta.get("token_dtype", "uint32"))
    except TypeError:
        raise DatasetError(f"{path}: unknown token_dtype '{meta['token_dtype']}'") from None
    return meta


def _memmap(path: Path, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    """A read-only memmap whose file must hold exactly `shape` of `dtype`."""
    if not path.is_file():
        raise DatasetError(f"{path} not found")
    expected = int(np.prod(shape)) * dtype.itemsize
    actual = path.stat().st_size
    if actual != expected:
        raise DatasetError(f"{path}: {actual} bytes, but metadata.json says {shape} of {dtype} = {expected} bytes")
    if expected == 0:
        return np.zeros(shape, dtype)
    return np.memmap(path, dtype=dtype, mode="r", shape=shape)


def write_split(root: str | Path, tokens: np.ndarray, segment_ids: np.ndarray | None = None,
                actions: dict[str, np.ndarray] | None = None, action_tokens: np.ndarray | None = None,
                token_dtype: str = "uint32", **metadata) -> Path:
    """Write tokens [N, s, s] (and optional segment ids, action arrays, action tokens) in the v1.1 layout."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    n, s = tokens.shape[0], tokens.shape[1]
    np.ascontiguousarray(tokens, dtype=token_dtype).tofile(root / "video.bin")
    if segment_ids is not None:
        np.ascontiguousarray(segment_ids, dtype=np.int32).tofile(root / "segment_ids.bin")
    if actions:
        (root / "actions").mkdir(exist_ok=True)
        for name, values in actions.items():
            np.ascontiguousarray(values, dtype=np.float32).tofile(root / "actions" / f"{name}.bin")
    if action_tokens is not None:
        np.ascontiguousarray(action_tokens, dtype=np.uint16).tofile(root / "actions.bin")
    meta = {**metadata, "num_images": int(n), "s": int(s), "token_dtype": token_dtype}
    (root / "metadata.json").write_text(json.dumps(meta))
    return root


def synthetic_split(root: str | Path, segments: int = 8, frames_per_segment: int = 600, side: int = 16,
                    noise: float = 0.05, seed: int = 0) -> Path:
    """A split with learnable structure: frame i + 15 is frame i's token map rolled by the step
    that driving_command[i] names (one of 5), with a share `noise` of tokens redrawn at random.
    Copying the last frame is right only when the step is zero. The other action files hold zeros
    at the real widths (neck_desired three wide, as in the real files)."""
    rng = np.random.default_rng(seed)
    moves = np.array([(0, 0), (0, 1), (0, -1), (1, 0), (-1, 0)])  # (rows, columns) per 2 Hz step
    vocab = FACTOR_VOCAB ** FACTORS
    tokens, seg, drive = [], [], []
    for k in range(segments):
        n = frames_per_segment
        move = rng.integers(0, len(moves), n)
        # Each of the 15 phases is its own chain: frame i follows frame i - 15 under action i - 15.
        offset = np.zeros((n, 2), np.int64)
        for i in range(STRIDE, n):
            offset[i] = offset[i - STRIDE] + moves[move[i - STRIDE]]
        base = rng.integers(0, vocab, (STRIDE, side, side))
        frames = np.stack([np.roll(base[i % STRIDE], tuple(offset[i]), axis=(0, 1)) for i in range(n)])
        redraw = rng.random(frames.shape) < noise
        frames[redraw] = rng.integers(0, vocab, int(redraw.sum()))
        tokens.append(frames)
        seg.append(np.full(n, k))
        drive.append(moves[move].astype(np.float32) + rng.normal(0, 0.05, (n, 2)).astype(np.float32))
    n_all = segments * frames_per_segment
    actions = {"joint_pos": np.zeros((n_all, 21)), "driving_command": np.concatenate(drive),
               "neck_desired": np.zeros((n_all, 3)), "l_hand_closure": np.zeros(n_all), "r_hand_closure": np.zeros(n_all)}
    return write_split(root, np.concatenate(tokens), np.concatenate(seg), actions, hz=30, vocab_size=vocab,
                       synthetic=f"rolled token maps, seed {seed}, noise {noise}")


def write_generated(out: str | Path, frames: np.ndarray, metadata: dict) -> Path:
    """The challenge's generated layout: video.bin [F, s, s] (prompt | predicted | ground truth)
    and metadata.json with num_images = F, h = w = s and the generation settings."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dtype = metadata.get("token_dtype", "uint32")
    np.ascontiguousarray(frames, dtype=dtype).tofile(out / "video.bin")
    s = frames.shape[-1]
    (out / "metadata.json").write_text(json.dumps({**metadata, "num_images": int(frames.shape[0]), "s": int(s),
                                                   "h": int(s), "w": int(s), "token_dtype": dtype}))
    return out
