"""StoryDALL-E's global story encoder: one "story token" per frame from the sentence embeddings of all captions.

    S_global = f_self(W S + S_pos)        S: (stories, L, E) sentence embeddings, S_pos: sinusoidal frame positions

f_self is one or more pre-LN self-attention layers over the L frames, bidirectional (every frame sees the whole
story) or causal (frame j sees captions 1..j, as in the released code). The paper describes the sinusoidal
positions; the released code has none and no final LayerNorm (`sinusoidal_positions=False, final_norm=False`).

Sentence embeddings come from the packaged MiniLM (384-d, computed once per caption and cached by the caller,
see storyviz.text.minilm) or, with `ScratchSentenceEncoder`, from a small encoder trained with the model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from storyviz.config import Config
from storyviz.models.layers import Block


@dataclass(frozen=True)
class StoryEncoderConfig(Config):
    sentences: Literal["minilm", "scratch"] = "minilm"
    sentence_dim: int = 384  # MiniLM's width; the scratch encoder's output width
    layers: int = 1
    heads: int = 4
    causal: bool = False
    sinusoidal_positions: bool = True
    final_norm: bool = True  # a LayerNorm on the story tokens (the released code has none)
    max_frames: int = 8
    # the scratch sentence encoder: a small transformer over the model's own text tokens, mean-pooled
    scratch_vocab_size: int = 0  # set to the text vocabulary size when sentences == "scratch"
    scratch_layers: int = 1
    scratch_text_len: int = 64


def sinusoidal_positions(length: int, width: int) -> torch.Tensor:
    """(length, width) sin/cos position table of "Attention is all you need"."""
    position = torch.arange(length, dtype=torch.float64)[:, None]
    frequency = torch.exp(torch.arange(0, width, 2, dtype=torch.float64) * (-math.log(10000.0) / width))
    table = torch.zeros(length, width, dtype=torch.float64)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency[: width // 2])
    return table.float()


class StoryEncoder(nn.Module):
    """sentence embeddings (stories, L, E) -> story tokens (stories, L, D)."""

    def __init__(self, config: StoryEncoderConfig, width: int):
        super().__init__()
        self.config = config
        self.proj = nn.Linear(config.sentence_dim, width)
        self.register_buffer("positions", sinusoidal_positions(config.max_frames, width), persistent=False)
        self.blocks = nn.ModuleList(Block(width, config.heads) for _ in range(config.layers))
        self.ln = nn.LayerNorm(width) if config.final_norm else nn.Identity()

    def forward(self, sentences: torch.Tensor, frames_valid: torch.Tensor | None = None) -> torch.Tensor:
        """sentences (S, L, E); frames_valid (S, L) bool for stories shorter than L (None: all valid)."""
        length = sentences.shape[1]
        if length > self.config.max_frames:
            raise ValueError(f"a story of {length} frames; this story encoder takes at most {self.config.max_frames}")
        x = self.proj(sentences)
        if self.config.sinusoidal_positions:
            x = x + self.positions[:length]
        mask = None
        if self.config.causal or frames_valid is not None:
            allowed = torch.ones(length, length, dtype=torch.bool, device=x.device)
            if self.config.causal:
                allowed = allowed.tril()
            mask = allowed[None, None]
            if frames_valid is not None:
                diagonal = torch.eye(length, dtype=torch.bool, device=x.device)
                mask = mask & (frames_valid[:, None, None, :] | diagonal)
        for block in self.blocks:
            x = block(x, mask=mask)
        return self.ln(x)


class ScratchSentenceEncoder(nn.Module):
    """A small sentence encoder trained with the model: token ids (N, T) + mask -> (N, E), mean-pooled."""

    def __init__(self, config: StoryEncoderConfig, heads: int = 4):
        super().__init__()
        width = config.sentence_dim
        self.embedding = nn.Embedding(config.scratch_vocab_size, width)
        self.positions = nn.Embedding(config.scratch_text_len, width)
        self.blocks = nn.ModuleList(Block(width, heads) for _ in range(config.scratch_layers))
        self.ln = nn.LayerNorm(width)

    def forward(self, ids: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """ids (N, T) int64, valid (N, T) bool -> (N, E)."""
        x = self.embedding(ids) + self.positions.weight[: ids.shape[1]]
        mask = (valid[:, None, None, :] | torch.eye(ids.shape[1], dtype=torch.bool, device=ids.device)).bool()
        for block in self.blocks:
            x = block(x, mask=mask)
        x = self.ln(x)
        weights = valid.to(x.dtype)[..., None]
        return (x * weights).sum(1) / weights.sum(1).clamp_min(1.0)
