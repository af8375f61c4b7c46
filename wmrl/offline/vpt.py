"""OpenAI VPT contractor data: Minecraft video + keyboard/mouse logs, as replay episodes.

A segment is a pair `<key>.mp4` (640x360, 20 fps) + `<key>.jsonl`, one JSON line per video frame:
    {"mouse": {"x", "y", "dx", "dy", "scaledX", "scaledY", "dwheel", "buttons": [0, ...], "newButtons"},
     "keyboard": {"keys": ["key.keyboard.w", ...], "newKeys", "chars"}, "isGuiOpen": bool,
     "hotbar": 0..8, "yaw": deg, "pitch": deg, "xpos", "ypos", "zpos", "tick", "milli", ...}
Segments come from WebDataset shards (`.tar` holding both files of each key) or from folders of
pairs (VPT's own layout); a source spec names them with braces and globs:
`data/vpt/vpt-shards-{000000..000123}.tar`, `data/vpt/*.tar`, `data/vpt/raw`.

Each segment becomes one `Episode` (so the replay samplers and both trainers take it unchanged):
    frames  [N+1, 3, S, S] uint8   every `frameskip`-th kept video frame, resized to S x S
    actions [N, A] float32         what the player did between observation t and t+1:
        mouse_dx, mouse_dy         summed over the step's frames (mouse pixels)
        yaw_delta, pitch_delta     camera change in degrees to the next observation, yaw wrapped
                                   into [-180, 180) (floats: VPT's loader truncates to integers)
        key.*, number.1..9, button.*   1 if pressed in any frame of the step; a hotbar change counts as
                                   the matching number key (VPT's loader does the same)
        hotbar.0..8                the selected slot at the step's last frame, one-hot
        gui                        the inventory / GUI is open at the step's last frame
    states  [N+1, 6] float32       position x, y, z; yaw, pitch; hotbar slot (for probes)
Layout "13d" keeps the 4 continuous columns and the hotbar one-hot (the seed design's actions);
"full" keeps all 36. Null frames (no key, no button, no mouse motion) are kept, or dropped before
the frameskip as VPT's training did. The continuous columns are standardised by an `ActionScaler`
(streaming mean/std over the data) that travels inside every checkpoint trained on it.

A segment that cannot be used (unreadable video, a line that does not parse, a frame count that
differs from the line count) is skipped with a warning naming it; the counts go into the summary.
"""

from __future__ import annotations

import io
import json
import sys
import tarfile
from collections import Counter
from dataclasses import asdict, dataclass
from glob import glob
from pathlib import Path
from typing import Iterator, Literal

import numpy as np

from wmrl.data.replay import ReplayDataset
from wmrl.errors import DatasetError
from wmrl.types import Episode

SOURCE_FPS = 20
CONTINUOUS = ("mouse_dx", "mouse_dy", "yaw_delta", "pitch_delta")
KEYS = ("w", "a", "s", "d", "space", "left.shift", "left.control", "e", "q", "f")  # key.keyboard.<name>
BUTTONS = ("attack", "use", "pick")  # mouse buttons 0, 1, 2
FULL_NAMES = (CONTINUOUS + tuple(f"key.{k}" for k in KEYS) + tuple(f"number.{i}" for i in range(1, 10))
              + tuple(f"button.{b}" for b in BUTTONS) + tuple(f"hotbar.{i}" for i in range(9)) + ("gui",))
LAYOUTS = {"full": FULL_NAMES, "13d": CONTINUOUS + tuple(f"hotbar.{i}" for i in range(9))}
STATE_LAYOUT = [("position", 3), ("camera", 2), ("hotbar", 1)]


@dataclass
class VptConfig:
    """How VPT segments become episodes (the `vpt:` section of an experiment config)."""

    size: int = 64  # frames resized to size x size (VPT's 640x360 is squeezed, as VPT's own models do)
    frameskip: int = 1  # one observation every `frameskip` video frames: 20 / frameskip fps
    layout: Literal["full", "13d"] = "full"
    null_frames: Literal["keep", "drop"] = "keep"
    frame_stack: int = 1  # K frames per observation
    scaler: str | None = None  # action scaler JSON (`wmrl vpt fit-scaler`); fitted at load time if unset
    max_segments: int | None = None  # read at most this many segments (None: all)

    def __post_init__(self):
        if self.size < 8 or self.frameskip < 1 or self.frame_stack < 1:
            raise ValueError("vpt: size must be >= 8, frameskip and frame_stack >= 1")
        if self.max_segments is not None and self.max_segments < 1:
            raise ValueError("vpt.max_segments must be >= 1")

    @property
    def action_names(self) -> tuple[str, ...]:
        return LAYOUTS[self.layout]


