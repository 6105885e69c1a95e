"""StoryDALL-E: a DALL-E transformer retro-fitted for stories (Maharana et al., ECCV 2022).

Three additions to a (pretrained) `Dalle`:
- cross-attention to the source frame in every k-th block (blocks k-1, 2k-1, ...; `CrossBlock`), keys and values
  from the source frame's image-token embeddings (token + position embedding, not passed through the transformer);
- a global story encoder (`StoryEncoder`) that turns the sentence embeddings of all captions into one story token
  per frame, prepended to that frame's text;
- for prompt tuning, a learned prompt of `prompt_len` vectors through a Linear-Tanh-Linear re-parameterisation,
  prepended before the story token (the base transformer frozen; see `trainable_parameters`).
storyviz's own options, described in cross_attention.py: `position_bias` (on by default) and, off by default,
`story_to_image` (the story token also added to the image positions) and `copy_gate` (a gate on the source frame);
and `copy_source` (source_copy.py: a learned logit bonus for the source frame's token at the predicted position, from
the hidden state and from whether the neighbouring tokens drawn so far equal the source's).

Sequence of one frame:  [prompt (prompt_len) | story token (1) | text (T) | image (N)]; with P = prompt_len + 1
prefix vectors, the first image token is predicted at position P+T-1 (not T-1, the released code's bug 3), and
cross-attention applies from that position on, also in cached single-token steps (bug 2). The new modules are
ordinary registered sub-modules: optimised, saved and moved with the model (bug 1).

The network returns logits; training losses live in storyviz.training.tasks.storydalle and sampling in
storyviz.sampling (drive `model.dalle` with `generation_inputs`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from storyviz.config import Config, ConfigError
from storyviz.models.cross_attention import CrossBlock
from storyviz.models.dalle import Dalle, DalleConfig
from storyviz.models.layers import column_major_
from storyviz.models.source_copy import SourceCopy
from storyviz.models.story_encoder import ScratchSentenceEncoder, StoryEncoder, StoryEncoderConfig
from storyviz.weights import Pretrained, WeightsError


@dataclass(frozen=True)
class StoryDalleConfig(Config):
    """`dalle.prefix_len` must equal prompt_len + (1 if story_encoder else 0)."""

    dalle: DalleConfig = field(default_factory=DalleConfig)
    cross_attention_every: int = 3  # 0: no cross-attention (ablation)
    gated: bool = True  # the cross-attention's output projection starts at zero (see cross_attention.py)
    position_bias: bool = True  # learned 2-D offset bias in the cross-attention (storyviz's; see cross_attention.py)
    story_to_image: bool = False  # the story token also added in every cross-attention block (cross_attention.py)
    copy_gate: bool = False  # a gate per position on what the cross-attention takes from the source (same file)
    copy_source: bool = False  # a learned logit bonus for the source's token at the same position (source_copy.py)
    story_encoder: bool = True
    story: StoryEncoderConfig = field(default_factory=StoryEncoderConfig)
    prompt_len: int = 0  # > 0: a learned prompt (prompt tuning)
    prompt_hidden: int = 512
    prompt_dropout: float = 0.2
    max_frames: int = 5  # frames of a story (the source frame included)
    mode: Literal["full", "prompt"] = "full"  # what `trainable_parameters` returns

    def __post_init__(self):
        if self.dalle.prefix_len != self.prefix_len:
            raise ConfigError(
                f"StoryDalleConfig.dalle.prefix_len is {self.dalle.prefix_len}, expected prompt_len + story token = "
                f"{self.prefix_len}"
            )
        if self.cross_attention_every < 0:
            raise ConfigError(
                f"StoryDalleConfig.cross_attention_every: expected >= 0, got {self.cross_attention_every}"
            )
        if self.position_bias and self.cross_layers and math.isqrt(self.dalle.image_len) ** 2 != self.dalle.image_len:
            raise ConfigError(
                f"StoryDalleConfig.position_bias needs a square token grid; dalle.image_len is {self.dalle.image_len}"
            )
        if self.max_frames > self.story.max_frames:
            raise ConfigError(
                f"StoryDalleConfig.max_frames {self.max_frames} exceeds story.max_frames {self.story.max_frames}"
            )
        if self.story_to_image and not (self.story_encoder and self.cross_layers):
            raise ConfigError("StoryDalleConfig.story_to_image needs a story encoder and cross-attention layers")
        if self.copy_gate and not self.cross_layers:
            raise ConfigError("StoryDalleConfig.copy_gate needs cross-attention layers (cross_attention_every > 0)")
        if self.copy_source and not self.cross_layers:
            raise ConfigError("StoryDalleConfig.copy_source needs cross-attention layers (cross_attention_every > 0)")
        if self.copy_source and math.isqrt(self.dalle.image_len) ** 2 != self.dalle.image_len:
            raise ConfigError(
                f"StoryDalleConfig.copy_source needs a square token grid; dalle.image_len is {self.dalle.image_len}"
            )
        if self.mode == "prompt" and self.prompt_len == 0 and not self.story_encoder and not self.cross_layers:
            raise ConfigError("StoryDalleConfig: prompt tuning needs something new to train (a prompt, story or cross)")

    @property
    def prefix_len(self) -> int:
        return self.prompt_len + (1 if self.story_encoder else 0)

    def grown(self, requested: StoryDalleConfig) -> StoryDalleConfig:
        """This (trained) architecture with what training on may add from `requested`: its cross_attention_every,
        and story_to_image / copy_gate / copy_source turned on (never off)."""
        return self.replace(
            cross_attention_every=requested.cross_attention_every,
            story_to_image=self.story_to_image or requested.story_to_image,
            copy_gate=self.copy_gate or requested.copy_gate,
            copy_source=self.copy_source or requested.copy_source,
        )

    @property
    def cross_layers(self) -> list[int]:
        every = self.cross_attention_every
        return [] if every == 0 else list(range(every - 1, self.dalle.layers, every))


def story_config(dalle: DalleConfig, **fields: Any) -> StoryDalleConfig:
    """A StoryDalleConfig on top of a DALL-E config, with dalle.prefix_len set to match the prefix."""
    prefix_len = fields.get("prompt_len", 0) + int(fields.get("story_encoder", True))
    return StoryDalleConfig(dalle=dalle.replace(prefix_len=prefix_len), **fields)


def _presets() -> dict[str, StoryDalleConfig]:
    from storyviz.models.dalle import PRESETS as DALLE

    tiny_story = StoryEncoderConfig(layers=1, heads=2)
    return {
        "tiny": story_config(DALLE["tiny"].replace(layers=3, text_len=24), story=tiny_story),
        "small": story_config(DALLE["small"]),
        "small-prompt": story_config(DALLE["small"], prompt_len=32, mode="prompt"),
        "1.3B": story_config(DALLE["1.3B"]),
    }


PRESETS = _presets()


class Prompt(nn.Module):
    """A learned prompt: Embedding(prompt_len, D) -> Linear -> Tanh -> Linear -> dropout, (prompt_len, D)."""

    def __init__(self, length: int, width: int, hidden: int, dropout: float):
        super().__init__()
        self.embedding = nn.Embedding(length, width)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.Tanh(), nn.Linear(hidden, width))
        self.dropout = nn.Dropout(dropout)

    def forward(self) -> torch.Tensor:
        return self.dropout(self.mlp(self.embedding.weight))


def _copy_weights(module: nn.Module, source: dict, where: str, fresh: frozenset[str] = frozenset()) -> None:
    """Loads `source` into `module`, whose keys missing from it must be new cross-attention sub-layers or a new
    source copy (or in `fresh`; they keep their initialisation); any other difference is an error naming the keys."""
    target = module.state_dict()
    missing = sorted(key for key in set(target) - set(source) - fresh if not _new_part(key))
    bad = missing + sorted(set(source) - set(target))
    if bad:
        raise WeightsError(f"{where}: keys that do not correspond: {bad}")
    module.load_state_dict({**target, **source}, strict=True)


def _new_part(key: str) -> bool:
    """Whether a state-dict key belongs to what StoryDALL-E adds inside the DALL-E (cross-attention, source copy)."""
    return ".cross." in key or "copy_head." in key


class StoryDalle(nn.Module, Pretrained):
    """One frame per row: text (B, T), image (B, N), story token (B, D), source codes (B, N) -> logits."""

    model_type = "storydalle"
    config_class = StoryDalleConfig

    def __init__(self, config: StoryDalleConfig):
        super().__init__()
        self.config = config
        self.dalle = Dalle(config.dalle)
        dalle = config.dalle
        for index in config.cross_layers:
            self.dalle.blocks[index] = CrossBlock(
                dalle.width,
                dalle.heads,
                dalle.mlp_ratio,
                gated=config.gated,
                grid=math.isqrt(dalle.image_len) if config.position_bias else 0,
                story_to_image=config.story_to_image,
                copy_gate=config.copy_gate,
                attention_dropout=dalle.attention_dropout,
                dropout=dalle.residual_dropout,
            )
        if config.copy_source:
            self.dalle.copy_head = SourceCopy(dalle.width, math.isqrt(dalle.image_len))
        self.story_encoder = StoryEncoder(config.story, dalle.width) if config.story_encoder else None
        self.sentence_encoder = None
        if config.story_encoder and config.story.sentences == "scratch":
            self.sentence_encoder = ScratchSentenceEncoder(config.story)
        self.prompt = (
            Prompt(config.prompt_len, dalle.width, config.prompt_hidden, config.prompt_dropout)
            if config.prompt_len
            else None
        )
        column_major_(self)

    @classmethod
    def from_dalle(cls, dalle: Dalle, config: StoryDalleConfig) -> StoryDalle:
        """Builds StoryDALL-E around a pretrained DALL-E: every DALL-E weight is copied; the new parts (and text
        positions reserved for the prefix) start fresh. Any other difference is an error naming the keys."""
        base = dalle.config
        if base.replace(prefix_len=config.dalle.prefix_len) != config.dalle:
            raise WeightsError(
                "StoryDalle.from_dalle: the DALL-E config differs from config.dalle beyond prefix_len: "
                f"{base.to_dict()} vs {config.dalle.to_dict()}"
            )
        model = cls(config)
        source = dict(dalle.state_dict())
        position = source.pop("pos_emb_txt.weight")
        _copy_weights(model.dalle, source, "StoryDalle.from_dalle", fresh=frozenset({"pos_emb_txt.weight"}))
        with torch.no_grad():  # text positions keep their rows; the prefix positions in front are new
            model.dalle.pos_emb_txt.weight[-base.text_len :] = position[-base.text_len :]
        return model

    @classmethod
    def from_story(cls, story: StoryDalle, config: StoryDalleConfig) -> StoryDalle:
        """Builds a StoryDALL-E from a trained one with more cross-attention layers, `story_to_image`, `copy_gate` or
        `copy_source` on (`config` may differ from `story.config` only there, keeping every layer it had): every
        weight is copied and the new sub-layers start fresh (closed when gated, so the outputs are unchanged at
        first)."""
        if story.config.grown(config) != config:
            raise WeightsError(
                "StoryDalle.from_story: the configs may differ only in cross_attention_every and in turning "
                f"story_to_image, copy_gate or copy_source on: {story.config.to_dict()} vs {config.to_dict()}"
            )
        dropped = sorted(set(story.config.cross_layers) - set(config.cross_layers))
        if dropped:
            raise WeightsError(
                f"StoryDalle.from_story: cross_attention_every={config.cross_attention_every} would drop the trained "
                f"cross-attention of blocks {dropped} (layers {story.config.cross_layers}); choose a divisor of "
                f"{story.config.cross_attention_every}"
            )
        model = cls(config)
        _copy_weights(model, story.state_dict(), "StoryDalle.from_story")
        return model

    # --- pieces ---------------------------------------------------------------------------------------------

    def story_tokens(self, sentences: torch.Tensor, frames_valid: torch.Tensor | None = None) -> torch.Tensor | None:
        """sentences (S, L, E) sentence embeddings of each story's captions -> story tokens (S, L, D), or None
        without a story encoder. For the scratch encoder, pass `sentence_embeddings(ids, valid)` first."""
        if self.story_encoder is None:
            return None
        return self.story_encoder(sentences, frames_valid)

    def sentence_embeddings(self, ids: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """The scratch encoder's sentence vectors: ids (N, T), valid (N, T) -> (N, E)."""
        if self.sentence_encoder is None:
            raise ValueError("this model reads MiniLM sentence embeddings; it has no scratch sentence encoder")
        return self.sentence_encoder(ids, valid)

    def prefix(self, story: torch.Tensor | None, batch: int) -> torch.Tensor | None:
        """The prefix vectors of `batch` rows: [prompt | story token] -> (B, P, D), or None when P = 0."""
        parts = []
        if self.prompt is not None:
            parts.append(self.prompt()[None].expand(batch, -1, -1))
        if self.story_encoder is not None:
            if story is None:
                raise ValueError("this model has a story encoder: pass the story token of every row")
            if story.shape != (batch, self.config.dalle.width):
                raise ValueError(f"story tokens of shape {tuple(story.shape)}: expected ({batch}, width)")
            parts.append(story[:, None])
        return torch.cat(parts, dim=1) if parts else None

    def source_context(self, source: torch.Tensor | None) -> torch.Tensor | None:
        """source codes (B, N) of the source frame -> its image embeddings (B, N, D), or None."""
        if source is None or not self.config.cross_layers:
            return None
        return self.dalle.tok_emb_img(source) + self.dalle.pos_emb_img.weight[: source.shape[1]]

    def block_inputs(
        self,
        source: torch.Tensor | None,
        text_len: int,
        source_rows: torch.Tensor | None = None,
        story: torch.Tensor | None = None,
    ) -> dict[str, Any]:
        """The keyword arguments the cross-attention blocks read (see CrossBlock); source_rows (B,) bool: rows that
        have a source frame (default: all); story (B, D): the rows' story tokens (read with `story_to_image`)."""
        kwargs: dict[str, Any] = {}
        cross_from = self.config.prefix_len + text_len - 1
        if self.config.story_to_image and story is not None:
            kwargs.update(story=story, cross_from=cross_from)
        context = self.source_context(source)
        if context is None:
            return kwargs
        if source_rows is None:
            source_rows = torch.ones(source.shape[0], dtype=torch.bool, device=source.device)
        if self.config.copy_source:  # the copy head's inputs, and its record of the agreement drawn so far
            kwargs["source_codes"] = source
            kwargs["source_agree"] = torch.zeros(source.shape, dtype=torch.bool, device=source.device)
        return {**kwargs, "context": context, "context_rows": source_rows, "cross_from": cross_from}

    def generation_inputs(
        self,
        story: torch.Tensor | None,
        source: torch.Tensor | None,
        text_len: int,
        batch: int,
    ) -> tuple[torch.Tensor | None, dict[str, Any]]:
        """What the sampling engine needs besides the text: (prefix (B, P, D) or None, block keyword arguments).

        Use as `Engine(model.dalle).generate(text, config, prefix=prefix, **block_kwargs)`; with guidance, add
        `unconditional_kwargs=model.unconditional_inputs(block_kwargs)`."""
        return self.prefix(story, batch), self.block_inputs(source, text_len, story=story)

    def unconditional_inputs(self, block_kwargs: dict[str, Any]) -> dict[str, torch.Tensor]:
        """The guidance branch's block keyword arguments: without the source frame, as it is without the caption,
        so that classifier-free guidance strengthens both (on sprites this lifted setting accuracy, character F1
        and appearance consistency over an unconditional branch that keeps the source; benchmarks/RESULTS.md)."""
        rows = block_kwargs.get("context_rows")
        return {} if rows is None else {"context_rows": torch.zeros_like(rows)}

    # --- forward --------------------------------------------------------------------------------------------

    def forward(
        self,
        text: torch.Tensor,
        image: torch.Tensor,
        story: torch.Tensor | None = None,
        source: torch.Tensor | None = None,
        source_rows: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """text (B, T) int64, image (B, N) int64 target codes, story (B, D) story tokens, source (B, N) source codes
        (None: no source frame), source_rows (B,) bool (rows whose source is real; None: all)
        -> (text_logits (B, T', V_txt), image_logits (B, N, V_img)), as Dalle.forward with the prefix."""
        prefix = self.prefix(story, text.shape[0])
        return self.dalle(text, image, prefix=prefix, **self.block_inputs(source, text.shape[1], source_rows, story))

    # --- training -------------------------------------------------------------------------------------------

    def new_parameters(self) -> list[nn.Parameter]:
        """The parameters StoryDALL-E adds to DALL-E (cross-attention, story encoder, prompt)."""
        return [p for name, p in self.named_parameters() if _new_part(name) or not name.startswith("dalle.")]

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Full fine-tuning: every parameter. Prompt tuning: the new parts plus the token and position
        embeddings; the rest of the transformer stays frozen."""
        if self.config.mode == "full":
            return list(self.parameters())
        embeddings = [self.dalle.tok_emb_txt, self.dalle.tok_emb_img, self.dalle.pos_emb_txt, self.dalle.pos_emb_img]
        return self.new_parameters() + [p for module in embeddings for p in module.parameters()]
