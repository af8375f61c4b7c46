"""A human-readable summary of a replay dataset (`wmrl data info`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from wmrl.data.replay import ReplayDataset
from wmrl.data.store import disk_bytes


def dataset_info(root: str | Path) -> str:
    data = ReplayDataset(root)  # reads every episode: also proves the dataset is intact
    meta, info = data.meta, data.meta["wmrl"]
    returns, steps = data.episode_returns(), data.episode_steps
    finished = ~data.truncated[data.episode_start + steps - 1]
    size = disk_bytes(root)
    frames = len(data.frames)
    raw = frames * int(np.prod(data.frame_shape))
    card = info["card"]
    lines = [
        f"dataset      {root}  (Minari {meta['data_format']}, id '{meta['dataset_id']}')",
        f"env card     {card['name']} ({card['gym_id']}), frame stack K={data.frame_stack}, frames {tuple(data.frame_shape)} uint8",
        f"episodes     {data.num_episodes} ({int(finished.sum())} ended by the env, {int((~finished).sum())} truncated)",
        f"steps        {int(steps.sum())}  (episode length {steps.mean():.1f} ± {steps.std():.1f}, min {steps.min()}, max {steps.max()})",
        f"returns      {returns.mean():.3f} ± {returns.std():.3f}  (min {returns.min():.3f}, max {returns.max():.3f})",
        f"size         {size / 1e6:.2f} MB on disk, {size / frames:.1f} bytes/frame for {frames} frames (raw {raw / frames:.0f}, ratio {raw / size:.1f}x)",
        f"state        {', '.join(f'{n}[{s}]' for n, s in data.state_layout) or 'none recorded'}",
    ]
    for c in info.get("collections", []):
        lines.append(f"collection   from episode {c['first_episode']}: policy {c['policy']}, seed {c['seed']}, "
                     f"{c['num_envs']} env(s), {c['steps']} steps")
    return "\n".join(lines)