class SegmentError(Exception):
    """A segment that cannot be used; `reason` is the summary's category."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


# ----------------------------------------------------------------------------------------------
# Finding segments


@dataclass
class RawSegment:
    key: str
    origin: str  # the shard or folder it came from
    jsonl: bytes
    video: bytes | Path | None  # the mp4 (bytes from a shard, a path in a folder), None if absent


def source_paths(spec: str) -> list[Path]:
    """Shard files and folders named by `spec` (brace ranges and globs expanded), in order."""
    from braceexpand import braceexpand

    paths = []
    for pattern in braceexpand(spec.strip()):
        matches = sorted(glob(pattern)) if any(c in pattern for c in "*?[") else [pattern]
        for m in matches:
            path = Path(m)
            if not path.exists():
                raise DatasetError(f"VPT source not found: {path}")
            if path.is_file() and not path.name.endswith(".tar"):
                raise DatasetError(f"VPT source {path} is neither a .tar shard nor a folder of .mp4/.jsonl pairs")
            paths.append(path)
    if not paths:
        raise DatasetError(f"no VPT shards or folders match '{spec}'")
    return paths


def iter_segments(spec: str) -> Iterator[RawSegment]:
    """Every segment of every source, lazily: one shard is open at a time."""
    for path in source_paths(spec):
        if path.is_dir():
            stems = sorted({p.with_suffix("") for p in path.rglob("*") if p.suffix in (".mp4", ".jsonl")})
            for stem in stems:
                log, video = stem.with_suffix(".jsonl"), stem.with_suffix(".mp4")
                yield RawSegment(str(stem.relative_to(path)), str(path), log.read_bytes() if log.is_file() else b"",
                                 video if video.is_file() else None)
            continue
        try:
            with tarfile.open(path) as tar:
                pairs: dict[str, dict[str, tarfile.TarInfo]] = {}
                for m in tar.getmembers():
                    stem, dot, ext = m.name.rpartition(".")
                    if m.isfile() and dot and ext in ("mp4", "jsonl"):
                        pairs.setdefault(stem, {})[ext] = m
                for key, files in pairs.items():
                    read = lambda ext: tar.extractfile(files[ext]).read() if ext in files else None  # noqa: E731
                    yield RawSegment(key, str(path), read("jsonl") or b"", read("mp4"))
        except (tarfile.TarError, OSError) as e:
            raise DatasetError(f"VPT shard {path} is unreadable: {e}") from None


# ----------------------------------------------------------------------------------------------
# Actions


@dataclass
class FrameLog:
    """One segment's log, one row per video frame F."""

    dx: np.ndarray  # [F] float64 mouse motion
    dy: np.ndarray
    yaw: np.ndarray  # [F] degrees
    pitch: np.ndarray
    keys: np.ndarray  # [F, 10] bool, KEYS
    numbers: np.ndarray  # [F, 9] bool, number keys 1..9 (pressed, or a hotbar change to that slot)
    buttons: np.ndarray  # [F, 3] bool, BUTTONS
    hotbar: np.ndarray  # [F] int slot 0..8
    gui: np.ndarray  # [F] bool
    position: np.ndarray | None  # [F, 3] xpos, ypos, zpos (None when the log does not record it)

    def __len__(self) -> int:
        return len(self.hotbar)

    @property
    def null(self) -> np.ndarray:
        """[F] frames with no key, no button and no mouse motion."""
        return ~(self.keys.any(1) | self.numbers.any(1) | self.buttons.any(1) | (self.dx != 0) | (self.dy != 0))


