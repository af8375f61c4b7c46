"""Stage-2 evaluation on held-out episodes: latent error by horizon against copy-last, reward and
termination heads against constant predictors.

For clips of H+1 observations (actions from the data):
* teacher-forced step h: z_h predicted from the true z_<h; baseline: copy z_{h-1};
* open loop step h: z_h imagined from z_0 and the actions alone; baseline: copy z_0;
* reward MAE beside the training-set mean reward; termination (episode end or, as trained, a
  lost life) AUC beside 0.5 and BCE beside the base rate.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.stats import rankdata
import torch

from wmrl.models.world_model import WorldModel
from wmrl.data.replay import ReplayDataset, as_dataset, WindowSampler
from wmrl.errors import DatasetError, UserError


def auc(score: np.ndarray, label: np.ndarray) -> float:
    """Area under the ROC curve of `score` for boolean `label` (nan without both classes): the share
    of (positive, negative) pairs the score orders right, a tie counting half (Mann-Whitney U), so a
    constant score gives 0.5 whatever the row order."""
    pos, neg = label.sum(), (~label).sum()
    if pos == 0 or neg == 0:
        return float("nan")
    ranks = rankdata(score)  # ties share their average rank
    return float((ranks[label].sum() - pos * (pos + 1) / 2) / (pos * neg))


def load_world_model(checkpoint: str | Path) -> tuple[dict, WorldModel]:
    """(checkpoint payload, rebuilt world model) of a stage-2 run folder or checkpoint file."""
    from wmrl.train.checkpoint import load_checkpoint
    payload = load_checkpoint(checkpoint)
    if payload.get("stage") != 2:
        raise UserError(f"{checkpoint} is not a stage-2 (world model) checkpoint")
    return payload, WorldModel.from_checkpoint(payload)


@torch.no_grad()
def evaluate_stage2(checkpoint: str | Path, data_root: str | Path | ReplayDataset, horizon: int = 8, clips: int = 512,
                    seed: int = 0) -> dict:
    from wmrl.config import from_dict
    from wmrl.train.config import Stage2Config
    from wmrl.train.stage2 import continuation, encode_dataset

    payload, wm = load_world_model(checkpoint)
    cfg = from_dict(Stage2Config, payload["config"], source="checkpoint")
    data = as_dataset(data_root)
    data.require_stack_shape(payload["stack_shape"], "the world model")
    if not 1 <= horizon < cfg.model.max_steps:
        raise UserError(f"--horizon must be in [1, {cfg.model.max_steps - 1}] for this model, got {horizon}")
    train_ids, val_ids = data.split(payload["val_fraction"])
    if len(val_ids) == 0:
        raise DatasetError(f"{data.root} has too few episodes to hold any out")
    rows = WindowSampler(data, horizon + 1, clips, episodes=val_ids, seed=seed).sample_rows()  # [N, H+1]
    z = encode_dataset(wm, data, rows=rows)  # [N, H+1, M, D]
    action = torch.as_tensor(data.actions[rows])
    proprio = torch.as_tensor(data.states[rows][..., payload["proprio_columns"]]) if payload["proprio_columns"] else None

    def l1(a: torch.Tensor, b: torch.Tensor) -> list[float]:  # [N, H, M, D] -> per step
        return (a - b).abs().mean((0, 2, 3)).tolist()

    p_in = None if proprio is None else proprio[:, :horizon]
    z_tf, _, r_logits, c_logits = wm.predict(z[:, :horizon], action[:, :horizon], p_in)
    z_ol, _, _ = wm.rollout(z[:, 0], action[:, :horizon], None if proprio is None else proprio[:, :1])
    target = z[:, 1:]
    result = {"horizon": horizon, "clips": len(rows),
              "teacher_forced": l1(z_tf, target), "copy_last": l1(z[:, :-1], target),
              "open_loop": l1(z_ol, target), "copy_first": l1(z[:, :1].expand_as(target), target)}

    reward = data.rewards[rows[:, :horizon]]
    reward_pred = wm.twohot.decode(r_logits).numpy()
    constant = data.rewards[np.isin(data.row_episode, train_ids) & ~data.is_last].mean()
    result["reward_mae"] = float(np.abs(reward_pred - reward).mean())
    result["reward_mae_constant"] = float(np.abs(constant - reward).mean())

    ends = continuation(data, cfg.life_loss)[rows[:, :horizon]] == 0  # [N, H]
    p_end = 1 - torch.sigmoid(c_logits).numpy()
    rate = float(np.clip(ends.mean(), 1e-6, 1 - 1e-6))

    def bce(p: np.ndarray) -> float:
        p = np.clip(p, 1e-6, 1 - 1e-6)
        return float(-(ends * np.log(p) + ~ends * np.log(1 - p)).mean())

    result.update(termination_auc=auc(p_end.ravel(), ends.ravel()), termination_bce=bce(p_end),
                  termination_bce_constant=bce(np.full_like(p_end, rate)), terminations=int(ends.sum()))
    return result


def format_stage2_table(r: dict) -> str:
    lines = [f"{'step':>4} {'teacher-forced':>15} {'copy-last':>10} {'open-loop':>10} {'copy-first':>11}"]
    for h in range(r["horizon"]):
        lines.append(f"{h + 1:>4} {r['teacher_forced'][h]:>15.4f} {r['copy_last'][h]:>10.4f} "
                     f"{r['open_loop'][h]:>10.4f} {r['copy_first'][h]:>11.4f}")
    lines.append(f"reward MAE {r['reward_mae']:.4f} (constant {r['reward_mae_constant']:.4f}); termination AUC "
                 f"{r['termination_auc']:.3f}, BCE {r['termination_bce']:.4f} (constant {r['termination_bce_constant']:.4f}, "
                 f"{r['terminations']} ends)")
    beaten = [h + 1 for h in range(r["horizon"]) if r["open_loop"][h] >= r["copy_first"][h]]
    if beaten:
        lines.append(f"warning: open-loop rollout does not beat copy-first at step(s) {beaten}")
    if r["teacher_forced"][0] >= r["copy_last"][0]:
        lines.append("warning: the one-step prediction does not beat copy-last")
    lines.append(f"{r['clips']} held-out clips of {r['horizon'] + 1} observations; latent L1 on standardised latents")
    return "\n".join(lines)


def plot_stage2(r: dict, out: str | Path) -> None:
    """Save the latent error by horizon as a PNG: teacher forcing and open loop, each beside its
    copying baseline."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers
    import matplotlib.pyplot as plt

    steps = np.arange(1, r["horizon"] + 1)
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=120)
    ax.plot(steps, r["open_loop"], "o-", color="C0", label="open-loop rollout")
    ax.plot(steps, r["copy_first"], "o--", color="C0", alpha=0.5, label="copy first latent")
    ax.plot(steps, r["teacher_forced"], "s-", color="C1", label="teacher-forced")
    ax.plot(steps, r["copy_last"], "s--", color="C1", alpha=0.5, label="copy last latent")
    ax.set(xlabel="prediction step", ylabel="latent L1 (standardised)", xticks=steps,
           title=f"held-out latent error, {r['clips']} clips")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


