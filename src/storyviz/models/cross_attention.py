"""StoryDALL-E's retro-fitted cross-attention: a sub-layer inserted into a pretrained DALL-E block.

Inside a `CrossBlock`:  x = x + selfattn(ln1(x));  x = x + crossattn(ln_query(x), ln_context(c));
x = x + mlp(ln2(x)). The context c is the source frame's image embeddings (B, S, D). Only positions at or after
`cross_from` (absolute positions: the last prompt position, which predicts the first image token, and every image
position) receive the cross-attention output. Positions are absolute, so a cached single-token step gets the same
output as the full forward (the released code computed the mask from the chunk length, so its cached steps got
none).

With `gated`, the sub-layer's output projection starts at zero (a zero-initialised gate per output channel), so a
block added to a pretrained model leaves its outputs unchanged at step 0, and the projection learns from the
first step (its input, attention over the source frame, is not zero), passing gradients on to the rest as it opens.
A scalar tanh gate at zero (Flamingo's) was tried first: it holds every cross-attention weight at zero gradient
until the gate itself opens, and its own gradient is the product with random features; on sprites it stayed
below 0.002 for 500 steps of StoryDALL-E fine-tuning while the model ignored the source frame.

With `position_bias` (storyviz's addition, not in the paper), the attention scores get a learned bias per head
over the 2-D offset between the token being predicted and each source token, within RADIUS rows and columns,
initialised to favour the same position. Consecutive frames of a story share most of their background (on
sprites, 62% of frame 2's tokens equal frame 1's at the same position), but a model trained by teacher forcing
barely feels the source frame (the frame's own earlier tokens say almost as much), and plain cross-attention had
not found the positions to copy from after 500 steps (validation loss with the true or another story's source
frame: 0.871 vs 0.873). With the bias, the source frame is read where it matters from the first step.

With `story_to_image` (storyviz's addition), the block first adds a projection of the frame's story token to every
position from `cross_from` on, so that the cross-attention query and the layers above see the story directly. The
projection starts at zero (outputs unchanged at step 0). Without it, the story token is one prefix position that a
trained model hardly reads: on sprites, replacing the story tokens by another story's changes the loss of a frame's
first image token by less than 2%, also after a move, where the source frame's background is the wrong one to copy.

With `copy_gate` (storyviz's addition), the cross-attention output is scaled per position and channel by
1 + tanh(W ln(x) + b), W and b starting at zero (a factor of 1: outputs unchanged at step 0). Softmax attention
cannot decline to read the source, least of all with the position bias; the gate lets a position take less of the
source frame, e.g. where the story token says the characters have gone somewhere else.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from storyviz.models.layers import Block, KVCache

RADIUS = 2  # the position bias covers offsets of up to RADIUS rows and columns
ALIGNED_BIAS = 6.0  # its initial value at offset (0, 0): most attention on the same position of the source


class CrossAttention(nn.Module):
    """Multi-head attention from x (B, L, D) to a context (B, S, D), no causal mask -> (B, L, D)."""

    def __init__(
        self,
        width: int,
        heads: int,
        gated: bool = True,
        grid: int = 0,
        story_to_image: bool = False,
        copy_gate: bool = False,
    ):
        """grid > 0: the side of the (square) token grid of the generated and source images; enables the
        position bias. story_to_image: a zero-initialised projection `story` of the story token (see CrossBlock).
        copy_gate: a zero-initialised Linear `copy_gate` scaling the output by 1 + tanh(copy_gate(ln_query(x)))."""
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        self.heads = heads
        self.ln_query = nn.LayerNorm(width)
        self.ln_context = nn.LayerNorm(width)
        self.query = nn.Linear(width, width)
        self.key = nn.Linear(width, width)
        self.value = nn.Linear(width, width)
        self.proj = nn.Linear(width, width)
        if gated:
            nn.init.zeros_(self.proj.weight)
            nn.init.zeros_(self.proj.bias)
        self.grid = grid
        self.position_bias = None
        if grid:
            bias = torch.zeros(heads, 2 * RADIUS + 1, 2 * RADIUS + 1)
            bias[:, RADIUS, RADIUS] = ALIGNED_BIAS
            self.position_bias = nn.Parameter(bias)
        self.story = _zero_linear(width) if story_to_image else None
        self.copy_gate = _zero_linear(width) if copy_gate else None

    def score_bias(self, targets: torch.Tensor, sources: int) -> torch.Tensor:
        """targets (L,) indices of the image tokens being predicted -> additive scores (heads, L, sources)."""
        if sources != self.grid * self.grid:
            raise ValueError(f"cross-attention: a source of {sources} tokens is not the model's {self.grid}^2 grid")
        source = torch.arange(sources, device=targets.device)
        dy = targets[:, None] // self.grid - source[None] // self.grid
        dx = targets[:, None] % self.grid - source[None] % self.grid
        inside = (dy.abs() <= RADIUS) & (dx.abs() <= RADIUS)
        index = ((dy + RADIUS).clamp(0, 2 * RADIUS) * (2 * RADIUS + 1) + (dx + RADIUS).clamp(0, 2 * RADIUS)).flatten()
        bias = self.position_bias.flatten(1)[:, index].view(-1, *inside.shape)
        return bias * inside.to(bias.dtype)

    def context_keys_values(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """context (B, S, D) -> keys, values (B, heads, S, head_dim)."""
        batch, length, width = context.shape
        context = self.ln_context(context)
        shape = (batch, length, self.heads, width // self.heads)
        return self.key(context).view(shape).transpose(1, 2), self.value(context).view(shape).transpose(1, 2)

    def forward(
        self, x: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, targets: torch.Tensor | None = None
    ) -> torch.Tensor:
        """x (B, L, D); keys/values (B, heads, S, head_dim); targets (L,): the image token index each row of x
        predicts (needed with the position bias) -> (B, L, D)."""
        batch, length, width = x.shape
        x = self.ln_query(x)
        query = self.query(x).view(batch, length, self.heads, width // self.heads).transpose(1, 2)
        mask = None
        if self.position_bias is not None:
            if targets is None:
                raise ValueError("cross-attention with a position bias needs the target index of every row")
            mask = self.score_bias(targets, keys.shape[2]).to(query.dtype)[None]
        y = F.scaled_dot_product_attention(query, keys, values, attn_mask=mask)
        y = self.proj(y.transpose(1, 2).reshape(batch, length, width))
        return y if self.copy_gate is None else y * (1 + torch.tanh(self.copy_gate(x)))


def _zero_linear(width: int) -> nn.Linear:
    linear = nn.Linear(width, width)
    nn.init.zeros_(linear.weight)
    nn.init.zeros_(linear.bias)
    return linear


class CrossBlock(Block):
    """A DALL-E block with a cross-attention sub-layer between self-attention and the MLP.

    Block.forward calls `after_attention` between self-attention and the MLP with the extra keyword arguments
    passed through the model's `run_blocks`:
        context        (B, S, D) source-frame embeddings, or None (no source: the sub-layer is skipped)
        context_rows   (B,) bool: rows that have a source frame (others get no cross-attention output), or None
        cross_from     absolute position from which outputs are applied (prefix + text length - 1)
        story          (B, D) the rows' story tokens, added through `cross.story` before the cross-attention (with
                       `story_to_image`; also to rows without a source frame); None: not added
    With a KV cache, the context's keys and values are computed once (at the prompt) and kept in `cache.context`.
    """

    def __init__(
        self,
        width: int,
        heads: int,
        mlp_ratio: int = 4,
        gated: bool = True,
        grid: int = 0,
        story_to_image: bool = False,
        copy_gate: bool = False,
        **block_kwargs,
    ):
        super().__init__(width, heads, mlp_ratio, **block_kwargs)
        self.cross = CrossAttention(width, heads, gated, grid, story_to_image, copy_gate)

    def after_attention(
        self,
        x: torch.Tensor,
        cache: KVCache | None = None,
        layer: int = 0,
        start: int = 0,
        context: torch.Tensor | None = None,
        context_rows: torch.Tensor | None = None,
        cross_from: int = 0,
        story: torch.Tensor | None = None,
        **extra,
    ) -> torch.Tensor:
        if story is not None and self.cross.story is not None:
            x = x + self._from(self.cross.story.forward(story)[:, None].expand_as(x), cross_from - start)
        if context is None:
            return x
        return x + self._cross(x, context, context_rows, cross_from, cache, layer, start)

    @staticmethod
    def _from(y: torch.Tensor, first: int) -> torch.Tensor:
        """y (B, L, D) with its rows before `first` zeroed (all kept when first <= 0)."""
        if first <= 0:
            return y
        return F.pad(y[:, first:], (0, 0, min(first, y.shape[1]), 0))

    def _cross(self, x, context, context_rows, cross_from, cache, layer, start) -> torch.Tensor:
        if cache is not None and layer in cache.context:
            keys, values = cache.context[layer]
        else:
            keys, values = self.cross.context_keys_values(context)
            if cache is not None:
                cache.context[layer] = (keys, values)
        first = max(cross_from - start, 0)  # the first row of x that receives cross-attention
        if first >= x.shape[1]:
            return torch.zeros_like(x)
        targets = torch.arange(start + first - cross_from, start + x.shape[1] - cross_from, device=x.device)
        y = self.cross(x[:, first:], keys, values, targets)
        if context_rows is not None:
            y = y * context_rows[:, None, None].to(y.dtype)
        return F.pad(y, (0, 0, first, 0)) if first else y
