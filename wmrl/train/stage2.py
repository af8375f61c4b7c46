"""Stage 2: the action-conditioned world model over a frozen stage-1 encoder.

Every observation of the dataset is encoded once, at start, into the compact latent z [M, D]
(the encoder is frozen, so the cache is exact). Training clips are row indices into that cache.
Per clip of T observations, with transitions t = 0..T-2:

* teacher forcing: one block-causal pass predicts z_{t+1} from z_<=t, a_<=t for every t;
* rollout: from z_0 alone, `rollout_steps` predictions fed back as inputs (gradients flow
  through them), so the model learns to consume its own outputs as a planner will;
* reward r_t (symlog two-hot), continuation 1 - (terminated_t or a life lost at t+1) by BCE;
* value V(z_t) by TD(lambda) over the clip, bootstrapped from V_target (an EMA copy):
  G_t = r_t + discount * cont_t * ((1 - lambda) V_target(z_{t+1}) + lambda G_{t+1}). One-step TD
  propagates a reward back one step per target update; a life lost 30 steps after a missed ball
  needs the longer return to reach the states where the paddle could still have moved.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from wmrl.data.replay import ReplayDataset, WindowSampler
from wmrl.errors import ConfigError, UserError
from wmrl.models.world_model import WorldModel
from wmrl.train.config import Stage2Config
from wmrl.train.trainer import Trainer


def lambda_returns(reward: torch.Tensor, cont: torch.Tensor, bootstrap: torch.Tensor,
                   discount: float, lam: float) -> torch.Tensor:
    """TD(lambda) targets [B, T] of transitions t with reward r_t, continuation c_t and
    bootstrap V(z_{t+1}), all [B, T]; the last transition bootstraps fully."""
    returns = torch.empty_like(reward)
    ahead = bootstrap[:, -1]
    for t in reversed(range(reward.shape[1])):
        ahead = reward[:, t] + discount * cont[:, t] * ((1 - lam) * bootstrap[:, t] + lam * ahead)
        returns[:, t] = ahead
    return returns


def action_spec(data: ReplayDataset) -> tuple[int, bool]:
    """(number of actions, True) for a discrete action space, (action size, False) for a box."""
    import json

    space = data.meta["action_space"]
    space = json.loads(space) if isinstance(space, str) else space  # Minari stores it as a JSON string
    if space["type"] == "Discrete":
        return int(space["n"]), True
    if space["type"] == "Box" and len(space["shape"]) == 1:
        return int(space["shape"][0]), False
    raise UserError(f"{data.root}: stage 2 needs a Discrete or 1-D Box action space, got {space['type']}")


def state_columns(data: ReplayDataset, names: list[str]) -> list[int]:
    """Columns of the dataset's state vector that hold the named fields, in order."""
    spans = data.state_spans
    missing = [n for n in names if n not in spans]
    if missing:
        raise UserError(f"{data.root} records no state field '{missing[0]}' (fields: {', '.join(spans) or 'none'})")
    return [c for n in names for c in range(spans[n].start, spans[n].stop)]


def continuation(data: ReplayDataset, life_loss: bool) -> np.ndarray:
    """cont [R] float32: 0 where the step ends the episode or (with life_loss) costs a life."""
    ends = data.terminated.copy()
    if life_loss and any(name == "lives" for name, _ in data.state_layout):
        lives = data.states[:, state_columns(data, ["lives"])[0]]
        lost = np.zeros_like(ends)
        lost[:-1] = lives[1:] < lives[:-1]
        ends |= lost & ~data.is_last  # the last row of an episode has no next row of its own
    return (~ends).astype(np.float32)


@torch.no_grad()
def encode_dataset(model: WorldModel, data: ReplayDataset, device: str = "cpu", rows: np.ndarray | None = None,
                   batch_size: int = 512) -> torch.Tensor:
    """z [*rows.shape, M, D] of the frame stacks at `rows` (any shape; default every row, [R, M, D])."""
    rows = np.arange(len(data.frames)) if rows is None else np.asarray(rows)
    flat = rows.reshape(-1)
    z = torch.cat([model.encode(torch.from_numpy(data.stacks(flat[i:i + batch_size])).to(device))
                   for i in range(0, len(flat), batch_size)])
    return z.view(*rows.shape, *z.shape[1:])


def load_warm_start(model: WorldModel, payload: dict) -> None:
    """Copy every weight of a stage-2 payload into `model` except the encoder's and latent statistics."""
    own = ("encoder.", "latent_mean", "latent_std")
    state = {k: v for k, v in payload["model"].items() if not k.startswith(own)}
    mine = {k: v for k, v in model.state_dict().items() if not k.startswith(own)}
    wrong = sorted(set(state) ^ set(mine)) + [k for k in state if k in mine and state[k].shape != mine[k].shape]
    if wrong:
        raise ConfigError(f"warm start: the earlier world model does not match this one ({', '.join(wrong[:3])})")
    model.load_state_dict(state, strict=False)