def parse_log(text: bytes) -> FrameLog:
    """A segment's jsonl -> per-frame arrays. Raises SegmentError on a line that does not parse."""
    f_keys = {f"key.keyboard.{k}": i for i, k in enumerate(KEYS)}
    f_numbers = {f"key.keyboard.{i + 1}": i for i in range(9)}
    rows = [line for line in text.decode("utf-8", errors="replace").splitlines() if line.strip()]
    if not rows:
        raise SegmentError("bad log", "empty jsonl")
    n = len(rows)
    dx, dy, yaw, pitch = (np.zeros(n) for _ in range(4))
    keys, numbers, buttons = np.zeros((n, len(KEYS)), bool), np.zeros((n, 9), bool), np.zeros((n, 3), bool)
    hotbar, gui = np.zeros(n, np.int64), np.zeros(n, bool)
    position = np.zeros((n, 3))
    has_position = True
    last_hotbar = 0  # as VPT's loader: a segment starts from slot 0
    for i, row in enumerate(rows):
        try:
            step = json.loads(row)
            mouse, pressed = step["mouse"], step["keyboard"]["keys"]
            dx[i], dy[i] = float(mouse["dx"]), float(mouse["dy"])
            yaw[i], pitch[i] = float(step["yaw"]), float(step["pitch"])
            for b in mouse["buttons"]:
                if 0 <= int(b) < 3:
                    buttons[i, int(b)] = True
            for k in pressed:
                if k in f_keys:
                    keys[i, f_keys[k]] = True
                elif k in f_numbers:
                    numbers[i, f_numbers[k]] = True
            slot = int(step["hotbar"])
            if not 0 <= slot < 9:
                raise ValueError(f"hotbar {slot} outside 0..8")
            if slot != last_hotbar:
                numbers[i, slot] = True
            hotbar[i], last_hotbar = slot, slot
            gui[i] = bool(step["isGuiOpen"])
            if has_position and all(k in step for k in ("xpos", "ypos", "zpos")):
                position[i] = step["xpos"], step["ypos"], step["zpos"]
            else:
                has_position = False
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            what = f"missing {e}" if isinstance(e, KeyError) else str(e).splitlines()[0]
            raise SegmentError("bad log", f"line {i + 1}: {what}") from None
    return FrameLog(dx, dy, yaw, pitch, keys, numbers, buttons, hotbar, gui, position if has_position else None)


def wrap_degrees(angle: np.ndarray) -> np.ndarray:
    """Angles into [-180, 180)."""
    return (angle + 180.0) % 360.0 - 180.0


def step_actions(log: FrameLog, frameskip: int = 1, null_frames: str = "keep") -> tuple[np.ndarray, np.ndarray]:
    """(observation frames [N+1], full-layout actions [N, 36] float32) of a segment.

    Observation t is kept frame t * frameskip; action t aggregates the kept frames
    t * frameskip .. (t + 1) * frameskip - 1, those shown from observation t up to observation t + 1.
    """
    kept = np.flatnonzero(~log.null) if null_frames == "drop" else np.arange(len(log))
    n = (len(kept) - 1) // frameskip  # N steps, each with a full frameskip of frames
    obs_frames = kept[: n * frameskip + 1: frameskip]  # [N+1]
    span = kept[: n * frameskip].reshape(n, frameskip)  # [N, k] frames of each step
    last = span[:, -1]  # [N] each step's last frame
    hotbar = np.zeros((n, 9), np.float32)
    hotbar[np.arange(n), log.hotbar[last]] = 1
    columns = [
        log.dx[span].sum(1, keepdims=True), log.dy[span].sum(1, keepdims=True),
        wrap_degrees(np.diff(log.yaw[obs_frames]))[:, None], np.diff(log.pitch[obs_frames])[:, None],
        log.keys[span].any(1), log.numbers[span].any(1), log.buttons[span].any(1), hotbar, log.gui[last][:, None],
    ]
    return obs_frames, np.concatenate([c.astype(np.float32) for c in columns], axis=1)


def select_layout(actions: np.ndarray, layout: str) -> np.ndarray:
    """Full-layout actions [N, 36] -> the layout's columns [N, A]."""
    return actions[:, [FULL_NAMES.index(name) for name in LAYOUTS[layout]]]


class RunningMoments:
    """Streaming per-column mean and variance (Chan et al.'s parallel update), in float64."""

    def __init__(self, width: int):
        self.count, self.mean, self.m2 = 0, np.zeros(width), np.zeros(width)

    def update(self, x: np.ndarray) -> None:
        """Add rows x [N, width]."""
        if len(x) == 0:
            return
        x = np.asarray(x, np.float64)
        n, mean = len(x), x.mean(0)
        delta, total = mean - self.mean, self.count + n
        self.m2 += ((x - mean) ** 2).sum(0) + delta ** 2 * self.count * n / total
        self.mean += delta * n / total
        self.count = total

    @property
    def std(self) -> np.ndarray:
        return np.sqrt(self.m2 / max(self.count, 1))


