"""The 1X challenge's evaluation protocol, its two reference predictors, and generation.

Protocol (the challenge's evaluate.py): on the evaluation windows (16 frames 15 apart, no frame
in two windows, the first `max_examples`), for t = 1..15 the model sees the true frames < t and
predicts all 256 tokens of frame t. Loss = the two factor cross-entropies summed, averaged over
windows x 15 x 256 positions (nats); accuracy = share of tokens whose both factors are argmax-right.
A frame-causal model does all 15 predictions in one teacher-forced pass.

The references are fitted on the very windows they are scored on, so they are their best:
* copy: the previous frame's token, with per factor p(same) = the observed match rate a_k and
  (1 - a_k) / 511 on each other value;
* unigram: each factor's frequency over the target frames (add-one smoothed).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch

from wmrl.models.token_world_model import TokenWorldModel
from wmrl.offline.onex import FACTOR_VOCAB, FACTORS, TokenDataset, factorize, unfactorize, write_generated


class ReferenceCounts:
    """Running counts behind the copy and unigram predictors' CE and accuracy."""

    def __init__(self):
        self.positions = 0
        self.copy_factor_matches = np.zeros(FACTORS, np.int64)
        self.copy_token_matches = 0
        self.unigram = np.zeros((FACTORS, FACTOR_VOCAB), np.int64)
        self.target_tokens: dict[int, int] = {}  # full-token histogram, for the unigram's accuracy

    def add(self, tokens: np.ndarray) -> None:
        """tokens [B, T, s, s] of whole windows; frames 1..T-1 are the targets."""
        prev, target = tokens[:, :-1], tokens[:, 1:]
        f_prev, f_target = factorize(prev), factorize(target)  # [..., 2]
        self.positions += target.size
        self.copy_factor_matches += (f_prev == f_target).reshape(-1, FACTORS).sum(0)
        self.copy_token_matches += int((prev == target).sum())
        for k in range(FACTORS):
            self.unigram[k] += np.bincount(f_target[..., k].ravel(), minlength=FACTOR_VOCAB)
        ids, counts = np.unique(target, return_counts=True)
        for i, c in zip(ids.tolist(), counts.tolist()):
            self.target_tokens[i] = self.target_tokens.get(i, 0) + c

    def metrics(self) -> dict[str, float]:
        n = self.positions
        copy_ce = 0.0
        for m in self.copy_factor_matches.tolist():
            a = min(max(m / n, 1e-9), 1 - 1e-9)
            copy_ce -= (m * math.log(a) + (n - m) * math.log((1 - a) / (FACTOR_VOCAB - 1))) / n
        p = (self.unigram + 1) / (self.unigram + 1).sum(1, keepdims=True)
        unigram_ce = float(-(self.unigram * np.log(p)).sum() / n)
        mode = int(unfactorize(self.unigram.argmax(1)))  # the unigram predictor's one guess
        return {"copy_ce": copy_ce, "copy_acc": self.copy_token_matches / n,
                "unigram_ce": unigram_ce, "unigram_acc": self.target_tokens.get(mode, 0) / n}


@torch.no_grad()
def evaluate(model: TokenWorldModel, data: TokenDataset, max_examples: int | None = None, batch_size: int = 8,
             device: str = "cpu", progress: bool = False) -> dict[str, float]:
    """The challenge's CE and accuracy on `data`'s first `max_examples` windows, with the references."""
    from tqdm import tqdm

    count = len(data) if max_examples is None else min(max_examples, len(data))
    refs, ce_sum, acc_sum = ReferenceCounts(), 0.0, 0.0
    start = time.perf_counter()
    for i in tqdm(range(0, count, batch_size), disable=not progress, unit="batch"):
        tokens, actions = data.batch(np.arange(i, min(i + batch_size, count)))
        terms = model(torch.from_numpy(tokens).to(device), torch.from_numpy(actions).to(device))
        ce_sum += float(terms["ce"]) * len(tokens)  # every window has the same number of positions
        acc_sum += float(terms["acc"]) * len(tokens)
        refs.add(tokens)
    return {"examples": count, "ce": ce_sum / count, "acc": acc_sum / count, **refs.metrics(),
            "seconds": time.perf_counter() - start}


@torch.no_grad()
def generate(model: TokenWorldModel, data: TokenDataset, example: int, out: str | Path, prompt_frames: int = 8,
             temperature: float = 0.0, top_k: int = 0, seed: int = 0, device: str = "cpu") -> dict:
    """Continue window `example` from its first `prompt_frames` frames to the window's end (with the
    window's true actions) and write prompt | predicted | ground truth in the challenge's layout."""
    from wmrl.errors import UserError

    if not 0 <= example < len(data):
        raise UserError(f"--example {example} is outside the {len(data)} windows of {data.root}")
    if not 1 <= prompt_frames < data.window_len:
        raise UserError(f"--prompt-frames must be in [1, {data.window_len - 1}], got {prompt_frames}")
    tokens, actions = data.batch([example])
    tokens_t, actions_t = torch.from_numpy(tokens).to(device), torch.from_numpy(actions).to(device)
    gen = torch.Generator(device=device).manual_seed(seed)
    frames = data.window_len - prompt_frames
    predicted = model.generate(tokens_t[:, :prompt_frames], actions_t, frames, temperature, top_k, gen).cpu().numpy()
    video = np.concatenate([tokens[0, :prompt_frames], predicted[0], tokens[0, prompt_frames:]])
    meta = {k: v for k, v in data.metadata.items() if k not in ("num_images", "s")}
    write_generated(out, video, {**meta, "t": data.window_len, "num_prompt_frames": prompt_frames,
                                 "window_size": data.window_len, "stride": data.stride, "example_ind": example,
                                 "temperature": temperature, "top_k": top_k, "seed": seed,
                                 "val_data_dir": str(data.root)})
    truth = tokens[0, prompt_frames:]
    return {"frames": len(video), "prompt": prompt_frames, "predicted": frames,
            "token_acc": float((predicted[0] == truth).mean()), "out": str(out)}