class Stage2Trainer(Trainer):
    stage = 2

    def __init__(self, cfg: Stage2Config, encoder_payload: dict, data: ReplayDataset, run_dir: str | Path,
                 clip_len: int = 16, val_fraction: float = 0.1, device: str = "cpu", progress: bool = True,
                 warm_start: dict | None = None):
        """`warm_start`: an earlier stage-2 payload whose predictor and heads this run starts from
        (the model-based loop's next round); the encoder and latent statistics stay this run's."""
        super().__init__(cfg, run_dir, device, progress)
        from wmrl.train.stage1 import build_model  # the stage-1 checkpoint's JEPA

        if encoder_payload.get("stage") != 1:
            raise UserError("--encoder must be a stage-1 (encoder) checkpoint")
        self.stack_shape = tuple(encoder_payload["stack_shape"])
        data.require_stack_shape(self.stack_shape, "the encoder")
        if clip_len < cfg.rollout_steps + 1 or clip_len > cfg.model.max_steps:
            raise ConfigError(f"data.clip_len {clip_len} must be in [rollout_steps + 1, model.max_steps] = "
                              f"[{cfg.rollout_steps + 1}, {cfg.model.max_steps}]")
        self.data, self.clip_len, self.val_fraction = data, clip_len, val_fraction
        self.encoder_config = encoder_payload["config"]["model"]["encoder"]
        self.action_dim, self.discrete = action_spec(data)
        self.proprio_columns = state_columns(data, cfg.model.proprio) if cfg.model.proprio else []
        encoder = build_model(encoder_payload).target_encoder
        try:
            model = WorldModel(cfg.model, encoder, self.action_dim, self.discrete, len(self.proprio_columns))
        except ValueError as e:
            raise ConfigError(f"stage2.model: {e}") from None
        if warm_start is not None:
            load_warm_start(model, warm_start)
        model.to(device)

        train_ids, val_ids = data.split(val_fraction)
        if len(val_ids) == 0:
            val_ids = train_ids
        # Per-row training targets, on the device once: latents, actions, rewards, continuation.
        pooled = encode_dataset(model, data, device)  # [R, M, D], not yet standardised
        model.set_latent_stats(pooled[torch.as_tensor(np.isin(data.row_episode, train_ids), device=device)])
        self.z = (pooled - model.latent_mean) / model.latent_std
        self.actions = torch.as_tensor(data.actions, device=device)
        self.rewards = torch.as_tensor(data.rewards, device=device)
        self.cont = torch.as_tensor(continuation(data, cfg.life_loss), device=device)
        self.proprio = (torch.as_tensor(data.states[:, self.proprio_columns], device=device)
                        if self.proprio_columns else None)

        self.sampler = WindowSampler(data, clip_len, self.local_batch, episodes=train_ids, seed=cfg.seed + 1000 * self.rank)
        val_sampler = WindowSampler(data, clip_len, cfg.optim.batch_size, episodes=val_ids, seed=cfg.seed + 2)
        self.val_rows = [val_sampler.sample_rows() for _ in range(cfg.val_batches)]
        self.setup(model)

    def generators(self) -> dict[str, np.random.Generator]:
        return {"sampler": self.sampler.rng}

    def payload(self) -> dict:
        return {"stack_shape": list(self.stack_shape), "encoder_config": self.encoder_config,
                "action_dim": self.action_dim, "discrete": self.discrete, "proprio_columns": self.proprio_columns,
                "clip_len": self.clip_len, "dataset": str(self.data.root), "val_fraction": self.val_fraction,
                "data_source": self.data.meta["wmrl"].get("source")}

    def _distance(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.l1_loss(pred, target) if self.cfg.loss == "l1" else F.mse_loss(pred, target)

    def losses(self, rows: np.ndarray, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        """Every loss term for clips at rows [B, T]; `model` is the (maybe DDP-wrapped) world model."""
        cfg, wm = self.cfg, self.model
        rows = torch.as_tensor(rows, device=self.device)
        z, action, reward, cont = self.z[rows], self.actions[rows], self.rewards[rows], self.cont[rows]  # [B, T, ...]
        proprio = None if self.proprio is None else self.proprio[rows]
        k = cfg.rollout_steps
        out = model(z[:, :-1], action[:, :-1], None if proprio is None else proprio[:, :-1], rollout_steps=k)
        terms = {"latent": self._distance(out["z_next"], z[:, 1:]),  # transitions 0..T-2
                 "rollout": self._distance(out["z_rollout"], z[:, 1:k + 1]),
                 "copy_last": self._distance(z[:, :-1], z[:, 1:]).detach(),  # the baseline to beat
                 "reward": wm.twohot.loss(out["reward_logits"], reward[:, :-1]),
                 "cont": F.binary_cross_entropy_with_logits(out["cont_logits"], cont[:, :-1])}
        if out["p_next"] is not None:
            terms["latent"] = terms["latent"] + self._distance(out["p_next"], proprio[:, 1:])
        if cfg.model.value:
            with torch.no_grad():
                bootstrap = wm.twohot.decode(wm.value(z[:, 1:], target=True))  # [B, T-1]
                target = lambda_returns(reward[:, :-1], cont[:, :-1], bootstrap, cfg.discount, cfg.value_lambda)
            terms["value"] = wm.twohot.loss(out["value_logits"], target)
        return terms

    def total(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        c = self.cfg
        return (c.teacher_weight * terms["latent"] + c.rollout_weight * terms["rollout"] + c.reward_weight * terms["reward"]
                + c.cont_weight * terms["cont"] + c.value_weight * terms.get("value", 0.0))

    def loss(self) -> tuple[torch.Tensor, dict[str, float]]:
        terms = self.losses(self.sampler.sample_rows(), self.train_module)
        return self.total(terms), {k: float(v.detach()) for k, v in terms.items()}

    def after_step(self) -> None:
        if self.cfg.model.value:
            self.model.update_value_target(self.cfg.value_ema)

    def validate(self) -> dict[str, float]:
        rows = [self.losses(r, self.model) for r in self.val_rows]
        out = {f"val_{k}": float(np.mean([float(t[k]) for t in rows])) for k in rows[0]}
        out["val_loss"] = float(np.mean([float(self.total(t)) for t in rows]))
        return out