@dataclass
class ActionScaler:
    """Mean/std of the continuous action columns, fitted on the data at one frameskip."""

    names: list[str]
    mean: list[float]
    std: list[float]
    count: int  # steps it was fitted on
    frameskip: int
    null_frames: str

    def apply(self, actions: np.ndarray, names: tuple[str, ...]) -> np.ndarray:
        """Standardise the scaler's columns of actions [N, A] (columns named by `names`)."""
        out = actions.copy()
        for name, mean, std in zip(self.names, self.mean, self.std):
            if name in names:
                col = names.index(name)
                out[:, col] = (out[:, col] - mean) / (std if std > 0 else 1.0)
        return out

    def check(self, cfg: VptConfig, where: str) -> None:
        if (self.frameskip, self.null_frames) != (cfg.frameskip, cfg.null_frames):
            raise DatasetError(f"{where}: the action scaler was fitted at frameskip {self.frameskip}, null frames "
                               f"'{self.null_frames}', the data is read at {cfg.frameskip}, '{cfg.null_frames}'")

    @classmethod
    def fitted(cls, moments: RunningMoments, cfg: VptConfig) -> ActionScaler:
        """The scaler of moments accumulated over the continuous columns, read at cfg's frameskip."""
        return cls(list(CONTINUOUS), moments.mean.tolist(), moments.std.tolist(), moments.count,
                   cfg.frameskip, cfg.null_frames)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict, where: str = "action scaler") -> ActionScaler:
        try:
            scaler = cls(**d)
            if not len(scaler.names) == len(scaler.mean) == len(scaler.std):
                raise ValueError("names, mean and std differ in length")
        except (TypeError, ValueError) as e:
            raise DatasetError(f"{where} is not an action scaler: {e}") from None
        return scaler

    @classmethod
    def load(cls, path: str | Path) -> ActionScaler:
        try:
            return cls.from_dict(json.loads(Path(path).read_text()), str(path))
        except (OSError, json.JSONDecodeError) as e:
            raise DatasetError(f"cannot read action scaler {path}: {e}") from None

    def save(self, path: str | Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(self.to_dict(), indent=1))


# ----------------------------------------------------------------------------------------------
# Video


def probe_frames(video: bytes | Path) -> int:
    """Frame count of an mp4 from its container (no decoding); SegmentError if unreadable."""
    import av  # PyAV: loaded by the functions that need it (this module is imported for VptConfig)

    try:
        with av.open(io.BytesIO(video) if isinstance(video, bytes) else str(video)) as container:
            stream = container.streams.video[0]
            return stream.frames or sum(1 for p in container.demux(stream) if p.size)
    except (av.FFmpegError, IndexError, OSError) as e:
        raise SegmentError("bad video", str(e).splitlines()[0] if str(e) else type(e).__name__) from None


def decode_frames(video: bytes | Path, keep: np.ndarray, size: int) -> tuple[np.ndarray, int]:
    """(frames [len(keep), 3, size, size] uint8 at the frame indices `keep`, total frames decoded)."""
    import av
    import cv2

    wanted = {int(i): j for j, i in enumerate(keep)}
    out = np.zeros((len(keep), 3, size, size), np.uint8)
    count = 0
    try:
        with av.open(io.BytesIO(video) if isinstance(video, bytes) else str(video)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                if count in wanted:
                    rgb = frame.to_ndarray(format="rgb24")  # [H, W, 3]
                    out[wanted[count]] = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA).transpose(2, 0, 1)
                count += 1
    except (av.FFmpegError, IndexError, OSError) as e:
        raise SegmentError("bad video", str(e).splitlines()[0] if str(e) else type(e).__name__) from None
    return out, count


# ----------------------------------------------------------------------------------------------
# Segments -> episodes -> a dataset


