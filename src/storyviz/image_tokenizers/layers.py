"""Building blocks of the taming-transformers / minDALL-E VQGAN, with its parameter names.

The names of the sub-modules (norm1, conv1, nin_shortcut, q, k, v, proj_out, ...) are the published ones, so a
state dict of the released stage-1 weights loads key for key. Tensors are (B, C, H, W) throughout.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def normalize(channels: int, num_groups: int) -> nn.GroupNorm:
    """GroupNorm as in taming (eps 1e-6, affine); `num_groups` is 32 in the published models."""
    if channels % num_groups:
        raise ValueError(f"GroupNorm: {channels} channels do not divide into num_groups={num_groups}")
    return nn.GroupNorm(num_groups=num_groups, num_channels=channels, eps=1e-6, affine=True)


def swish(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(x)


class ResnetBlock(nn.Module):
    """norm -> swish -> conv3x3, twice, plus a 1x1 `nin_shortcut` when the channel count changes."""

    def __init__(self, in_channels: int, out_channels: int, num_groups: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = normalize(in_channels, num_groups)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = normalize(out_channels, num_groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        if in_channels != out_channels:
            self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> (B, C_out, H, W)"""
        h = self.conv1(swish(self.norm1(x)))
        h = self.conv2(self.dropout(swish(self.norm2(h))))
        if hasattr(self, "nin_shortcut"):
            x = self.nin_shortcut(x)
        return x + h


class AttnBlock(nn.Module):
    """Single-head self-attention over the H*W positions, with 1x1-conv projections `q`, `k`, `v`, `proj_out`."""

    def __init__(self, channels: int, num_groups: int):
        super().__init__()
        self.norm = normalize(channels, num_groups)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W)"""
        batch, channels, height, width = x.shape
        h = self.norm(x)

        def positions(t: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, 1, H*W, C)
            return t.reshape(batch, channels, height * width).transpose(1, 2).unsqueeze(1)

        # softmax(q k^T / sqrt(C)) v, as taming computes it with bmm
        out = F.scaled_dot_product_attention(positions(self.q(h)), positions(self.k(h)), positions(self.v(h)))
        out = out.squeeze(1).transpose(1, 2).reshape(batch, channels, height, width)
        return x + self.proj_out(out)


class Downsample(nn.Module):
    """taming's asymmetric down-sampling: pad (0, 1, 0, 1) then a stride-2 3x3 conv without padding."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H/2, W/2)"""
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Nearest-neighbour x2 then a 3x3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, 2H, 2W)"""
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class CrossAttnBlock(nn.Module):
    """Single-head attention from the H*W positions of x to the h*w positions of a context map, added through a
    zero-initialised `proj_out`, so that a block added to a trained decoder leaves its output unchanged at first.
    Learned position embeddings on both sides let it match by place as well as by content."""

    def __init__(self, channels: int, context_channels: int, num_groups: int, size: int, context_size: int):
        super().__init__()
        self.norm = normalize(channels, num_groups)
        self.norm_context = normalize(context_channels, num_groups)
        self.position = nn.Parameter(torch.randn(1, channels, size, size) * 0.02)
        self.context_position = nn.Parameter(torch.randn(1, context_channels, context_size, context_size) * 0.02)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(context_channels, channels, 1)
        self.v = nn.Conv2d(context_channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, x: torch.Tensor, context: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, C, H, W), context (B, C_ctx, h, w) -> (B, C, H, W); keep (B,) 0/1: rows at 0 come out as x."""
        batch, channels, height, width = x.shape
        c = self.norm_context(context) + self.context_position

        def positions(t: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, 1, H*W, C)
            return t.flatten(2).transpose(1, 2).unsqueeze(1)

        out = F.scaled_dot_product_attention(
            positions(self.q(self.norm(x) + self.position)), positions(self.k(c)), positions(self.v(c))
        )
        out = self.proj_out(out.squeeze(1).transpose(1, 2).reshape(batch, channels, height, width))
        return x + (out if keep is None else out * keep.view(-1, 1, 1, 1).to(out.dtype))
