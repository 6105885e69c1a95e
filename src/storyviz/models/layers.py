"""Transformer pieces shared by the token models (DALL-E now, StoryDALL-E next): a preallocated KV cache,
causal self-attention, the pre-LN block. Parameter names follow minDALL-E (`ln1`, `attn.{key,query,value,proj}`,
`ln2`, `mlp.0`, `mlp.2`) so its released weights load without renaming.

Blocks and attention call their sub-modules' `forward` directly: nn.Module.__call__'s bookkeeping cost 6-8% of a
one-position decoding loop on a CPU (in-process A/B; benchmarks/RESULTS.md). Forward hooks on those sub-modules are
therefore not run (hooks on a block are).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class KVCache:
    """Keys and values of every layer, preallocated and filled in place (no concatenation).

    keys, values: (layers, B, heads, max_len, head_dim), with per-layer views in layer_keys / layer_values.
    `length` positions are filled; `key_bias` (B, max_len), when set, is the additive attention mask of the cached
    positions (-inf for masked text padding, else 0), what decoding steps hand to attention.
    `prompt_length` is the length of the prompt (prefix + text) once it has been processed.
    `context` holds per-layer state computed once per prompt (StoryDALL-E's cross-attention keys and values).
    """

    def __init__(
        self,
        layers: int,
        batch: int,
        heads: int,
        max_len: int,
        head_dim: int,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ):
        shape = (layers, batch, heads, max_len, head_dim)
        self.keys = torch.empty(shape, dtype=dtype, device=device)  # only positions < length are ever read
        self.values = torch.empty(shape, dtype=dtype, device=device)
        self.layer_keys = [self.keys[layer] for layer in range(layers)]  # per-layer views, made once
        self.layer_values = [self.values[layer] for layer in range(layers)]
        self.length = 0
        self.prompt_length = 0
        self.key_bias: torch.Tensor | None = None
        self.context: dict[int, tuple[torch.Tensor, ...]] = {}

    @property
    def batch(self) -> int:
        return self.keys.shape[1]

    @property
    def max_len(self) -> int:
        return self.keys.shape[3]

    def reset(self) -> None:
        """Forgets the content (the memory is kept for the next prompt)."""
        self.length = 0
        self.prompt_length = 0
        self.key_bias = None
        self.context = {}

    def store(self, layer: int, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Writes keys/values (B, heads, L, head_dim) at positions length ... length+L-1 of `layer`; returns
        views of all keys and values so far, (B, heads, length+L, head_dim). `length` is advanced by the model
        after its last layer (`advance`)."""
        end = self.length + keys.shape[2]
        if end > self.max_len:
            raise ValueError(f"KV cache holds {self.max_len} positions; cannot store up to position {end}")
        layer_keys, layer_values = self.layer_keys[layer], self.layer_values[layer]
        layer_keys[:, :, self.length : end] = keys
        layer_values[:, :, self.length : end] = values
        return layer_keys[:, :, :end], layer_values[:, :, :end]

    def advance(self, steps: int) -> None:
        self.length += steps


class SelfAttention(nn.Module):
    """Multi-head self-attention, (B, L, D) -> (B, L, D), with minDALL-E's parameter names.

    `mask` is a bool tensor broadcastable to (B, heads, L, keys) (True = may attend) or None; `causal` asks for
    the plain lower-triangular mask (only without a cache, where queries and keys are the same positions).
    """

    def __init__(self, width: int, heads: int, bias: bool = True, attention_dropout: float = 0.0, dropout: float = 0.0):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        self.heads = heads
        self.key = nn.Linear(width, width, bias=bias)
        self.query = nn.Linear(width, width, bias=bias)
        self.value = nn.Linear(width, width, bias=bias)
        self.proj = nn.Linear(width, width, bias=bias)
        self.qkv: nn.Linear | None = None  # the fused inference form (fuse_qkv_), else None
        self.attention_dropout = attention_dropout
        self.dropout = dropout

    def fuse_qkv_(self) -> None:
        """Inference form: one Linear `qkv` (width -> 3 width) replaces query, key and value (same values), so a
        decoding step makes one product instead of three. The state-dict keys change (qkv.*): not for training
        or saving."""
        if self.qkv is not None:
            return
        parts = (self.query, self.key, self.value)
        fused = nn.Linear(parts[0].in_features, 3 * parts[0].out_features, bias=parts[0].bias is not None)
        fused = fused.to(parts[0].weight)
        with torch.no_grad():
            fused.weight.copy_(torch.cat([part.weight for part in parts]))
            if fused.bias is not None:
                fused.bias.copy_(torch.cat([part.bias for part in parts]))
        del self.query, self.key, self.value
        self.qkv = column_major_(fused.requires_grad_(False))

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        causal: bool = False,
        cache: KVCache | None = None,
        layer: int = 0,
    ) -> torch.Tensor:
        batch, length, width = x.shape
        if self.qkv is None:
            shape = (batch, length, self.heads, width // self.heads)
            query = self.query.forward(x).view(shape).transpose(1, 2)
            key = self.key.forward(x).view(shape).transpose(1, 2)
            value = self.value.forward(x).view(shape).transpose(1, 2)
        else:
            fused = self.qkv.forward(x).view(batch, length, 3, self.heads, width // self.heads)
            query, key, value = fused.permute(2, 0, 3, 1, 4).unbind(0)
        if cache is not None:
            key, value = cache.store(layer, key, value)
        dropout = self.attention_dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, dropout_p=dropout, is_causal=causal)
        y = self.proj.forward(y.transpose(1, 2).reshape(batch, length, width))
        return F.dropout(y, self.dropout) if self.training and self.dropout else y


class Block(nn.Module):
    """Pre-LN transformer block: x + attn(ln1(x)), then x + mlp(ln2(x)); exact GELU. (B, L, D) -> (B, L, D).

    `forward` takes keyword arguments it does not use (`start`, the position of x[:, 0] in the whole
    sequence, and whatever the model's caller passes through, e.g. a cross-attention context), so that a
    subclass with an extra sub-layer can be dropped into a model's block list.
    """

    def __init__(
        self,
        width: int,
        heads: int,
        mlp_ratio: int = 4,
        bias: bool = True,
        attention_dropout: float = 0.0,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.ln1 = nn.LayerNorm(width)
        self.attn = SelfAttention(width, heads, bias, attention_dropout, dropout)
        self.ln2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(  # keys mlp.0 and mlp.2, as in minDALL-E (its mlp.3 dropout is applied below)
            nn.Linear(width, mlp_ratio * width, bias=bias),
            nn.GELU(),
            nn.Linear(mlp_ratio * width, width, bias=bias),
        )
        self.dropout = dropout

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        causal: bool = False,
        cache: KVCache | None = None,
        layer: int = 0,
        start: int = 0,
        **extra,
    ) -> torch.Tensor:
        x = x + self.attn.forward(self.ln1.forward(x), mask=mask, causal=causal, cache=cache, layer=layer)
        x = self.after_attention(x, cache=cache, layer=layer, start=start, **extra)
        fc1, activation, fc2 = self.mlp
        y = fc2.forward(activation.forward(fc1.forward(self.ln2.forward(x))))
        return x + (F.dropout(y, self.dropout) if self.training and self.dropout else y)

    def after_attention(self, x: torch.Tensor, **kwargs) -> torch.Tensor:
        """A sub-layer between self-attention and the MLP; none here (StoryDALL-E's CrossBlock adds one)."""
        return x


def causal_padding_mask(key_valid: torch.Tensor, start: int, length: int) -> torch.Tensor:
    """The attention mask of queries at positions start ... start+length-1 over keys 0 ... start+length-1.

    key_valid (B, start+length) bool (False = padding that is not attended to) -> (B, 1, length, start+length)
    bool, True = may attend. A query may always attend to itself, so an all-padding prompt never gives an
    empty softmax row.
    """
    total = start + length
    if key_valid.shape[1] != total:
        raise ValueError(f"key_valid covers {key_valid.shape[1]} positions, expected {total}")
    queries = torch.arange(start, total, device=key_valid.device)[:, None]
    keys = torch.arange(total, device=key_valid.device)[None, :]
    causal = keys <= queries
    mask = causal & (key_valid[:, None, :] | (keys == queries))
    return mask[:, None]


def column_major_(module: nn.Module) -> nn.Module:
    """Stores the weight (out, in) of every nn.Linear inside `module` column-major, i.e. as the transpose of a
    contiguous (in, out) tensor. Shapes, values and state-dict keys are unchanged; `F.linear` then multiplies by
    a contiguous (in, out) matrix, which for one position per step (cached decoding) is about 1.6x faster on CPU.
    `load_state_dict` and `.to(dtype)` keep the layout."""
    for child in module.modules():
        if isinstance(child, nn.Linear) and child.weight.stride(0) != 1:
            child.weight = nn.Parameter(
                child.weight.detach().t().contiguous().t(), requires_grad=child.weight.requires_grad
            )
    return module