def segment_episode(raw: RawSegment, cfg: VptConfig) -> Episode:
    """One segment as an episode with full-layout, unscaled actions; SegmentError if unusable."""
    _require_pair(raw)
    log = parse_log(raw.jsonl)
    obs_frames, actions = step_actions(log, cfg.frameskip, cfg.null_frames)
    if len(actions) == 0:
        raise SegmentError("too short", f"{len(log)} frames give no step at frameskip {cfg.frameskip}")
    frames, count = decode_frames(raw.video, obs_frames, cfg.size)
    if count != len(log):
        raise SegmentError("frame count mismatch", f"{count} video frames, {len(log)} log lines")
    states = None
    if log.position is not None:
        f = obs_frames
        states = np.column_stack([log.position[f], log.yaw[f], log.pitch[f], log.hotbar[f]]).astype(np.float32)
    n = len(actions)
    truncated = np.zeros(n, bool)
    truncated[-1] = True  # a segment ends because the recording does, not the game
    return Episode(frames, actions, np.zeros(n), np.zeros(n, bool), truncated, states)


class SkipLog:
    """Counts skipped segments by reason and warns about each on stderr."""

    def __init__(self, quiet: bool = False):
        self.counts: Counter[str] = Counter()
        self.quiet = quiet

    def skip(self, raw: RawSegment, error: SegmentError) -> None:
        self.counts[error.reason] += 1
        if not self.quiet:
            print(f"warning: skipped VPT segment {raw.key} of {raw.origin}: {error}", file=sys.stderr)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        if not self.counts:
            return "0 skipped"
        return f"{self.total} skipped (" + ", ".join(f"{n} {reason}" for reason, n in sorted(self.counts.items())) + ")"


def fit_scaler(spec: str, cfg: VptConfig, skips: SkipLog | None = None) -> ActionScaler:
    """Streaming mean/std of the continuous action columns over every usable segment of `spec`.
    Reads the logs and the video headers only (no decoding)."""
    skips = skips or SkipLog()
    moments = RunningMoments(len(CONTINUOUS))
    for raw in _limited(iter_segments(spec), cfg.max_segments):
        try:
            log = _checked_log(raw)
            moments.update(step_actions(log, cfg.frameskip, cfg.null_frames)[1][:, :len(CONTINUOUS)])
        except SegmentError as e:
            skips.skip(raw, e)
    if moments.count == 0:
        raise DatasetError(f"no usable VPT segment in '{spec}' ({skips.summary()})")
    return ActionScaler.fitted(moments, cfg)


def _checked_log(raw: RawSegment) -> FrameLog:
    """The parsed log of a segment whose video exists, opens and has one frame per log line."""
    _require_pair(raw)
    log = parse_log(raw.jsonl)
    count = probe_frames(raw.video)
    if count != len(log):
        raise SegmentError("frame count mismatch", f"{count} video frames, {len(log)} log lines")
    return log


def _require_pair(raw: RawSegment) -> None:
    if raw.video is None:
        raise SegmentError("missing file", "no .mp4 beside the .jsonl")
    if not raw.jsonl:
        raise SegmentError("missing file", "no .jsonl beside the .mp4 (or it is empty)")


def _limited(segments: Iterator[RawSegment], limit: int | None) -> Iterator[RawSegment]:
    for i, raw in enumerate(segments):
        if limit is not None and i >= limit:
            return
        yield raw


