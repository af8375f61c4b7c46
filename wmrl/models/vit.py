"""Vision Transformer over a K-frame stack: tubelet patches across time, 3-D sin-cos positions.

Tokens are laid out (t, h, w) in row-major order: a stack [B, K, C, H, W] with tubelet size
`tubelet` and patch `patch` gives N = (K / tubelet) * (H / patch) * (W / patch) tokens.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from wmrl.models.config import EncoderConfig

class Block(nn.Module):
    """Pre-norm transformer block; `attn_mask` (bool, True = may attend) is optional."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.extend(x, None, attn_mask)[0]

    def extend(self, x: torch.Tensor, past: tuple[torch.Tensor, torch.Tensor] | None = None,
               attn_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """x [B, N, D] new tokens; past: the keys and values [B, h, L, D/h] of earlier tokens, which
        every new token may see (a KV cache). Returns the new tokens' outputs and the grown cache."""
        b, n, d = x.shape
        qkv = self.qkv(self.norm1(x)).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # [B, h, N, d/h] each
        if past is None:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)  # [B, h, N, d/h]
        else:
            k, v = torch.cat([past[0], k], 2), torch.cat([past[1], v], 2)
            # A few queries over a short cache: plain matmuls beat the CPU flash kernel ~4x here.
            scores = q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5  # [B, h, N, L+N]
            if attn_mask is not None:
                scores = scores.masked_fill(~attn_mask, float("-inf"))
            weights = scores.softmax(-1)
            # One query (a planner's step): a weighted sum beats a batch of [1, L] @ [L, d] matmuls ~3x.
            y = (weights.transpose(-1, -2) * v).sum(-2, keepdim=True) if n == 1 else weights @ v
        x = x + self.proj(y.transpose(1, 2).reshape(b, n, d))
        return x + self.mlp(self.norm2(x)), (k, v)


class ConvStem(nn.Module):
    """DQN's convolutions: [B, C_in, H, W] -> tokens [B, h*w, width] (84x84 -> a 7x7 grid)."""

    def __init__(self, channels: int, width: int):
        super().__init__()
        self.convs = nn.Sequential(nn.Conv2d(channels, 32, 8, 4), nn.ReLU(), nn.Conv2d(32, 64, 4, 2), nn.ReLU(),
                                   nn.Conv2d(64, 64, 3, 1), nn.ReLU())
        self.proj = nn.Linear(64, width)

    @staticmethod
    def grid(h: int, w: int) -> tuple[int, int]:
        size = lambda n: ((n - 8) // 4 + 1 - 4) // 2 + 1 - 2  # noqa: E731
        return size(h), size(w)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C_in, H, W] in [0, 1] -> the last convolution's ReLU map [B, 64, h, w]."""
        return self.convs(x.contiguous(memory_format=torch.channels_last))  # oneDNN's fast layout: ~2x on a CPU

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.features(x).flatten(2).transpose(1, 2))


def sincos_3d(grid: tuple[int, int, int], dim: int) -> torch.Tensor:
    """Fixed 3-D sin-cos positions [T*H*W, dim]: dim split over (t, h, w) as V-JEPA does."""
    t, h, w = grid
    dim_t = 2 * (dim // 6)  # even shares; the rest goes to the spatial axes
    dim_h = dim_w = 2 * ((dim - dim_t) // 4)
    tt, hh, ww = np.meshgrid(np.arange(t), np.arange(h), np.arange(w), indexing="ij")

    def encode(pos: np.ndarray, d: int) -> np.ndarray:
        omega = 1.0 / 10000 ** (np.arange(d // 2) / (d / 2))
        angles = pos.reshape(-1, 1) * omega[None]
        return np.concatenate([np.sin(angles), np.cos(angles)], 1)

    emb = np.concatenate([encode(tt, dim_t), encode(hh, dim_h), encode(ww, dim_w)], 1)
    emb = np.pad(emb, ((0, 0), (0, dim - emb.shape[1])))
    return torch.tensor(emb, dtype=torch.float32)


class VisionTransformer(nn.Module):
    """Encoder: stack [B, K, C, H, W] uint8 -> tokens [B, N, D] (or only the kept ones)."""

    def __init__(self, cfg: EncoderConfig, frames: int, channels: int, image_size: tuple[int, int]):
        super().__init__()
        width, depth, heads = cfg.dims()
        h, w = image_size
        if frames % cfg.tubelet or h % cfg.patch or w % cfg.patch:
            raise ValueError(f"stack {frames}x{h}x{w} is not divisible by tubelet {cfg.tubelet} / patch {cfg.patch}")
        self.stem = cfg.stem
        if cfg.stem == "conv":
            if cfg.tubelet != frames:
                raise ValueError(f"the conv stem sees the whole stack at once: tubelet must be {frames}, got {cfg.tubelet}")
            self.patch_embed = ConvStem(frames * channels, width)
            self.grid = (1, *self.patch_embed.grid(h, w))
        else:
            self.grid = (frames // cfg.tubelet, h // cfg.patch, w // cfg.patch)
            self.patch_embed = nn.Conv3d(channels, width, (cfg.tubelet, cfg.patch, cfg.patch), (cfg.tubelet, cfg.patch, cfg.patch))
        self.num_tokens = int(np.prod(self.grid))
        self.width = width
        pos = sincos_3d(self.grid, width) if cfg.positions else torch.zeros(self.num_tokens, width)
        self.register_buffer("pos", pos, persistent=False)
        self.blocks = nn.ModuleList(Block(width, heads, cfg.mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(width)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Patch embedding plus positions: [B, K, C, H, W] uint8 -> [B, N, D]."""
        x = x.float().div_(255)
        if self.stem == "conv":
            return self.patch_embed(x.flatten(1, 2)) + self.pos  # [B, K*C, H, W] -> [B, N, D]
        x = x.permute(0, 2, 1, 3, 4)  # [B, C, K, H, W]
        return self.patch_embed(x).flatten(2).transpose(1, 2) + self.pos  # [B, N, D]

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """`keep` [B, Nk] token indices: the encoder sees only those (no mask tokens)."""
        z = self.tokens(x)
        if keep is not None:
            z = gather_tokens(z, keep)
        for block in self.blocks:
            z = block(z)
        return self.norm(z)


def gather_tokens(z: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """z [B, N, D], index [B, M] -> [B, M, D]."""
    return torch.gather(z, 1, index.unsqueeze(-1).expand(-1, -1, z.shape[-1]))
