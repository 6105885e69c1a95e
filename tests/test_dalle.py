"""The DALL-E transformer: shapes, float64 parity with minDALL-E's math, cached steps, save/load, resizing."""

import math

import pytest
import torch

from storyviz.config import ConfigError
from storyviz.models.dalle import PRESETS, Dalle, DalleConfig
from storyviz.models.layers import Block
from storyviz.registry import load_model
from storyviz.weights import WeightsError

TINY = PRESETS["tiny"]


def make_model(config: DalleConfig = TINY, seed: int = 0) -> Dalle:
    torch.manual_seed(seed)
    model = Dalle(config).double().eval()
    with torch.no_grad():  # non-trivial LayerNorm parameters and biases, so a wrong key or order shows up
        for name, parameter in model.named_parameters():
            if "ln" in name or name.endswith("bias"):
                parameter.add_(0.1 * torch.randn_like(parameter))
    return model


def reference_forward(state: dict, heads: int, text: torch.Tensor, image: torch.Tensor, key_valid=None):
    """minDALL-E's Transformer1d.forward written out from the raw state dict (float64).

    text (B, T), image (B, N) -> (text logits (B, T-1, V_txt), image logits (B, N, V_img)). key_valid (B, T+N)
    bool masks attention to padding (plus the position itself), as storyviz does with mask_padding."""
    state = {key: value.double() for key, value in state.items()}

    def layer_norm(x, prefix):
        mean = x.mean(-1, keepdim=True)
        var = ((x - mean) ** 2).mean(-1, keepdim=True)
        return (x - mean) / torch.sqrt(var + 1e-5) * state[prefix + ".weight"] + state[prefix + ".bias"]

    def linear(x, prefix, bias=True):
        out = x @ state[prefix + ".weight"].T
        return out + state[prefix + ".bias"] if bias else out

    batch, length_text = text.shape
    length_image = image.shape[1]
    x = torch.cat(
        [
            state["tok_emb_txt.weight"][text] + state["pos_emb_txt.weight"][:length_text],
            state["tok_emb_img.weight"][image] + state["pos_emb_img.weight"][:length_image],
        ],
        dim=1,
    )
    length, width = x.shape[1], x.shape[2]
    allowed = torch.tril(torch.ones(length, length, dtype=torch.bool)).expand(batch, length, length)
    if key_valid is not None:
        allowed = allowed & (key_valid[:, None, :] | torch.eye(length, dtype=torch.bool))
    layers = 1 + max(int(key.split(".")[1]) for key in state if key.startswith("blocks."))
    head_dim = width // heads
    for i in range(layers):
        block = f"blocks.{i}"
        h = layer_norm(x, f"{block}.ln1")
        q, k, v = (
            linear(h, f"{block}.attn.{name}").view(batch, length, heads, head_dim).transpose(1, 2)
            for name in ("query", "key", "value")
        )
        scores = q @ k.transpose(-2, -1) / math.sqrt(head_dim)
        scores = scores.masked_fill(~allowed[:, None], float("-inf"))
        y = (scores.softmax(-1) @ v).transpose(1, 2).reshape(batch, length, width)
        x = x + linear(y, f"{block}.attn.proj")
        h = linear(layer_norm(x, f"{block}.ln2"), f"{block}.mlp.0")
        h = 0.5 * h * (1 + torch.erf(h / math.sqrt(2)))
        x = x + linear(h, f"{block}.mlp.2")
    x = layer_norm(x, "ln_f")
    text_logits = linear(x[:, : length_text - 1], "head_txt", bias=False)
    image_logits = linear(x[:, length_text - 1 : -1], "head_img", bias=False)
    return text_logits, image_logits


def test_state_dict_keys_are_mindalle_layout():
    keys = set(Dalle(TINY).state_dict())
    expected = {"tok_emb_img.weight", "tok_emb_txt.weight", "pos_emb_img.weight", "pos_emb_txt.weight"}
    expected |= {"ln_f.weight", "ln_f.bias", "head_img.weight", "head_txt.weight"}
    for i in range(TINY.layers):
        for name in ("ln1", "ln2", "attn.key", "attn.query", "attn.value", "attn.proj", "mlp.0", "mlp.2"):
            expected |= {f"blocks.{i}.{name}.weight", f"blocks.{i}.{name}.bias"}
    assert keys == expected