def open_vpt(spec: str, cfg: VptConfig, scaler: ActionScaler | None = None, quiet: bool = False) -> ReplayDataset:
    """Decode the segments of `spec` into an in-memory replay dataset with scaled actions in cfg.layout.

    `scaler`: the one a checkpoint carries (evaluation) or None to use cfg.scaler, or failing that to
    fit one on these segments. The dataset's meta["wmrl"]["source"] records the options, the scaler
    and the skip counts; trainers put it into their checkpoints.
    """
    import gymnasium as gym
    from minari.serialization import serialize_space

    if scaler is None and cfg.scaler:
        scaler = ActionScaler.load(cfg.scaler)
    skips = SkipLog(quiet)
    episodes = []
    for raw in _limited(iter_segments(spec), cfg.max_segments):
        try:
            episodes.append(segment_episode(raw, cfg))
        except SegmentError as e:
            skips.skip(raw, e)
    if not episodes:
        raise DatasetError(f"no usable VPT segment in '{spec}' ({skips.summary()})")
    if scaler is None:
        moments = RunningMoments(len(CONTINUOUS))
        for ep in episodes:
            moments.update(ep.actions[:, :len(CONTINUOUS)])
        scaler = ActionScaler.fitted(moments, cfg)
    scaler.check(cfg, spec)
    names = cfg.action_names
    if any(ep.states is None for ep in episodes):  # state only where every segment records it
        for ep in episodes:
            ep.states = None
    for ep in episodes:
        ep.actions = scaler.apply(select_layout(ep.actions, cfg.layout), names)
    space = gym.spaces.Box(-np.inf, np.inf, (len(names),), np.float32)
    meta = {
        "dataset_id": f"vpt:{spec}",
        "total_episodes": len(episodes),
        "total_steps": int(sum(len(ep) for ep in episodes)),
        "action_space": serialize_space(space),
        "wmrl": {"frame_shape": [3, cfg.size, cfg.size], "frame_stack": cfg.frame_stack,
                 "state_layout": [list(x) for x in STATE_LAYOUT] if episodes[0].states is not None else [],
                 "source": {"kind": "vpt", "spec": spec, "options": asdict(cfg), "action_names": list(names),
                            "action_scaler": scaler.to_dict(), "skipped": dict(skips.counts)}},
    }
    data = ReplayDataset.from_episodes(f"vpt:{spec}", meta, episodes)
    if not quiet:
        print(f"vpt: {len(episodes)} segments, {meta['total_steps']} steps at {SOURCE_FPS / cfg.frameskip:g} fps, "
              f"{skips.summary()}", file=sys.stderr)
    return data


def vpt_info(spec: str, cfg: VptConfig) -> str:
    """Segments, frames, duration and action statistics of a source (logs and video headers only)."""
    skips = SkipLog()
    frames, steps, nulls, segments = 0, 0, 0, 0
    moments = RunningMoments(len(FULL_NAMES))
    shards = source_paths(spec)
    for raw in _limited(iter_segments(spec), cfg.max_segments):
        try:
            log = _checked_log(raw)
        except SegmentError as e:
            skips.skip(raw, e)
            continue
        segments += 1
        frames += len(log)
        nulls += int(log.null.sum())
        actions = step_actions(log, cfg.frameskip, cfg.null_frames)[1]
        steps += len(actions)
        moments.update(actions)
    if segments == 0:
        raise DatasetError(f"no usable VPT segment in '{spec}' ({skips.summary()})")
    hours = frames / SOURCE_FPS / 3600
    lines = [
        f"source       {spec}  ({len(shards)} shard(s)/folder(s))",
        f"segments     {segments} usable, {skips.summary()}",
        f"frames       {frames} ({hours * 60:.1f} min at {SOURCE_FPS} fps), null frames {nulls / frames:.1%}",
        f"steps        {steps} at frameskip {cfg.frameskip} ({SOURCE_FPS / cfg.frameskip:g} fps), null frames {cfg.null_frames}",
        "continuous   " + "  ".join(f"{n} {m:+.3f} ± {s:.3f}" for n, m, s in
                                    zip(CONTINUOUS, moments.mean[:4], moments.std[:4])),
    ]
    rates = [(name, moments.mean[i]) for i, name in enumerate(FULL_NAMES) if i >= len(CONTINUOUS)]
    for start in range(0, len(rates), 6):
        lines.append(("share        " if start == 0 else "             ")
                     + "  ".join(f"{n} {r:.3f}" for n, r in rates[start:start + 6]))
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Writing segments in VPT's format (tests, and a synthetic source for the demo)


def log_line(tick: int, dx: float = 0.0, dy: float = 0.0, keys: tuple[str, ...] = (), buttons: tuple[int, ...] = (),
             hotbar: int = 0, yaw: float = 0.0, pitch: float = 0.0, gui: bool = False,
             position: tuple[float, float, float] = (0.0, 64.0, 0.0)) -> dict:
    """One jsonl line with every field a VPT contractor log has (keys named 'w', 'left.shift', '1', ...)."""
    return {
        "mouse": {"x": 640.0, "y": 360.0, "dx": dx, "dy": dy, "scaledX": dx / 2, "scaledY": dy / 2, "dwheel": 0.0,
                  "buttons": list(buttons), "newButtons": []},
        "keyboard": {"keys": [f"key.keyboard.{k}" for k in keys], "newKeys": [], "chars": ""},
        "isGuiOpen": gui, "isGuiInventory": gui, "hotbar": hotbar, "yaw": yaw, "pitch": pitch,
        "xpos": position[0], "ypos": position[1], "zpos": position[2],
        "tick": tick, "milli": 1_650_000_000_000 + 50 * tick, "inventory": [], "serverTick": tick,
        "serverTickDurationMs": 50.0, "stats": {},
    }


