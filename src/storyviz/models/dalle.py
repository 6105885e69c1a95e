"""The DALL-E transformer in minDALL-E's stage-2 layout: one decoder over `[prefix | text | image]` tokens.

Separate token and learned position embeddings for text and image, pre-LN blocks, separate text and image
heads without bias. State-dict keys are exactly minDALL-E's (tok_emb_img, tok_emb_txt, pos_emb_img,
pos_emb_txt, blocks.i.*, ln_f, head_img, head_txt), so its released weights load as they are
(storyviz.convert.mindalle).

The network returns logits; the loss lives with the training task and sampling in storyviz.sampling. The
forward pass is split into pieces that a subclass (StoryDALL-E) reuses:
    embed_prompt(text, prefix) -> (B, P+T, D)     the prefix takes the text positions right before the text
    embed_image(image, start)  -> (B, N, D)
    run_blocks(x, ...)         -> (B, L, D)       with an optional KV cache; extra keyword arguments reach
                                                  every block (a cross-attention block can take a context)
    image_logits / text_logits(hidden)            ln_f + head
and a cached step API used by the sampling engine: allocate_cache, prefill, decode. Linear weights are stored
column-major (layers.column_major_; same shapes and keys), which makes the one-position decoding steps faster;
like the blocks, embed_image and image_logits call their sub-modules' `forward` directly (storyviz.models.layers).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from storyviz.config import Config, ConfigError
from storyviz.models.layers import Block, KVCache, causal_padding_mask, column_major_
from storyviz.weights import Pretrained


@dataclass(frozen=True)
class DalleConfig(Config):
    """The transformer.

    `prefix_len` reserves text position embeddings for up to that many prefix embeddings (StoryDALL-E's story
    token / learned prompt), placed before the text: text token j always sits at text position prefix_len + j,
    and a prefix of P <= prefix_len vectors at positions prefix_len-P ... prefix_len-1. With `mask_padding`,
    text positions holding `pad_id` are not attended to (minDALL-E attends to its [PAD]; its import sets False).
    """

    text_vocab_size: int = 16384
    image_vocab_size: int = 16384
    text_len: int = 64
    image_len: int = 256
    prefix_len: int = 0
    width: int = 1536
    layers: int = 42
    heads: int = 24
    mlp_ratio: int = 4
    embed_dropout: float = 0.0
    attention_dropout: float = 0.0
    residual_dropout: float = 0.0
    mask_padding: bool = True
    pad_id: int = 0

    def __post_init__(self):
        for name in ("text_vocab_size", "image_vocab_size", "text_len", "image_len", "width", "layers", "heads"):
            if getattr(self, name) < 1:
                raise ConfigError(f"DalleConfig.{name}: expected a positive integer, got {getattr(self, name)}")
        if self.prefix_len < 0:
            raise ConfigError(f"DalleConfig.prefix_len: expected >= 0, got {self.prefix_len}")
        if self.width % self.heads:
            raise ConfigError(f"DalleConfig: width {self.width} is not divisible by heads {self.heads}")
        if not 0 <= self.pad_id < self.text_vocab_size:
            raise ConfigError(
                f"DalleConfig.pad_id: {self.pad_id} is outside the text vocabulary 0..{self.text_vocab_size - 1}"
            )


PRESETS = {
    "tiny": DalleConfig(text_vocab_size=64, image_vocab_size=32, text_len=8, image_len=16, width=32, layers=2, heads=4),
    "small": DalleConfig(
        text_vocab_size=1024, image_vocab_size=1024, text_len=32, image_len=256, width=256, layers=6, heads=8
    ),
    "bench": DalleConfig(
        text_vocab_size=16384, image_vocab_size=16384, text_len=64, image_len=256, width=256, layers=4, heads=8
    ),
    "1.3B": DalleConfig(mask_padding=False),
}


class Dalle(nn.Module, Pretrained):
    """text (B, T) int64 + image (B, N) int64 -> text logits and image logits (see `forward`)."""

    model_type = "dalle"
    config_class = DalleConfig

    def __init__(self, config: DalleConfig):
        super().__init__()
        self.config = config
        width = config.width
        self.tok_emb_img = nn.Embedding(config.image_vocab_size, width)
        self.tok_emb_txt = nn.Embedding(config.text_vocab_size, width)
        self.pos_emb_img = nn.Embedding(config.image_len, width)
        self.pos_emb_txt = nn.Embedding(config.prefix_len + config.text_len, width)
        self.drop = nn.Dropout(config.embed_dropout)
        self.blocks = nn.ModuleList(
            Block(width, config.heads, config.mlp_ratio, True, config.attention_dropout, config.residual_dropout)
            for _ in range(config.layers)
        )
        self.ln_f = nn.LayerNorm(width)
        self.head_img = nn.Linear(width, config.image_vocab_size, bias=False)
        self.head_txt = nn.Linear(width, config.text_vocab_size, bias=False)
        self.apply(_init_weights)
        column_major_(self)
        self.fast_decode = None  # an inference form's own decoding step (models.inference.LeanDecoding)
        self.copy_head = None  # StoryDALL-E's optional SourceCopy (models.source_copy), which reads block_kwargs

    # --- pieces ---------------------------------------------------------------------------------------------

    def text_mask(self, text: torch.Tensor) -> torch.Tensor | None:
        """(B, T) bool, True for real tokens, or None when padding is attended to (config.mask_padding False)."""
        return text != self.config.pad_id if self.config.mask_padding else None

    def embed_prompt(self, text: torch.Tensor, prefix: torch.Tensor | None = None) -> torch.Tensor:
        """text (B, T) int64, prefix (B, P, D) or None -> (B, P+T, D) with text position embeddings added
        (text token j at position prefix_len + j, the prefix right before it)."""
        batch, length = text.shape
        prefix_len = 0 if prefix is None else prefix.shape[1]
        if length > self.config.text_len:
            raise ValueError(f"text has {length} tokens; this model takes at most text_len={self.config.text_len}")
        if prefix_len > self.config.prefix_len:
            raise ValueError(f"prefix has {prefix_len} embeddings; this model has prefix_len={self.config.prefix_len}")
        first = self.config.prefix_len - prefix_len
        positions = self.pos_emb_txt.weight[first : first + prefix_len + length]
        x = self.tok_emb_txt(text)
        if prefix is not None:
            if prefix.shape[0] != batch or prefix.shape[2] != self.config.width:
                raise ValueError(f"prefix shape {tuple(prefix.shape)}: expected ({batch}, P, {self.config.width})")
            x = torch.cat([prefix.to(x.dtype), x], dim=1)
        return self.drop(x + positions)

    def embed_image(self, image: torch.Tensor, start: int = 0, **block_kwargs) -> torch.Tensor:
        """image (B, N) int64 codes at image positions start ... start+N-1 -> (B, N, D) (block_kwargs: for the
        copy head's record)."""
        end = start + image.shape[1]
        if end > self.config.image_len:
            raise ValueError(f"image position {end - 1} is beyond image_len={self.config.image_len}")
        if self.copy_head is not None:  # it notes which tokens drawn so far equal the source frame's
            self.copy_head.record(image, start, **block_kwargs)
        return self.drop.forward(self.tok_emb_img.forward(image) + self.pos_emb_img.weight[start:end])

    def run_blocks(
        self,
        x: torch.Tensor,
        key_valid: torch.Tensor | None = None,
        cache: KVCache | None = None,
        **block_kwargs,
    ) -> torch.Tensor:
        """x (B, L, D) at positions start ... start+L-1 (start = cache.length, or 0 without a cache) -> (B, L, D).

        key_valid (B, start+L) bool marks attendable positions (None: all); for one decoded token (L = 1) it may
        also be the additive float form (0 or -inf; KVCache.key_bias). `block_kwargs` reach every block.
        """
        start = 0 if cache is None else cache.length
        length = x.shape[1]
        causal = False
        if key_valid is not None and length == 1 and start > 0:
            mask = key_valid[:, None, None, :]  # a decoded token: its own position is valid by construction
        elif key_valid is not None:
            mask = causal_padding_mask(key_valid, start, length)
        elif length == 1:
            mask = None  # one new query may attend to every earlier position
        elif start == 0:
            mask, causal = None, True
        else:
            mask = torch.ones(length, start + length, dtype=torch.bool, device=x.device).tril(start)
        for index, block in enumerate(self.blocks):
            x = block(x, mask=mask, causal=causal, cache=cache, layer=index, start=start, **block_kwargs)
        if cache is not None:
            cache.advance(length)
        return x

    def image_logits(self, hidden: torch.Tensor, first: int = 0, **block_kwargs) -> torch.Tensor:
        """(B, L, D) hidden states that predict image tokens first ... first+L-1 -> (B, L, V_img)."""
        normed = self.ln_f.forward(hidden)
        logits = self.head_img.forward(normed)
        if self.copy_head is not None:
            logits = self.copy_head(normed, logits, first, **block_kwargs)
        return logits

    def text_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """(B, L, D) -> (B, L, V_txt)."""
        return self.head_txt(self.ln_f(hidden))

    def _key_valid(self, text, text_mask, prefix_len: int, image_len: int) -> torch.Tensor | None:
        if text_mask is None:
            text_mask = self.text_mask(text)
        if text_mask is None:
            return None
        batch = text.shape[0]
        ones = text_mask.new_ones
        return torch.cat([ones(batch, prefix_len), text_mask.bool(), ones(batch, image_len)], dim=1)

    # --- full forward ---------------------------------------------------------------------------------------

    def forward(
        self,
        text: torch.Tensor,
        image: torch.Tensor,
        prefix: torch.Tensor | None = None,
        text_mask: torch.Tensor | None = None,
        **block_kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """text (B, T) int64, image (B, N) int64, prefix (B, P, D) or None, text_mask (B, T) bool or None
        (default: from pad_id when config.mask_padding) -> (text_logits, image_logits).

        text_logits (B, T-1, V_txt) without a prefix, (B, T, V_txt) with one: the logits that predict text
        tokens 1..T-1 (and token 0 from the last prefix position). image_logits (B, N, V_img): the logits read at
        the position before each image token (P+T-1 ... P+T+N-2).
        """
        prefix_len = 0 if prefix is None else prefix.shape[1]
        length = text.shape[1]
        x = self.embed_prompt(text, prefix)
        inputs = image[:, :-1]
        if inputs.shape[1]:
            x = torch.cat([x, self.embed_image(inputs, **block_kwargs)], dim=1)
        key_valid = self._key_valid(text, text_mask, prefix_len, inputs.shape[1])
        hidden = self.run_blocks(x, key_valid=key_valid, **block_kwargs)
        first_text = 0 if prefix_len else 1
        text_logits = self.text_logits(hidden[:, prefix_len - 1 + first_text : prefix_len + length - 1])
        first_image = prefix_len + length - 1
        image_logits = self.image_logits(hidden[:, first_image : first_image + image.shape[1]], 0, **block_kwargs)
        return text_logits, image_logits

    def next_image_logits(
        self,
        text: torch.Tensor,
        image: torch.Tensor,
        prefix: torch.Tensor | None = None,
        text_mask: torch.Tensor | None = None,
        **block_kwargs,
    ) -> torch.Tensor:
        """Uncached decoding: the fp32 logits (B, V_img) of image token N given text and image (B, N), N >= 0,
        recomputing the whole sequence."""
        prefix_len = 0 if prefix is None else prefix.shape[1]
        x = self.embed_prompt(text, prefix)
        if image.shape[1]:
            x = torch.cat([x, self.embed_image(image, **block_kwargs)], dim=1)
        key_valid = self._key_valid(text, text_mask, prefix_len, image.shape[1])
        hidden = self.run_blocks(x, key_valid=key_valid, **block_kwargs)
        return self.image_logits(hidden[:, -1:], image.shape[1], **block_kwargs)[:, 0].float()

    # --- cached step API (storyviz.sampling.Engine) ---------------------------------------------------------

    def allocate_cache(
        self, batch: int, prefix_len: int = 0, dtype: torch.dtype | None = None, device: torch.device | None = None
    ) -> KVCache:
        """An empty KV cache for `batch` sequences of prefix_len + text_len + image_len positions."""
        weight = self.tok_emb_img.weight
        config = self.config
        return KVCache(
            config.layers,
            batch,
            config.heads,
            prefix_len + config.text_len + config.image_len,
            config.width // config.heads,
            dtype=dtype or weight.dtype,
            device=device or weight.device,
        )

    def prefill(
        self,
        text: torch.Tensor,
        cache: KVCache,
        prefix: torch.Tensor | None = None,
        text_mask: torch.Tensor | None = None,
        **block_kwargs,
    ) -> torch.Tensor:
        """Processes the prompt (prefix + text) in one pass into an empty cache; returns the fp32 logits
        (B, V_img) of the first image token."""
        if cache.length:
            raise ValueError("prefill needs an empty KV cache (call cache.reset())")
        prefix_len = 0 if prefix is None else prefix.shape[1]
        x = self.embed_prompt(text, prefix)
        key_valid = self._key_valid(text, text_mask, prefix_len, 0)
        if key_valid is not None:
            cache.key_bias = torch.zeros(cache.batch, cache.max_len, dtype=x.dtype, device=x.device)
            cache.key_bias[:, : key_valid.shape[1]].masked_fill_(~key_valid, float("-inf"))
        hidden = self.run_blocks(x, key_valid=key_valid, cache=cache, **block_kwargs)
        cache.prompt_length = cache.length
        return self.image_logits(hidden[:, -1:], 0, **block_kwargs)[:, 0].float()

    def decode(self, image_token: torch.Tensor, cache: KVCache, **block_kwargs) -> torch.Tensor:
        """Feeds one image token per sequence, image_token (B,) int64 at the next image position; returns the
        fp32 logits (B, V_img) of the token after it."""
        if self.fast_decode is not None and not block_kwargs and not self.training:
            return self.fast_decode(image_token, cache)
        start = cache.length - cache.prompt_length
        x = self.embed_image(image_token[:, None], start, **block_kwargs)
        key_valid = None if cache.key_bias is None else cache.key_bias[:, : cache.length + 1]
        hidden = self.run_blocks(x, key_valid=key_valid, cache=cache, **block_kwargs)
        return self.image_logits(hidden[:, -1:], start + 1, **block_kwargs)[:, 0].float()

    def set_prefix_len(self, prefix_len: int) -> None:
        """Reserves position embeddings for `prefix_len` prefix vectors (e.g. StoryDALL-E on imported minDALL-E
        weights). Text keeps its learned positions (rows are added in front, initialised like the rest), so the
        outputs without a prefix do not change."""
        old = self.config.prefix_len
        if prefix_len < 0:
            raise ValueError(f"prefix_len must be >= 0, got {prefix_len}")
        table = nn.Embedding(prefix_len + self.config.text_len, self.config.width).to(self.pos_emb_txt.weight)
        _init_weights(table)
        with torch.no_grad():
            keep = min(old, prefix_len) + self.config.text_len
            table.weight[-keep:] = self.pos_emb_txt.weight[-keep:]
        self.pos_emb_txt = table
        self.config = self.config.replace(prefix_len=prefix_len)

    # --- vocabulary -----------------------------------------------------------------------------------------

    def resize_text_embeddings(self, new_size: int) -> None:
        """Grows (or shrinks) the text vocabulary to `new_size` (after TextTokenizer.add_tokens); existing rows
        of tok_emb_txt and head_txt are kept, new rows initialised like the rest."""
        old = self.config.text_vocab_size
        if new_size == old:
            return
        if new_size <= self.config.pad_id:
            raise ValueError(f"text vocabulary size {new_size} would drop pad_id {self.config.pad_id}")
        keep = min(old, new_size)
        embedding = nn.Embedding(new_size, self.config.width).to(self.tok_emb_txt.weight)
        head = nn.Linear(self.config.width, new_size, bias=False).to(self.head_txt.weight)
        _init_weights(embedding)
        _init_weights(head)
        with torch.no_grad():
            embedding.weight[:keep] = self.tok_emb_txt.weight[:keep]
            head.weight[:keep] = self.head_txt.weight[:keep]
        self.tok_emb_txt, self.head_txt = embedding, column_major_(head)
        self.config = self.config.replace(text_vocab_size=new_size)


def _init_weights(module: nn.Module) -> None:
    """minGPT / minDALL-E initialisation: normal(0, 0.02) weights, zero biases, unit LayerNorm."""
    if isinstance(module, nn.Linear | nn.Embedding):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
