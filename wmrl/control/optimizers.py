"""Sampling-based trajectory optimizers that know nothing of world models.

An objective maps candidate action sequences to scores (higher is better):
``objective(actions) -> scores [S]`` with actions [S, H, A] float (continuous) or [S, H] long
(discrete). An optimizer refits a sampling distribution over sequences to the best candidates and
returns the best sequence it evaluated plus the refitted distribution, which an MPC agent shifts
by one step to warm-start the next call. `optimize_batch` solves N problems at once with one
objective call per iteration (``actions [N, S, H(, A)] -> scores [N, S]``): one batched model
rollout for N envs costs far less than N small ones.

Example:
    >>> dist = Gaussian.initial(horizon=8, low=-torch.ones(2), high=torch.ones(2), init_std=0.5)
    >>> best, dist = CEM(population=256, elites=32, iterations=3).optimize(objective, dist)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

Objective = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class Gaussian:
    """Independent Gaussians per step and action dimension, samples clipped to [low, high]."""

    mean: torch.Tensor  # [H, A]
    std: torch.Tensor  # [H, A]
    low: torch.Tensor  # [A]
    high: torch.Tensor  # [A]
    init_std: float  # share of the action range, for new steps
    min_std: float = 0.05  # share of the action range

    @classmethod
    def initial(cls, horizon: int, low: torch.Tensor, high: torch.Tensor, init_std: float = 0.5,
                min_std: float = 0.05) -> Gaussian:
        low, high = low.float(), high.float()
        mean = ((low + high) / 2).expand(horizon, -1).clone()
        return cls(mean, (init_std * (high - low)).expand(horizon, -1).clone(), low, high, init_std, min_std)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:  # [n, H, A]
        noise = torch.randn((n, *self.mean.shape), generator=generator, dtype=self.mean.dtype)
        samples = self.mean + self.std * noise
        samples[0] = self.mean  # the current plan itself is always a candidate
        return samples.clamp(self.low, self.high)

    def fit(self, samples: torch.Tensor, weights: torch.Tensor, momentum: float) -> Gaussian:
        """Refit to samples [E, H, A] with weights [E] summing to 1, keeping `momentum` of the old."""
        w = weights.view(-1, 1, 1)
        mean = (w * samples).sum(0)
        std = ((w * (samples - mean) ** 2).sum(0)).sqrt().clamp_min(self.min_std * float((self.high - self.low).min()))
        return Gaussian(momentum * self.mean + (1 - momentum) * mean, momentum * self.std + (1 - momentum) * std,
                        self.low, self.high, self.init_std, self.min_std)

    def shift(self) -> Gaussian:
        """Drop the executed first step; the new last step starts from the prior."""
        fresh = Gaussian.initial(1, self.low, self.high, self.init_std, self.min_std)
        return Gaussian(torch.cat([self.mean[1:], fresh.mean]), torch.cat([self.std[1:], fresh.std]),
                        self.low, self.high, self.init_std, self.min_std)

    def mode(self) -> torch.Tensor:  # [H, A]
        return self.mean.clamp(self.low, self.high)


@dataclass
class Categorical:
    """Independent categoricals per step over `n` discrete actions: probs [H, n].

    The first action of the candidates cycles through all `n` actions (stratified), so every
    first action is scored by several continuations even with a peaked distribution.
    """

    probs: torch.Tensor  # [H, n]
    smoothing: float = 0.1  # mass spread uniformly at each refit, so no action dies out

    @classmethod
    def initial(cls, horizon: int, n: int, smoothing: float = 0.1) -> Categorical:
        return cls(torch.full((horizon, n), 1.0 / n), smoothing)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:  # [n, H] long
        samples = torch.multinomial(self.probs, n, replacement=True, generator=generator).T.contiguous()
        samples[:, 0] = torch.arange(n) % self.probs.shape[1]
        samples[0] = self.probs.argmax(-1)  # the current plan itself is always a candidate
        return samples

    def fit(self, samples: torch.Tensor, weights: torch.Tensor, momentum: float) -> Categorical:
        counts = (weights.view(-1, 1, 1) * F.one_hot(samples, self.probs.shape[1])).sum(0)  # [H, n]
        new = (1 - self.smoothing) * counts + self.smoothing / self.probs.shape[1]
        return Categorical(momentum * self.probs + (1 - momentum) * new, self.smoothing)

    def shift(self) -> Categorical:
        n = self.probs.shape[1]
        return Categorical(torch.cat([self.probs[1:], torch.full((1, n), 1.0 / n)]), self.smoothing)

    def mode(self) -> torch.Tensor:  # [H]
        return self.probs.argmax(-1)


Distribution = Gaussian | Categorical


class CEM:
    """Cross-entropy method: sample, keep the `elites` best, refit to them with equal weights."""

    def __init__(self, population: int = 256, elites: int = 32, iterations: int = 3, momentum: float = 0.1,
                 generator: torch.Generator | None = None):
        if not 1 <= elites <= population:
            raise ValueError(f"elites must be in [1, {population}], got {elites}")
        self.population, self.elites, self.iterations, self.momentum = population, elites, iterations, momentum
        self.generator = generator

    def weights(self, elite_scores: torch.Tensor) -> torch.Tensor:
        return torch.full_like(elite_scores, 1.0 / len(elite_scores))

    @torch.no_grad()
    def optimize(self, objective: Objective, init: Distribution) -> tuple[torch.Tensor, Distribution]:
        """Best sequence seen ([H, A] or [H]) and the distribution after the last refit."""
        return self.optimize_batch(lambda actions: objective(actions[0])[None], [init])[0]

    @torch.no_grad()
    def optimize_batch(self, objective: Objective, inits: list[Distribution]) -> list[tuple[torch.Tensor, Distribution]]:
        """N problems, one objective call per iteration: (best sequence, refitted distribution) of each."""
        dists, best, best_score = list(inits), [None] * len(inits), [-float("inf")] * len(inits)
        for _ in range(self.iterations):
            samples = torch.stack([d.sample(self.population, self.generator) for d in dists])  # [N, S, H(, A)]
            elite_scores, idx = objective(samples).float().topk(self.elites, dim=1)  # [N, E]
            for i, dist in enumerate(dists):
                if elite_scores[i, 0] > best_score[i]:
                    best[i], best_score[i] = samples[i, idx[i, 0]], float(elite_scores[i, 0])
                dists[i] = dist.fit(samples[i, idx[i]], self.weights(elite_scores[i]), self.momentum)
        return list(zip(best, dists))


class MPPI(CEM):
    """Model-predictive path integral: the top-k candidates weighted by exp(score / temperature),
    with scores divided by their spread first so that one temperature suits any reward scale."""

    def __init__(self, population: int = 256, elites: int = 64, iterations: int = 3, momentum: float = 0.1,
                 temperature: float = 0.5, generator: torch.Generator | None = None):
        super().__init__(population, elites, iterations, momentum, generator)
        self.temperature = temperature

    def weights(self, elite_scores: torch.Tensor) -> torch.Tensor:
        spread = elite_scores.std() if len(elite_scores) > 1 else elite_scores.new_tensor(1.0)
        return torch.softmax((elite_scores - elite_scores[0]) / (self.temperature * (spread + 1e-8)), 0)