@pytest.mark.parametrize("mask_padding", [False, True])
def test_forward_matches_float64_reference(mask_padding):
    model = make_model(TINY.replace(mask_padding=mask_padding))
    text = torch.randint(1, TINY.text_vocab_size, (3, TINY.text_len))
    text[0, 5:] = TINY.pad_id
    text[2, :] = TINY.pad_id  # an all-padding (unconditional) caption
    image = torch.randint(0, TINY.image_vocab_size, (3, TINY.image_len))
    text_logits, image_logits = model(text, image)
    assert text_logits.shape == (3, TINY.text_len - 1, TINY.text_vocab_size)
    assert image_logits.shape == (3, TINY.image_len, TINY.image_vocab_size)
    key_valid = None
    if mask_padding:
        key_valid = torch.cat([text != TINY.pad_id, torch.ones_like(image, dtype=torch.bool)], dim=1)
    ref_text, ref_image = reference_forward(model.state_dict(), TINY.heads, text, image, key_valid)
    torch.testing.assert_close(text_logits, ref_text, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(image_logits, ref_image, rtol=1e-10, atol=1e-10)
    if mask_padding:  # padding is not attended to: what padded positions hold only matters at the last text
        other = text.clone()  # position, whose own output predicts the first image token
        other[0, 5:] = 7
        _, other_image = model(other, image, text_mask=text != TINY.pad_id)
        torch.testing.assert_close(other_image[0, 1:], image_logits[0, 1:])


def test_prefix_takes_text_positions_and_gives_one_more_text_logit():
    config = TINY.replace(prefix_len=3)
    model = make_model(config)
    text = torch.randint(1, config.text_vocab_size, (2, config.text_len))
    image = torch.randint(0, config.image_vocab_size, (2, config.image_len))
    prefix = torch.randn(2, 3, config.width, dtype=torch.float64)
    text_logits, image_logits = model(text, image, prefix=prefix)
    assert text_logits.shape == (2, config.text_len, config.text_vocab_size)
    assert image_logits.shape == (2, config.image_len, config.image_vocab_size)
    # the same as feeding the prefix as "text" whose token embedding is the prefix vector
    x = torch.cat([prefix, model.tok_emb_txt(text)], dim=1) + model.pos_emb_txt.weight
    x = torch.cat([x, model.tok_emb_img(image[:, :-1]) + model.pos_emb_img.weight[: config.image_len - 1]], dim=1)
    for block in model.blocks:
        x = block(x, causal=True)
    torch.testing.assert_close(image_logits, model.image_logits(x[:, 3 + config.text_len - 1 :]))
    with pytest.raises(ValueError, match="prefix_len"):
        model(text, image, prefix=torch.randn(2, 4, config.width, dtype=torch.float64))
    # a shorter prefix (or none) sits right before the text, whose positions never move
    for prefix_len in (2, 0):
        _, logits = model(text, image, prefix=prefix[:, 3 - prefix_len :] if prefix_len else None)
        x = torch.cat([prefix[:, 3 - prefix_len :], model.tok_emb_txt(text)], dim=1)
        x = x + model.pos_emb_txt.weight[3 - prefix_len :]
        x = torch.cat([x, model.tok_emb_img(image[:, :-1]) + model.pos_emb_img.weight[: config.image_len - 1]], dim=1)
        for block in model.blocks:
            x = block(x, causal=True)
        torch.testing.assert_close(logits, model.image_logits(x[:, prefix_len + config.text_len - 1 :]))


def test_set_prefix_len_keeps_text_positions():
    model = make_model()
    text = torch.randint(1, TINY.text_vocab_size, (2, TINY.text_len))
    image = torch.randint(0, TINY.image_vocab_size, (2, TINY.image_len))
    before = model(text, image)
    model.set_prefix_len(2)
    assert model.config.prefix_len == 2 and model.pos_emb_txt.weight.shape == (2 + TINY.text_len, TINY.width)
    for a, b in zip(before, model(text, image)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    text_logits, _ = model(text, image, prefix=torch.randn(2, 2, TINY.width, dtype=torch.float64))
    assert text_logits.shape[1] == TINY.text_len


@pytest.mark.parametrize("mask_padding", [False, True])
def test_cached_steps_equal_full_forward(mask_padding):
    model = make_model(TINY.replace(mask_padding=mask_padding))
    text = torch.randint(1, TINY.text_vocab_size, (2, TINY.text_len))
    text[1, 3:] = TINY.pad_id
    image = torch.randint(0, TINY.image_vocab_size, (2, TINY.image_len))
    _, full = model(text, image)
    cache = model.allocate_cache(2)
    logits = [model.prefill(text, cache)]
    for step in range(TINY.image_len - 1):
        logits.append(model.decode(image[:, step], cache))
    torch.testing.assert_close(torch.stack(logits, dim=1), full.float(), rtol=1e-5, atol=1e-5)
    assert cache.length == TINY.text_len + TINY.image_len - 1


class ContextBlock(Block):
    """A block with an extra sub-layer that only image positions use, as StoryDALL-E's cross-attention will."""

    def forward(self, x, mask=None, causal=False, cache=None, layer=0, start=0, context=None, image_start=0, **extra):
        x = super().forward(x, mask=mask, causal=causal, cache=cache, layer=layer, start=start)
        positions = torch.arange(start, start + x.shape[1])
        gate = (positions >= image_start).to(x.dtype)[None, :, None]
        return x + gate * context.mean(dim=1, keepdim=True)


def test_block_hook_gets_keyword_arguments_in_cached_and_uncached_paths():
    model = make_model()
    model.blocks[1] = ContextBlock(TINY.width, TINY.heads).double()
    text = torch.randint(1, TINY.text_vocab_size, (2, TINY.text_len))
    image = torch.randint(0, TINY.image_vocab_size, (2, TINY.image_len))
    context = torch.randn(2, 5, TINY.width, dtype=torch.float64)
    kwargs = {"context": context, "image_start": TINY.text_len - 1}
    _, full = model(text, image, **kwargs)
    _, without = model(text, image, context=torch.zeros_like(context), image_start=TINY.text_len - 1)
    assert not torch.allclose(full, without)
    cache = model.allocate_cache(2)
    logits = [model.prefill(text, cache, **kwargs)]
    for step in range(TINY.image_len - 1):
        logits.append(model.decode(image[:, step], cache, **kwargs))
    torch.testing.assert_close(torch.stack(logits, dim=1), full.float(), rtol=1e-5, atol=1e-5)


def test_save_load_round_trip(tmp_path):
    model = make_model().float()
    model.save_pretrained(tmp_path / "dalle")
    loaded = load_model(tmp_path / "dalle")
    assert isinstance(loaded, Dalle) and loaded.config == model.config
    text = torch.randint(0, TINY.text_vocab_size, (2, TINY.text_len))
    image = torch.randint(0, TINY.image_vocab_size, (2, TINY.image_len))
    for a, b in zip(model(text, image), loaded(text, image)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert loaded.head_img.weight.stride(0) == 1  # the fast decoding layout survives loading
    small = Dalle(TINY.replace(layers=1))
    small.save_pretrained(tmp_path / "other")
    (tmp_path / "other" / "model.safetensors").replace(tmp_path / "dalle" / "model.safetensors")
    with pytest.raises(WeightsError, match="missing keys.*blocks.1"):
        Dalle.from_pretrained(tmp_path / "dalle")


def test_resize_text_embeddings_keeps_old_rows():
    model = make_model()
    old_embedding = model.tok_emb_txt.weight.detach().clone()
    old_head = model.head_txt.weight.detach().clone()
    model.resize_text_embeddings(TINY.text_vocab_size + 3)
    assert model.config.text_vocab_size == TINY.text_vocab_size + 3
    assert model.tok_emb_txt.weight.shape == (TINY.text_vocab_size + 3, TINY.width)
    assert model.head_txt.weight.dtype == torch.float64
    torch.testing.assert_close(model.tok_emb_txt.weight[: TINY.text_vocab_size], old_embedding)
    torch.testing.assert_close(model.head_txt.weight[: TINY.text_vocab_size], old_head)
    text = torch.full((1, TINY.text_len), TINY.text_vocab_size + 2)
    text_logits, _ = model(text, torch.zeros(1, TINY.image_len, dtype=torch.long))
    assert text_logits.shape[-1] == TINY.text_vocab_size + 3


def test_config_errors_name_the_field():
    with pytest.raises(ConfigError, match="heads"):
        DalleConfig(width=30, heads=4)
    with pytest.raises(ConfigError, match="pad_id"):
        DalleConfig(text_vocab_size=10, pad_id=10)
    assert set(PRESETS) >= {"tiny", "small", "bench", "1.3B"}
    assert PRESETS["1.3B"].mask_padding is False
    model = Dalle(TINY)
    with pytest.raises(ValueError, match="text_len"):
        model(torch.zeros(1, TINY.text_len + 1, dtype=torch.long), torch.zeros(1, 2, dtype=torch.long))


def test_mindalle_preset_has_the_release_size():
    with torch.device("meta"):  # shapes only, no memory
        model = Dalle(PRESETS["1.3B"])
    assert round(sum(p.numel() for p in model.parameters()) / 1e9, 2) == 1.29
    assert model.pos_emb_txt.weight.shape == (64, 1536) and model.blocks[41].mlp[0].weight.shape == (6144, 1536)
