"""Training the token world model on the 1X challenge data, with the stage trainers' loop.

Batches are random training windows (16 frames 15 apart, within a segment, as the challenge
trains); validation is the challenge's protocol on the first `val_batches` x `batch_size`
evaluation windows of the validation split (non-overlapping windows, teacher-forced in time).
Continuous actions are standardised with the training split's per-dimension mean and std,
which the checkpoint keeps for evaluation and generation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from wmrl.errors import ConfigError, UserError
from wmrl.models.config import TokenModelConfig
from wmrl.models.token_world_model import TokenWorldModel
from wmrl.offline.onex import FACTOR_VOCAB, FACTORS, STRIDE, WINDOW, TokenDataset, action_stats
from wmrl.train.config import LoopConfig
from wmrl.train.trainer import Trainer

STAGE = "onex"


@dataclass
class OnexDataConfig:
    window: int = WINDOW  # frames per window
    stride: int = STRIDE  # raw 30 Hz frames between window frames
    actions: str = "auto"  # continuous (actions/*.bin), tokens (actions.bin, uint16), none, or auto

    def __post_init__(self):
        if self.window < 2 or self.stride < 1:
            raise ValueError("data.window must be >= 2 and data.stride >= 1")
        if self.actions not in ("auto", "continuous", "tokens", "none"):
            raise ValueError(f"data.actions must be auto, continuous, tokens or none, got '{self.actions}'")


@dataclass
class OnexConfig(LoopConfig):
    """configs/onex*.yaml: the data windows, the model and the training loop."""

    data: OnexDataConfig = field(default_factory=OnexDataConfig)
    model: TokenModelConfig = field(default_factory=TokenModelConfig)

    def __post_init__(self):
        super().__post_init__()
        if self.data.window > self.model.max_steps:
            raise ValueError(f"data.window {self.data.window} exceeds model.max_steps {self.model.max_steps}")


def open_split(path: str | Path, cfg: OnexDataConfig, evaluation: bool = False, actions: str | None = None) -> TokenDataset:
    """A split's windows: every window for training, the non-overlapping ones for evaluation."""
    data = TokenDataset(path, cfg.window, cfg.stride, filter_overlaps=evaluation, actions=actions or cfg.actions)
    if len(data) == 0:
        raise UserError(f"{path}: no window of {cfg.window} frames {cfg.stride} apart fits inside one segment")
    return data


def build_model(payload: dict, device: str = "cpu") -> TokenWorldModel:
    """The token world model of an onex checkpoint payload, in eval mode."""
    from wmrl.config import from_dict

    if payload.get("stage") != STAGE:
        raise UserError("not a 1X token world model checkpoint (wmrl onex train writes those)")
    cfg = from_dict(TokenModelConfig, payload["config"]["model"], source="checkpoint", prefix="model.")
    model = TokenWorldModel(cfg, payload["side"], payload["action_dim"], payload["discrete"], FACTORS, FACTOR_VOCAB)
    model.load_state_dict(payload["model"])
    return model.to(device).eval()


def apply_action_stats(data: TokenDataset, payload: dict) -> None:
    """Standardise `data`'s actions as the checkpoint's training split was; the kinds must agree."""
    if data.action_spec.kind != payload["action_kind"] or data.action_spec.dim != payload["action_dim"]:
        raise UserError(f"{data.root}: actions are {data.action_spec.kind} ({data.action_spec.dim}), the model was "
                        f"trained on {payload['action_kind']} ({payload['action_dim']})")
    if payload.get("action_mean") is not None:
        data.action_mean = np.asarray(payload["action_mean"], np.float32)
        data.action_std = np.asarray(payload["action_std"], np.float32)


class OnexTrainer(Trainer):
    stage = STAGE

    def __init__(self, cfg: OnexConfig, train: TokenDataset, val: TokenDataset, run_dir: str | Path,
                 device: str = "cpu", progress: bool = True):
        super().__init__(cfg, run_dir, device, progress)
        if train.side != val.side or train.action_spec.kind != val.action_spec.kind or train.action_spec.dim != val.action_spec.dim:
            raise UserError(f"{train.root} and {val.root} differ in frame size or actions")
        self.train_data, self.val_data = train, val
        self.action_mean = self.action_std = None
        if train.action_spec.kind == "continuous":
            self.action_mean, self.action_std = action_stats(train)
            for data in (train, val):
                data.action_mean, data.action_std = self.action_mean, self.action_std
        spec = train.action_spec
        try:
            model = TokenWorldModel(cfg.model, train.side, spec.dim, spec.discrete, FACTORS, FACTOR_VOCAB)
        except ValueError as e:
            raise ConfigError(f"model: {e}") from None
        self.rng = np.random.default_rng(cfg.seed + 1000 * self.rank)
        b = cfg.optim.batch_size
        self.val_windows = [np.arange(i, min(i + b, len(val))) for i in range(0, min(len(val), cfg.val_batches * b), b)]
        self.setup(model)

    def tensors(self, data: TokenDataset, windows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        tokens, actions = data.batch(windows)
        return torch.from_numpy(tokens).to(self.device), torch.from_numpy(actions).to(self.device)

    def generators(self) -> dict[str, np.random.Generator]:
        return {"sampler": self.rng}

    def payload(self) -> dict:
        spec = self.train_data.action_spec
        return {"side": self.train_data.side, "action_kind": spec.kind, "action_dim": spec.dim,
                "discrete": spec.discrete, "action_names": [list(n) for n in spec.names],
                "action_mean": None if self.action_mean is None else self.action_mean.tolist(),
                "action_std": None if self.action_std is None else self.action_std.tolist(),
                "train_data": str(self.train_data.root), "val_data": str(self.val_data.root)}

    def loss(self) -> tuple[torch.Tensor, dict[str, float]]:
        windows = self.rng.integers(0, len(self.train_data), self.local_batch)
        terms = self.train_module(*self.tensors(self.train_data, windows))
        loss = terms.pop("loss")
        return loss, {k: float(v.detach()) for k, v in terms.items()}

    def validate(self) -> dict[str, float]:
        sums: dict[str, float] = {}
        count = 0
        for windows in self.val_windows:
            terms = self.model(*self.tensors(self.val_data, windows))
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + float(v) * len(windows)
            count += len(windows)
        out = {f"val_{k}": v / count for k, v in sums.items() if k != "loss"}
        out["val_loss"] = out["val_ce"]  # early stopping and "best" follow the challenge's metric
        return out
