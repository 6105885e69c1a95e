"""The sampling engine: autoregressive image-token generation with a preallocated KV cache.

The engine owns the cache and the sampling loop; it knows nothing of tokenizers or images. It drives any model
with the cached step API of storyviz.models.dalle.Dalle:
    allocate_cache(batch, prefix_len) -> KVCache
    prefill(text, cache, prefix=None, **block_kwargs) -> logits (B, V) of the first image token
    decode(image_token (B,), cache, **block_kwargs)   -> logits (B, V) of the next one
    next_image_logits(text, image, prefix=None, **block_kwargs) -> the same without a cache (use_cache=False)
and reads model.config.image_len and model.config.pad_id.

Batch layout: B prompts x C candidates = rows b*C + c; with guidance (scale != 1) a second block of B*C rows
holds the unconditional prompt (an empty caption: all-[PAD] text, with `unconditional_prefix` and
`unconditional_kwargs` where given, else the prompts' own prefix and block keyword arguments). With a
`source_guidance` scale, a block between them holds the empty caption with the prompts' own prefix and keyword
arguments (the source frame kept), and the two scales guide the source frame and the caption apart
(`two_scale_guidance`).
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from storyviz.config import Config, ConfigError
from storyviz.sampling.filters import filtered_distribution, guidance, two_scale_guidance


@dataclass(frozen=True)
class SamplingConfig(Config):
    """How to sample. top_k 0 and top_p 1 switch those filters off; top_k 1 is exact greedy decoding.
    guidance_scale 1 is plain conditional sampling; image tokens before `guidance_start` are sampled without
    guidance (the guidance branch still reads them). source_guidance > 0 guides what the unconditional branch
    drops beyond the caption (a story model's source frame) with its own scale, guidance_scale then scaling the
    caption alone; 0 scales both with guidance_scale. seed None draws from torch's global generator."""

    temperature: float = 1.0
    top_k: int = 256
    top_p: float = 1.0
    guidance_scale: float = 1.0
    guidance_start: int = 0
    source_guidance: float = 0.0
    candidates: int = 1
    seed: int | None = 0

    def __post_init__(self):
        if self.temperature <= 0:
            raise ConfigError(f"SamplingConfig.temperature: expected > 0, got {self.temperature}")
        if self.top_k < 0:
            raise ConfigError(f"SamplingConfig.top_k: expected >= 0 (0 = off), got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"SamplingConfig.top_p: expected a value in (0, 1], got {self.top_p}")
        if self.guidance_start < 0:
            raise ConfigError(f"SamplingConfig.guidance_start: expected >= 0, got {self.guidance_start}")
        if self.source_guidance < 0:
            raise ConfigError(f"SamplingConfig.source_guidance: expected >= 0 (0 = off), got {self.source_guidance}")
        if self.candidates < 1:
            raise ConfigError(f"SamplingConfig.candidates: expected >= 1, got {self.candidates}")


@dataclass
class Generation:
    """tokens (B, C, N) int64; scores (B, C) from the scorer, candidates sorted best first, or None."""

    tokens: torch.Tensor
    scores: torch.Tensor | None = None


Scorer = Callable[[torch.Tensor], torch.Tensor]  # tokens (B, C, N) -> scores (B, C), higher is better


def sample_next(logits: torch.Tensor, config: SamplingConfig, generator: torch.Generator | None) -> torch.Tensor:
    """logits (B, V) -> sampled token ids (B,) int64; top_k 1 is argmax."""
    if config.top_k == 1:
        return logits.argmax(dim=-1)
    probabilities, ids = filtered_distribution(logits, config.temperature, config.top_k, config.top_p)
    # an exponential race: argmax p_i / E_i with E_i ~ Exp(1) picks i with probability p_i (faster than multinomial)
    race = torch.empty_like(probabilities).exponential_(generator=generator).clamp_min_(1e-30)
    choice = (probabilities / race).argmax(dim=-1, keepdim=True)
    return ids.gather(-1, choice)[:, 0]


class Engine:
    """Generates image tokens from text tokens with `model` (see the module docstring).

    use_cache False recomputes the whole sequence at every step (for tests and the benchmark).
    """

    def __init__(self, model: torch.nn.Module, use_cache: bool = True):
        self.model = model
        self.use_cache = use_cache

    def stream(
        self,
        text: torch.Tensor,
        config: SamplingConfig = SamplingConfig(),
        prefix: torch.Tensor | None = None,
        unconditional_prefix: torch.Tensor | None = None,
        unconditional_kwargs: dict[str, torch.Tensor] | None = None,
        **block_kwargs,
    ) -> Iterator[tuple[int, torch.Tensor]]:
        """Yields (step, tokens (B, C, step+1)) after each new image token, so a caller can decode partial images.

        text (B, T) int64; prefix (B, P, D) or None; unconditional_prefix (B, P, D) for the guidance branch
        (default: the same prefix). Tensor `block_kwargs` with B rows are repeated like the prompts;
        `unconditional_kwargs` replaces some of them (B rows each) in the guidance branch.
        """
        steps = self._run(text, config, prefix, unconditional_prefix, unconditional_kwargs, block_kwargs)
        for step, tokens in steps:
            yield step, tokens.clone()

    def generate(
        self,
        text: torch.Tensor,
        config: SamplingConfig = SamplingConfig(),
        prefix: torch.Tensor | None = None,
        unconditional_prefix: torch.Tensor | None = None,
        scorer: Scorer | None = None,
        unconditional_kwargs: dict[str, torch.Tensor] | None = None,
        **block_kwargs,
    ) -> Generation:
        """text (B, T) int64 -> Generation(tokens (B, C, image_len)); with a scorer, candidates re-ranked."""
        steps = self._run(text, config, prefix, unconditional_prefix, unconditional_kwargs, block_kwargs)
        tokens = collections.deque(steps, maxlen=1)[0][1].clone()  # the full buffer, as a normal tensor
        if scorer is None:
            return Generation(tokens)
        scores = torch.as_tensor(scorer(tokens), dtype=torch.float32)
        if scores.shape != tokens.shape[:2]:
            raise ValueError(f"scorer returned shape {tuple(scores.shape)}, expected {tuple(tokens.shape[:2])}")
        order = scores.argsort(dim=1, descending=True)
        tokens = tokens.gather(1, order[:, :, None].expand_as(tokens))
        return Generation(tokens, scores.gather(1, order))

    @torch.inference_mode()
    def _run(
        self, text, config, prefix, unconditional_prefix, unconditional_kwargs, block_kwargs
    ) -> Iterator[tuple[int, torch.Tensor]]:
        """Yields (step, view of the output buffer (B, C, step+1)); the buffer is filled in place."""
        model = self.model
        batch, candidates = text.shape[0], config.candidates
        rows = batch * candidates
        two_scales = config.source_guidance > 0
        guided = config.guidance_scale != 1.0 or two_scales
        branches = 1 + guided + two_scales
        if unconditional_prefix is not None and prefix is None:
            raise ValueError("unconditional_prefix given without a prefix")
        unconditional_kwargs = unconditional_kwargs or {}
        for key, value in unconditional_kwargs.items():
            given = block_kwargs.get(key)
            if not isinstance(given, torch.Tensor) or given.shape != value.shape:
                raise ValueError(
                    f"unconditional_kwargs[{key!r}] of shape {tuple(value.shape)} must replace a block keyword "
                    f"argument of the same shape, got {None if given is None else tuple(getattr(given, 'shape', ()))}"
                )
        text, prefix, block_kwargs = _repeat_prompts(text, prefix, block_kwargs, batch, candidates)
        if guided:
            empty = torch.full_like(text, model.config.pad_id)
            unconditional = prefix
            if unconditional_prefix is not None:
                unconditional = unconditional_prefix.repeat_interleave(candidates, dim=0)
            text = torch.cat([text] + [empty] * (branches - 1))
            prefix = None if prefix is None else torch.cat([prefix] * (branches - 1) + [unconditional])
            block_kwargs = {
                key: torch.cat(
                    [value] * (branches - 1) + [unconditional_kwargs[key].repeat_interleave(candidates, dim=0)]
                )
                if key in unconditional_kwargs
                else _repeat_rows(value, rows, branches)
                for key, value in block_kwargs.items()
            }
        generator = None
        if config.seed is not None:
            generator = torch.Generator(device=text.device).manual_seed(config.seed)
        image_len = model.config.image_len
        out = torch.empty(rows, image_len, dtype=torch.long, device=text.device)
        if self.use_cache:
            cache = model.allocate_cache(text.shape[0], 0 if prefix is None else prefix.shape[1])
            logits = model.prefill(text, cache, prefix=prefix, **block_kwargs)
        for step in range(image_len):
            if not self.use_cache:
                logits = model.next_image_logits(text, out[:, :step].repeat(branches, 1), prefix, **block_kwargs)
            if guided:
                logits = _guide(logits, rows, config) if step >= config.guidance_start else logits[:rows]
            token = sample_next(logits, config, generator)
            out[:, step] = token
            yield step, out[:, : step + 1].view(batch, candidates, step + 1)
            if self.use_cache and step + 1 < image_len:
                logits = model.decode(token.repeat(branches), cache, **block_kwargs)


def _repeat_prompts(text, prefix, block_kwargs, batch: int, candidates: int):
    """Repeats each prompt (and tensor keyword arguments with `batch` rows) `candidates` times: rows b*C + c."""
    if candidates == 1:
        return text, prefix, dict(block_kwargs)
    text = text.repeat_interleave(candidates, dim=0)
    prefix = None if prefix is None else prefix.repeat_interleave(candidates, dim=0)
    block_kwargs = {
        key: value.repeat_interleave(candidates, dim=0)
        if isinstance(value, torch.Tensor) and value.dim() and value.shape[0] == batch
        else value
        for key, value in block_kwargs.items()
    }
    return text, prefix, block_kwargs


def _guide(logits: torch.Tensor, rows: int, config: SamplingConfig) -> torch.Tensor:
    """The guided logits (rows, V) from the branches' blocks of `rows` rows (the module docstring's layout)."""
    if config.source_guidance > 0:
        conditional, source_only, unconditional = logits.split(rows)
        return two_scale_guidance(
            conditional, source_only, unconditional, config.guidance_scale, config.source_guidance
        )
    return guidance(logits[:rows], logits[rows:], config.guidance_scale)


def _repeat_rows(value, rows: int, branches: int):
    """Repeats a per-row tensor for every branch of the batch."""
    if isinstance(value, torch.Tensor) and value.dim() and value.shape[0] == rows:
        return torch.cat([value] * branches)
    return value
