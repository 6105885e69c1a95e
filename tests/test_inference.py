"""Inference forms of the token transformer: fused query-key-value products and int8 weights."""

import copy

import pytest
import torch

from storyviz.models.dalle import PRESETS, Dalle
from storyviz.models.inference import fuse_attention_, is_quantized, quantize_int8_
from storyviz.sampling import Engine, SamplingConfig

CONFIG = PRESETS["tiny"].replace(width=64, heads=4, image_len=16)


def make_model():
    torch.manual_seed(0)
    return Dalle(CONFIG).eval()


def prompts():
    torch.manual_seed(1)
    text = torch.randint(1, CONFIG.text_vocab_size, (3, CONFIG.text_len))
    text[0, 3:] = CONFIG.pad_id
    return text


def all_logits(model, text, image):
    """Cached logits of every image position (prefill, then one decode per token), (B, N, V)."""
    cache = model.allocate_cache(text.shape[0])
    logits = [model.prefill(text, cache)]
    for step in range(image.shape[1] - 1):
        logits.append(model.decode(image[:, step], cache))
    return torch.stack(logits, dim=1)


def test_fused_attention_gives_the_same_logits_cached_and_uncached():
    model = make_model()
    fused = fuse_attention_(copy.deepcopy(model))
    keys = fused.state_dict().keys()
    assert "blocks.0.attn.qkv.weight" in keys and "blocks.0.attn.query.weight" not in keys
    fuse_attention_(fused)  # a second call changes nothing
    text, image = prompts(), torch.randint(0, CONFIG.image_vocab_size, (3, CONFIG.image_len))
    with torch.inference_mode():
        expected = all_logits(model, text, image)
        torch.testing.assert_close(all_logits(fused, text, image), expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(fused.next_image_logits(text, image[:, :5]), expected[:, 5], rtol=1e-5, atol=1e-5)


def test_int8_weights_keep_the_logits_close():
    model = make_model()
    with torch.no_grad():  # logits with a trained model's spread: a random init gives near-uniform ones
        model.head_img.weight.mul_(30)
    quantized = quantize_int8_(copy.deepcopy(model))
    assert is_quantized(quantized) and not is_quantized(model)
    assert quantized.tok_emb_img.weight.dtype == torch.float32  # embeddings stay as they were
    text, image = prompts(), torch.randint(0, CONFIG.image_vocab_size, (3, CONFIG.image_len))
    with torch.inference_mode():
        expected, got = all_logits(model, text, image), all_logits(quantized, text, image)
    spread = expected.std()
    assert spread > 1
    error = (got - expected).abs()
    assert error.max() < 0.2 * spread, (float(error.max()), float(spread))
    agree = (got.argmax(-1) == expected.argmax(-1)).float().mean()
    assert agree > 0.9, float(agree)
    tokens = Engine(quantized).generate(text, SamplingConfig(top_k=4, seed=2)).tokens
    assert torch.equal(tokens, Engine(quantized).generate(text, SamplingConfig(top_k=4, seed=2)).tokens)


def test_int8_lean_decoding_gives_the_module_path_logits():
    quantized = quantize_int8_(make_model())
    assert quantized.fast_decode is not None
    text, image = prompts(), torch.randint(0, CONFIG.image_vocab_size, (3, CONFIG.image_len))
    with torch.inference_mode():
        lean = all_logits(quantized, text, image)
        quantized.fast_decode = None  # back to the modules' forward methods
        modules = all_logits(quantized, text, image)
    assert torch.equal(lean, modules)


def test_int8_refuses_a_model_without_blocks():
    with pytest.raises(TypeError, match="blocks"):
        quantize_int8_(torch.nn.Linear(4, 4))