def encode_mp4(frames: np.ndarray, fps: int = SOURCE_FPS) -> bytes:
    """RGB frames [F, H, W, 3] uint8 (H, W even) -> H.264 mp4 bytes, as VPT's recordings are stored."""
    import av

    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "15", "preset": "veryfast"}
        for rgb in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")))
        container.mux(stream.encode())
    return buffer.getvalue()


def jsonl_bytes(lines: list[dict]) -> bytes:
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


def write_shard(path: str | Path, segments: dict[str, tuple[bytes, bytes]]) -> None:
    """A WebDataset shard: key -> (mp4 bytes, jsonl bytes) stored as <key>.mp4 and <key>.jsonl."""
    with tarfile.open(path, "w") as tar:
        for key, (video, log) in segments.items():
            for ext, blob in (("mp4", video), ("jsonl", log)):
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(blob)
                tar.addfile(info, io.BytesIO(blob))


def write_folder(folder: str | Path, segments: dict[str, tuple[bytes, bytes]]) -> None:
    """VPT's own layout: <folder>/<key>.mp4 beside <key>.jsonl."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for key, (video, log) in segments.items():
        (folder / f"{key}.mp4").write_bytes(video)
        (folder / f"{key}.jsonl").write_bytes(log)


DEGREES_PER_PIXEL = 0.15  # Minecraft's camera turn per mouse pixel at the default sensitivity


def synthetic_segment(rng: np.random.Generator, frames: int, width: int = 128, height: int = 72) -> tuple[bytes, bytes]:
    """A segment whose pictures follow its actions: the view is a window onto a fixed 360° panorama,
    turned by the mouse (yaw and pitch follow dx, dy as in Minecraft), with a hotbar strip whose
    selected slot is lit and a dark overlay while the GUI is open. -> (mp4 bytes, jsonl bytes)."""
    import cv2

    world = np.random.default_rng(7)  # the same panorama in every segment
    pano_w = width * 4
    panorama = cv2.resize(world.integers(0, 256, (6, 24, 3), dtype=np.uint8), (pano_w, height * 2),
                          interpolation=cv2.INTER_CUBIC)  # [2H, 4W, 3]: 360° of yaw, 2 views of pitch
    yaw, pitch, hotbar, gui = 0.0, 0.0, 0, False
    pos = np.array([0.0, 64.0, 0.0])
    images, lines = [], []
    dx = 0.0
    for t in range(frames):
        if t % 10 == 0:  # a new intention every half second
            dx, dy = rng.normal(0, 25), rng.normal(0, 8)
            keys = tuple(k for k in KEYS[:5] if rng.random() < 0.2)
            buttons = (0,) if rng.random() < 0.3 else ()
            if rng.random() < 0.2:
                hotbar = int(rng.integers(9))
            gui = bool(rng.random() < 0.1)
        if rng.random() < 0.3:  # idle frames happen: no motion, no key
            step_dx, step_dy, step_keys, step_buttons = 0.0, 0.0, (), ()
        else:
            step_dx, step_dy, step_keys, step_buttons = dx, dy, keys, buttons
        x0 = int(round(yaw / 360 * pano_w)) % pano_w
        y0 = int(round((pitch + 45) / 90 * height))
        view = np.roll(panorama, -x0, axis=1)[y0:y0 + height, :width].copy()
        slot_w = width // 9
        view[-6:, :] = 40
        view[-6:, hotbar * slot_w:(hotbar + 1) * slot_w] = 250
        if gui:
            view = view // 3
        images.append(view)
        lines.append(log_line(t, step_dx, step_dy, step_keys, step_buttons, hotbar, yaw, pitch, gui, tuple(pos)))
        if not gui:
            yaw = float(wrap_degrees(np.array(yaw + DEGREES_PER_PIXEL * step_dx)))
            pitch = float(np.clip(pitch + DEGREES_PER_PIXEL * step_dy, -45, 45))
        if "w" in step_keys:
            pos += [np.cos(np.radians(yaw)) * 0.2, 0, np.sin(np.radians(yaw)) * 0.2]
    return encode_mp4(np.stack(images)), jsonl_bytes(lines)
