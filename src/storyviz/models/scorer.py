"""The re-ranking scorer: a small CLIP-style model that scores how well a frame shows its caption.

The DALL-E recipe samples several candidates per caption and keeps the one CLIP scores best (minDALL-E: 96
candidates). CLIP's weights cannot be had offline, so storyviz trains its own scorer on a data set's captions and
frames (storyviz.training.tasks.scorer): contrastively, from which caption goes with which frame, never from the
labels that the evaluation judge is trained on.

    caption ids (B, T) -> token + position embeddings -> pre-LN blocks (no causal mask; [PAD] keys not attended)
        -> mean over the caption's tokens -> LayerNorm -> Linear -> L2-normalised text embedding (B, E)
    frames (B, 3, H, W) in [-1, 1] -> stages of [conv3x3 -> GroupNorm -> SiLU -> conv3x3 stride 2 -> GroupNorm
        -> SiLU] -> average-pooled to grid x grid (positions kept: who stands where is part of a caption's meaning)
        -> Linear -> L2-normalised image embedding (B, E)
    score = min(exp(logit_scale), 100) * cosine(text, image)

With `names` N > 0 the scorer also has a cast head on each side: the image's pooled features -> N logits (is
name n drawn?), the caption's pooled state -> N logits (should name n be drawn?). `score` adds `name_weight`
times their agreement (`cast_agreement`: per name, the log probability that both sides agree, weighed by how far
the caption decides it): who is drawn is what the candidates of one caption differ in most, and a caption says it
in words the contrastive embedding blurs ("Bo leaves" names Bo, who must not be drawn). The heads' training is
storyviz.training.tasks.scorer's.

With `context` K > 0 the caption's tokens also attend to the story's K earlier captions (most recent first; each
padded to text_len, told apart by a learnt embedding per place back): "she" is whoever the story named last, and
a scorer that reads one caption leaves her open (benchmarks/RESULTS.md, "Pronouns in re-ranking"). Only the
caption's own tokens are pooled, so a caption without context reads as with `context` 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from storyviz.config import Config, ConfigError
from storyviz.models.layers import Block
from storyviz.weights import Pretrained


@dataclass(frozen=True)
class ScorerConfig(Config):
    image_size: int = 64
    widths: tuple[int, ...] = (32, 64, 128, 128)
    grid: int = 4
    text_vocab_size: int = 1024
    text_len: int = 40
    pad_id: int = 0
    text_width: int = 128
    text_layers: int = 2
    text_heads: int = 4
    embed_dim: int = 256
    names: int = 0  # cast heads over this many names (0: none)
    # the weight of the cast agreement in scores; chosen on sprites `val` (benchmarks/RESULTS.md, "Cast heads")
    name_weight: float = 8.0
    context: int = 0  # earlier captions of the story that a caption's tokens attend to (0: none)

    def __post_init__(self):
        if self.image_size % 2 ** len(self.widths):
            raise ConfigError(
                f"ScorerConfig.image_size {self.image_size} is not divisible by 2^{len(self.widths)} (one stride-2 "
                "stage per width)"
            )
        if self.text_width % self.text_heads:
            raise ConfigError(f"ScorerConfig.text_width {self.text_width} is not divisible by {self.text_heads} heads")
        if self.names < 0 or self.name_weight < 0 or self.context < 0:
            raise ConfigError(
                f"ScorerConfig: expected names, name_weight and context >= 0, got {self.names}, {self.name_weight} "
                f"and {self.context}"
            )


PRESETS = {
    "tiny": ScorerConfig(
        image_size=16, widths=(8, 16), grid=2, text_vocab_size=64, text_len=12, text_width=32, text_layers=1,
        text_heads=2, embed_dim=32,
    ),
    "small": ScorerConfig(),
}  # fmt: skip


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, channels), channels)


class Scorer(nn.Module, Pretrained):
    """text ids (B, T) + frames (B, 3, H, W) -> scores (B,) of each caption with its own frame; `embed_text` and
    `embed_images` give the embeddings for scoring every caption against every frame (`similarity`)."""

    model_type = "scorer"
    config_class = ScorerConfig

    def __init__(self, config: ScorerConfig):
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        channels = 3
        for width in config.widths:
            layers += [nn.Conv2d(channels, width, 3, padding=1), _norm(width), nn.SiLU()]
            layers += [nn.Conv2d(width, width, 3, stride=2, padding=1), _norm(width), nn.SiLU()]
            channels = width
        self.image_trunk = nn.Sequential(*layers)
        self.image_pool = nn.AdaptiveAvgPool2d(config.grid)
        self.image_proj = nn.Linear(channels * config.grid**2, config.embed_dim)
        self.tok_emb = nn.Embedding(config.text_vocab_size, config.text_width)
        self.pos_emb = nn.Embedding(config.text_len, config.text_width)
        if config.context:
            self.context_emb = nn.Embedding(config.context, config.text_width)  # 1, 2, ... captions back
        self.text_blocks = nn.ModuleList(Block(config.text_width, config.text_heads) for _ in range(config.text_layers))
        self.text_norm = nn.LayerNorm(config.text_width)
        self.text_proj = nn.Linear(config.text_width, config.embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(10.0)))
        if config.names:
            self.image_names = nn.Linear(channels * config.grid**2, config.names)
            self.text_names = nn.Linear(config.text_width, config.names)

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, S, S) in [-1, 1] -> pooled features (B, C * grid^2)."""
        size = self.config.image_size
        if images.ndim != 4 or images.shape[1] != 3 or images.shape[-2:] != (size, size):
            raise ValueError(f"scorer expects images (B, 3, {size}, {size}) in [-1, 1], got {tuple(images.shape)}")
        return self.image_pool(self.image_trunk(images)).flatten(1)

    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, S, S) in [-1, 1] -> unit vectors (B, E)."""
        return self.image_embedding(self.image_features(images))

    def embed_text(self, ids: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """ids (B, T) int64, padded with pad_id [, context (B, K, T)] -> unit vectors (B, E)."""
        return self.text_embedding(self.text_features(ids, context))

    def image_embedding(self, features: torch.Tensor) -> torch.Tensor:
        """`image_features` (B, F) -> unit vectors (B, E)."""
        return F.normalize(self.image_proj(features), dim=-1)

    def text_embedding(self, words: torch.Tensor) -> torch.Tensor:
        """`text_features` (B, W) -> unit vectors (B, E)."""
        return F.normalize(self.text_proj(words), dim=-1)

    def text_features(self, ids: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """ids (B, T) int64, padded with pad_id -> the normalised mean state of the caption's tokens (B, W). An
        all-[PAD] caption reads its first position (so the softmax over keys is never empty). `context` (B, K, T):
        the story's earlier captions, most recent first (all [PAD] where there are fewer; read only with
        config.context K > 0, and then None is K empty captions)."""
        length = self.config.text_len
        if ids.ndim != 2 or ids.shape[1] != length:
            raise ValueError(f"scorer expects caption ids (B, {length}), got {tuple(ids.shape)}")
        valid = ids != self.config.pad_id
        valid[:, 0] = True
        x = self.tok_emb(ids) + self.pos_emb.weight[None]
        pooled = valid
        if self.config.context and context is not None:
            expected = (len(ids), self.config.context, length)
            if tuple(context.shape) != expected:
                raise ValueError(f"scorer expects context ids {expected}, got {tuple(context.shape)}")
            held = context != self.config.pad_id
            used = int(held.flatten(0, 1).any(0).nonzero().max()) + 1 if held.any() else 1
            context, held = context[..., :used], held[..., :used]  # the padding every row has is not computed
            back = self.tok_emb(context) + self.pos_emb.weight[None, None, :used] + self.context_emb.weight[:, None]
            x = torch.cat([back.flatten(1, 2), x], dim=1)
            valid = torch.cat([held.flatten(1), valid], dim=1)
            pooled = F.pad(pooled, (valid.shape[1] - length, 0))
        mask = valid[:, None, None, :]
        for block in self.text_blocks:
            x = block(x, mask=mask)
        weights = pooled.to(x.dtype)[..., None]
        return self.text_norm((x * weights).sum(1) / weights.sum(1))

    def similarity(self, text: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """Unit text (B, E) and image (M, E) embeddings -> scaled cosine similarities (B, M)."""
        return self.scale() * text @ images.t()

    def forward(self, ids: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """ids (B, T), images (B, 3, S, S) -> scores (B,) of row i's caption with row i's frame."""
        return self.score(ids, images[:, None])[:, 0]

    def score(self, ids: torch.Tensor, candidates: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """ids (B, T), candidates (B, C, 3, S, S) [, context (B, K, T) as text_features reads it] -> scores (B, C)
        of each caption with its C candidate frames: the scaled cosine similarity, plus name_weight times the cast
        agreement when the scorer has cast heads."""
        batch, count = candidates.shape[:2]
        features = self.image_features(candidates.flatten(0, 1))
        pictures = self.image_embedding(features).view(batch, count, -1)
        words = self.text_features(ids, context)
        text = self.text_embedding(words)
        scores = self.scale() * (pictures @ text[:, :, None])[..., 0]
        if self.config.names:
            drawn = self.image_names(features).view(batch, count, -1)
            scores = scores + self.config.name_weight * cast_agreement(self.text_names(words)[:, None], drawn)
        return scores

    def scale(self) -> torch.Tensor:
        """exp(logit_scale), at most 100 (as CLIP clamps it)."""
        return self.logit_scale.exp().clamp(max=100.0)


def cast_agreement(text_logits: torch.Tensor, image_logits: torch.Tensor) -> torch.Tensor:
    """Cast logits of captions (..., N) and of frames (..., N) -> sum_n c_n log(p q + (1 - p)(1 - q)) (...): the log
    probability that caption and frame agree on each name (each side's names independent), counted as far as the
    caption decides the name: c = 1 - H(p) / log 2, 1 for a sure p and 0 at p = 0.5, so a name the caption leaves
    open ("she" after two women) weighs little against any frame."""
    p, q = torch.sigmoid(text_logits.float()), torch.sigmoid(image_logits.float())
    entropy = F.binary_cross_entropy(p, p, reduction="none")
    decided = (1 - entropy / math.log(2)).clamp_min(0)
    return (decided * torch.log((p * q + (1 - p) * (1 - q)).clamp_min(1e-6))).sum(-1)


def story_context(ids: torch.Tensor, count: int, pad_id: int) -> torch.Tensor:
    """A story's caption ids (..., L, T) -> each caption's `count` earlier captions, most recent first (..., L,
    count, T): [..., t, k] is caption t - 1 - k, all pad_id before the story's start."""
    length = ids.shape[-2]
    padded = F.pad(ids, (0, 0, count, 0), value=pad_id)  # count empty captions before the first
    back = [padded[..., count - 1 - k : count - 1 - k + length, :] for k in range(count)]
    return torch.stack(back, dim=-2)
