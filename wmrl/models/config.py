"""Model hyperparameters as plain dataclasses (no torch import), so configs load fast and strictly."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

# name -> (width, depth, heads): the usual ViT family, plus "micro" for quick CPU runs.
SIZES = {
    "micro": (128, 4, 4),
    "tiny": (192, 12, 3),
    "small": (384, 12, 6),
    "base": (768, 12, 12),
    "large": (1024, 24, 16),
    "huge": (1280, 32, 16),
    "giant": (1408, 40, 16),
}


@dataclass
class EncoderConfig:
    size: str = "micro"  # a key of SIZES; width/depth/heads below override it when set
    width: int | None = None
    depth: int | None = None
    heads: int | None = None
    patch: int = 8
    tubelet: int = 2  # frames per token along time
    mlp_ratio: float = 4.0

    def __post_init__(self):
        if self.size not in SIZES:
            raise ValueError(f"encoder size '{self.size}' is not one of {', '.join(SIZES)}")

    def dims(self) -> tuple[int, int, int]:
        width, depth, heads = SIZES[self.size]
        return self.width or width, self.depth or depth, self.heads or heads


@dataclass
class PredictorConfig:
    width: int = 96
    depth: int = 2
    heads: int = 4


@dataclass
class MaskConfig:
    strategy: Literal["multiblock", "random", "spatial", "temporal"] = "multiblock"
    ratio: float = 0.75  # share of tokens to predict (random / spatial / temporal)
    short_blocks: int = 8
    short_scale: float = 0.15  # area of one block, as a share of the frame
    long_blocks: int = 2
    long_scale: float = 0.7
    aspect: tuple[float, float] = (0.75, 1.5)

    def __post_init__(self):
        if not 0.0 < self.ratio < 1.0:
            raise ValueError(f"mask.ratio must be in (0, 1), got {self.ratio}")


@dataclass
class JEPAConfig:
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    predictor: PredictorConfig = field(default_factory=PredictorConfig)
    loss: Literal["l1", "l2"] = "l1"