@torch.no_grad()
def imagined_video(checkpoint: str | Path, data_root: str | Path | ReplayDataset, out: str | Path, horizon: int = 8, clips: int = 4,
                   bank_rows: int = 4000, seed: int = 0, scale: int = 4) -> int:
    """Write an mp4 of held-out clips: real frames (left) beside the open-loop imagination (right).

    There is no pixel decoder, so an imagined latent is shown as the dataset frame whose encoded
    latent is nearest (L1) to it, from up to `bank_rows` rows of training episodes. Returns the
    number of video frames written.
    """
    from wmrl.eval.episodes import write_video
    from wmrl.train.stage2 import encode_dataset

    payload, wm = load_world_model(checkpoint)
    if payload["proprio_columns"]:
        raise UserError("the imagined-rollout video needs a world model without proprioceptive inputs")
    data = as_dataset(data_root)
    train_ids, val_ids = data.split(payload["val_fraction"])
    rng = np.random.default_rng(seed)
    bank = np.flatnonzero(np.isin(data.row_episode, train_ids))
    bank = np.sort(rng.choice(bank, min(bank_rows, len(bank)), replace=False))
    bank_z = encode_dataset(wm, data, rows=bank)  # [bank, M, D]
    rows = WindowSampler(data, horizon + 1, clips, episodes=val_ids if len(val_ids) else train_ids, seed=seed).sample_rows()
    z0 = wm.encode(torch.from_numpy(data.stacks(rows[:, 0])))
    imagined, _, _ = wm.rollout(z0, torch.as_tensor(data.actions[rows[:, :horizon]]))  # [N, H, M, D]
    nearest = bank[torch.cdist(imagined.flatten(2), bank_z.flatten(1)[None].expand(len(rows), -1, -1), p=1).argmin(-1).numpy()]

    # Each video frame: the real newest frame (left) beside the imagined one (right), [C, H, 2W];
    # step 0 shows the real start frame on both sides.
    frames = [np.concatenate([data.frames[clip[step]], data.frames[clip[0] if step == 0 else imagined_rows[step - 1]]], 2)
              for clip, imagined_rows in zip(rows, nearest) for step in range(horizon + 1)]
    write_video(frames, out, fps=4, scale=scale)
    return len(frames)
