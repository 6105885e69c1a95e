"""Inference forms of the token transformers (DALL-E, StoryDALL-E): faster, and not for training or saving.

`fuse_attention_(model)` gives every self-attention one query-key-value product (SelfAttention.fuse_qkv_; the
same values). `quantize_int8_(model)` fuses, then replaces every nn.Linear inside `model.blocks` and the image head
`model.head_img` with an `Int8Linear` (CPU only): weights int8 with one scale per output row, activations
quantized per call, products by fbgemm's int8 kernels (PyTorch's dynamic quantization). A decoding step then reads
a quarter of the weight bytes, which is what limits one-position steps on a CPU (benchmarks/token_loop.py).
Embeddings, layer norms and the text head stay in float32. The logits move by a few percent of their spread, so
sampled tokens differ from the float32 model's under the same seed; the quality of the samples is measured in
benchmarks/RESULTS.md. The quantized layers have no gradients and no state-dict entries.

A quantized plain DALL-E (no cross-attention blocks) also gets `LeanDecoding` as its `fast_decode`: the same
one-position step with the operators called directly, the same logits, less Python per token.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn

from storyviz.models.layers import Block, KVCache, SelfAttention


class Int8Linear(nn.Module):
    """y = x W^T + b with W in int8 (symmetric, one scale per output row) and x quantized per call; float32 in
    and out, any leading dimensions. Built from a float nn.Linear (`Int8Linear(linear)`)."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        weight = linear.weight.detach().float().cpu()
        scale = (weight.abs().amax(dim=1) / 127).clamp_min(1e-12).double()
        bias = None if linear.bias is None else linear.bias.detach().float().cpu()
        with warnings.catch_warnings():
            # PyTorch marks its quantized tensor type deprecated (torchao is the successor, not a dependency
            # here); the fbgemm products it feeds are the CPU's fast int8 path for one-row products
            warnings.simplefilter("ignore", (UserWarning, DeprecationWarning, FutureWarning))
            zero = torch.zeros(self.out_features, dtype=torch.long)
            qweight = torch.quantize_per_channel(weight, scale, zero, 0, torch.qint8)
            self._packed = torch.ops.quantized.linear_prepack(qweight, bias)
        overload = torch.ops.quantized.linear_dynamic.default
        # the overload's C++ entry point when it exposes one: its Python __call__ adds a check per call that costs
        # as much as a quarter of a small product
        self._op = getattr(overload, "_op", overload)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._op(x, self._packed, True)  # reduce_range: 7-bit activations, as fbgemm's kernels need

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8"


def fuse_attention_(model: nn.Module) -> nn.Module:
    """Fuses query, key and value of every self-attention in `model` (in place); returns `model`."""
    for module in model.modules():
        if isinstance(module, SelfAttention):
            module.fuse_qkv_()
    return model


def quantize_int8_(model: nn.Module) -> nn.Module:
    """Fuses the attention products, then puts int8 Linears into `model.blocks` and `model.head_img` (in place);
    returns `model`. `model` is a storyviz.models.dalle.Dalle or a model holding one as `.dalle` (StoryDALL-E)."""
    target = getattr(model, "dalle", model)
    if not isinstance(getattr(target, "blocks", None), nn.ModuleList):
        raise TypeError(f"int8 quantization needs a token transformer with `blocks`, got {type(model).__name__}")
    devices = {parameter.device.type for parameter in target.parameters()}
    if devices != {"cpu"}:
        raise ValueError(f"int8 quantization runs on the CPU only; the model is on {', '.join(sorted(devices))}")
    target.eval()
    fuse_attention_(target)
    _replace_linears(target.blocks)
    if isinstance(getattr(target, "head_img", None), nn.Linear):
        target.head_img = Int8Linear(target.head_img)
    if hasattr(target, "fast_decode") and all(type(block) is Block for block in target.blocks):
        target.fast_decode = LeanDecoding(target)
    return model


class LeanDecoding:
    """`Dalle.decode` of a quantized DALL-E whose blocks are all plain `Block`s: one image token per sequence in,
    the fp32 logits (B, V_img) of the next one out, through the same operators in the same order as the modules'
    forward methods (so the same logits, tests/test_inference.py), called directly. At one position per step the
    Python of the module path (forward methods, keyword arguments, the cache's bookkeeping) is about a tenth of a
    step (benchmarks/RESULTS.md). Holds the model's parameters, not copies; inference only (no dropout)."""

    def __init__(self, model: nn.Module):
        config = model.config
        self.width, self.heads, self.image_len = config.width, config.heads, config.image_len
        self.token_embedding, self.position_embedding = model.tok_emb_img.weight, model.pos_emb_img.weight
        self.layers = [
            (
                _norm(block.ln1),
                block.attn.qkv._packed,
                block.attn.proj._packed,
                _norm(block.ln2),
                block.mlp[0]._packed,
                block.mlp[1].approximate,
                block.mlp[2]._packed,
            )
            for block in model.blocks
        ]
        self.final_norm = _norm(model.ln_f)
        self.head = model.head_img._packed
        self.product = model.head_img._op  # every Int8Linear calls the same operator

    def __call__(self, image_token: torch.Tensor, cache: KVCache) -> torch.Tensor:
        batch, width, heads, product = image_token.shape[0], self.width, self.heads, self.product
        position, length = cache.length - cache.prompt_length, cache.length
        if position >= self.image_len or length >= cache.max_len:
            raise ValueError(f"image position {position} is beyond image_len={self.image_len} or the KV cache")
        x = F.embedding(image_token[:, None], self.token_embedding) + self.position_embedding[position : position + 1]
        end = length + 1
        mask = None if cache.key_bias is None else cache.key_bias[:, None, None, :end]
        for layer, (norm1, qkv, proj, norm2, fc1, approximate, fc2) in enumerate(self.layers):
            fused = product(torch.layer_norm(x, *norm1), qkv, True).view(batch, 3, heads, 1, width // heads)
            keys, values = cache.layer_keys[layer], cache.layer_values[layer]
            keys[:, :, length:end] = fused[:, 1]
            values[:, :, length:end] = fused[:, 2]
            y = F.scaled_dot_product_attention(fused[:, 0], keys[:, :, :end], values[:, :, :end], attn_mask=mask)
            x = x + product(y.transpose(1, 2).reshape(batch, 1, width), proj, True)
            hidden = F.gelu(product(torch.layer_norm(x, *norm2), fc1, True), approximate=approximate)
            x = x + product(hidden, fc2, True)
        cache.advance(1)
        return product(torch.layer_norm(x[:, -1], *self.final_norm), self.head, True).float()


def _norm(layer_norm: nn.LayerNorm) -> tuple:
    """The arguments of torch.layer_norm after the input, as nn.LayerNorm.forward passes them."""
    return layer_norm.normalized_shape, layer_norm.weight, layer_norm.bias, layer_norm.eps


def _replace_linears(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.Linear):
            setattr(module, name, Int8Linear(child))
        else:
            _replace_linears(child)


def is_quantized(model: nn.Module) -> bool:
    """True when some layer of `model` holds int8 weights (quantize_int8_ was applied)."""
    return any(isinstance(module, Int8Linear) for module in model.modules())
