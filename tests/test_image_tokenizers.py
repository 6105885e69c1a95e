"""Image tokenizers: VQGAN (minDALL-E stage-1 layout), vector quantizer, discrete VAE."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from storyviz.config import ConfigError
from storyviz.image_tokenizers import DVAE, VQGAN, DVAEConfig, VectorQuantizer, VQGANConfig
from storyviz.image_tokenizers.dvae import PRESETS as DVAE_PRESETS
from storyviz.image_tokenizers.vqgan import PRESETS as VQGAN_PRESETS
from storyviz.registry import load_model
from storyviz.weights import WeightsError, load_legacy_checkpoint, load_state_dict_strict

# a tiny configuration with every feature of the released one: 2 res blocks, nin_shortcuts, attention, 3 levels
TINY_MINDALLE = dict(
    resolution=16, ch=8, ch_mult=(1, 1, 2), num_res_blocks=2, attn_resolutions=(4,), z_channels=8, num_groups=4,
    n_embed=16, embed_dim=4,
)  # fmt: skip


def images(batch: int = 2, size: int = 16, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, size, size, generator=generator) * 2 - 1


def tiny_vqgan(**changes) -> VQGAN:
    torch.manual_seed(0)
    model = VQGAN(VQGAN_PRESETS["tiny"].replace(**changes))
    with torch.no_grad():  # a spread-out codebook so that several codes are in use
        model.quantize.embedding.weight.normal_()
    return model


# ---------------------------------------------------------------- the published key layout, from REFERENCE §3


def stage1_shapes(
    resolution, ch, ch_mult, num_res_blocks, attn_resolutions, z_channels, n_embed, embed_dim, **_
) -> dict[str, tuple[int, ...]]:
    """The taming VQModel state-dict keys and shapes, written from the published description."""
    shapes: dict[str, tuple[int, ...]] = {}

    def conv(name, cin, cout, k):
        shapes[f"{name}.weight"], shapes[f"{name}.bias"] = (cout, cin, k, k), (cout,)

    def norm(name, c):
        shapes[f"{name}.weight"], shapes[f"{name}.bias"] = (c,), (c,)

    def block(name, cin, cout):
        norm(f"{name}.norm1", cin), conv(f"{name}.conv1", cin, cout, 3)
        norm(f"{name}.norm2", cout), conv(f"{name}.conv2", cout, cout, 3)
        if cin != cout:
            conv(f"{name}.nin_shortcut", cin, cout, 1)

    def attn(name, c):
        norm(f"{name}.norm", c)
        for part in ("q", "k", "v", "proj_out"):
            conv(f"{name}.{part}", c, c, 1)

    levels = len(ch_mult)
    conv("encoder.conv_in", 3, ch, 3)
    cin, res = ch, resolution
    for i in range(levels):
        for j in range(num_res_blocks):
            block(f"encoder.down.{i}.block.{j}", cin, ch * ch_mult[i])
            cin = ch * ch_mult[i]
            if res in attn_resolutions:
                attn(f"encoder.down.{i}.attn.{j}", cin)
        if i < levels - 1:
            conv(f"encoder.down.{i}.downsample.conv", cin, cin, 3)
            res //= 2
    for part in ("encoder.mid", "decoder.mid"):
        block(f"{part}.block_1", cin, cin), attn(f"{part}.attn_1", cin), block(f"{part}.block_2", cin, cin)
    norm("encoder.norm_out", cin), conv("encoder.conv_out", cin, z_channels, 3)
    conv("decoder.conv_in", z_channels, cin, 3)
    for i in reversed(range(levels)):
        for j in range(num_res_blocks + 1):
            block(f"decoder.up.{i}.block.{j}", cin, ch * ch_mult[i])
            cin = ch * ch_mult[i]
            if res in attn_resolutions:
                attn(f"decoder.up.{i}.attn.{j}", cin)
        if i > 0:
            conv(f"decoder.up.{i}.upsample.conv", cin, cin, 3)
            res *= 2
    norm("decoder.norm_out", cin), conv("decoder.conv_out", cin, 3, 3)
    conv("quant_conv", z_channels, embed_dim, 1), conv("post_quant_conv", embed_dim, z_channels, 1)
    shapes["quantize.embedding.weight"] = (n_embed, embed_dim)
    return shapes


def reference_forward(state: dict[str, torch.Tensor], x: torch.Tensor, groups: int):
    """taming's VQModel forward written directly on a state dict: -> (codes (B, h, w), reconstruction)."""

    def conv(name, h, stride=1, padding=None):
        weight = state[f"{name}.weight"]
        padding = weight.shape[-1] // 2 if padding is None else padding
        return F.conv2d(h, weight, state[f"{name}.bias"], stride=stride, padding=padding)

    def norm(name, h):
        return F.group_norm(h, groups, state[f"{name}.weight"], state[f"{name}.bias"], eps=1e-6)

    def swish(h):
        return h * torch.sigmoid(h)

    def block(name, h):
        out = conv(
            f"{name}.conv2", swish(norm(f"{name}.norm2", conv(f"{name}.conv1", swish(norm(f"{name}.norm1", h)))))
        )
        return (conv(f"{name}.nin_shortcut", h) if f"{name}.nin_shortcut.weight" in state else h) + out

    def attn(name, h):
        b, c, height, width = h.shape
        hn = norm(f"{name}.norm", h)
        q = conv(f"{name}.q", hn).reshape(b, c, -1).permute(0, 2, 1)
        k = conv(f"{name}.k", hn).reshape(b, c, -1)
        v = conv(f"{name}.v", hn).reshape(b, c, -1)
        weights = torch.softmax(torch.bmm(q, k) * c**-0.5, dim=2)
        out = torch.bmm(v, weights.permute(0, 2, 1)).reshape(b, c, height, width)
        return h + conv(f"{name}.proj_out", out)

    def has(prefix):
        return any(key.startswith(prefix) for key in state)

    def mid(prefix, h):
        return block(f"{prefix}.block_2", attn(f"{prefix}.attn_1", block(f"{prefix}.block_1", h)))

    levels = 1 + max(int(key.split(".")[2]) for key in state if key.startswith("encoder.down."))
    h = conv("encoder.conv_in", x)
    for i in range(levels):
        j = 0
        while has(f"encoder.down.{i}.block.{j}."):
            h = block(f"encoder.down.{i}.block.{j}", h)
            h = attn(f"encoder.down.{i}.attn.{j}", h) if has(f"encoder.down.{i}.attn.{j}.") else h
            j += 1
        if has(f"encoder.down.{i}.downsample."):
            h = conv(f"encoder.down.{i}.downsample.conv", F.pad(h, (0, 1, 0, 1)), stride=2, padding=0)
    h = conv("encoder.conv_out", swish(norm("encoder.norm_out", mid("encoder.mid", h))))
    z = conv("quant_conv", h)
    b, d, height, width = z.shape
    flat = z.permute(0, 2, 3, 1).reshape(-1, d)
    codebook = state["quantize.embedding.weight"]
    codes = torch.cdist(flat, codebook).argmin(dim=1)
    zq = codebook[codes].reshape(b, height, width, d).permute(0, 3, 1, 2)
    h = mid("decoder.mid", conv("decoder.conv_in", conv("post_quant_conv", zq)))
    for i in reversed(range(levels)):
        j = 0
        while has(f"decoder.up.{i}.block.{j}."):
            h = block(f"decoder.up.{i}.block.{j}", h)
            h = attn(f"decoder.up.{i}.attn.{j}", h) if has(f"decoder.up.{i}.attn.{j}.") else h
            j += 1
        if has(f"decoder.up.{i}.upsample."):
            h = conv(f"decoder.up.{i}.upsample.conv", F.interpolate(h, scale_factor=2.0, mode="nearest"))
    return codes.reshape(b, height, width), conv("decoder.conv_out", swish(norm("decoder.norm_out", h)))


def test_full_mindalle_config_has_the_343_published_tensors():
    with torch.device("meta"):
        model = VQGAN(VQGAN_PRESETS["mindalle"])
    state = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    assert len(state) == 343
    assert state == stage1_shapes(**VQGAN_PRESETS["mindalle"].to_dict())
    listed = {  # the shapes REFERENCE §3 states explicitly
        "encoder.conv_out.weight": (256, 512, 3, 3),
        "decoder.conv_in.weight": (512, 256, 3, 3),
        "decoder.conv_out.weight": (3, 128, 3, 3),
        "quant_conv.weight": (256, 256, 1, 1),
        "post_quant_conv.weight": (256, 256, 1, 1),
        "quantize.embedding.weight": (16384, 256),
        "encoder.down.2.block.0.nin_shortcut.weight": (256, 128, 1, 1),
        "encoder.down.4.block.0.nin_shortcut.weight": (512, 256, 1, 1),
        "decoder.up.3.block.0.nin_shortcut.weight": (256, 512, 1, 1),
        "decoder.up.1.block.0.nin_shortcut.weight": (128, 256, 1, 1),
    }
    assert {key: state[key] for key in listed} == listed
    assert sorted(k for k in state if "nin_shortcut.weight" in k) == sorted(k for k in listed if "nin_shortcut" in k)
    assert {k.rsplit(".attn.", 1)[0] for k in state if ".attn." in k} == {"encoder.down.4", "decoder.up.4"}
    assert {k.split(".")[4] for k in state if k.startswith("decoder.up.4.attn.")} == {"0", "1", "2"}
    assert not any(k.startswith("encoder.down.4.downsample") or k.startswith("decoder.up.0.upsample") for k in state)


def test_published_layout_state_dict_loads_strictly_and_matches_reference(tmp_path):
    config = VQGANConfig(**TINY_MINDALLE)
    generator = torch.Generator().manual_seed(1)
    state = {}
    for key, shape in stage1_shapes(**TINY_MINDALLE).items():
        value = torch.randn(shape, generator=generator, dtype=torch.float64) * 0.3
        state[key] = value + 1 if key.endswith("norm1.weight") or key.endswith("norm2.weight") else value
    x = images(2, 16, seed=3).double()
    reference_codes, reference_images = reference_forward(state, x, groups=4)

    path = tmp_path / "stage1_last.ckpt"
    torch.save({"state_dict": state}, path)
    loaded = load_legacy_checkpoint(path)["state_dict"]
    model = VQGAN(config).double().eval()
    load_state_dict_strict(model, loaded, str(path))

    reconstruction, codes, _ = model(x)
    assert torch.equal(codes, reference_codes)
    assert len(codes.unique()) > 1
    torch.testing.assert_close(reconstruction, reference_images, rtol=1e-9, atol=1e-9)
    assert torch.equal(model.encode(x), reference_codes)
    torch.testing.assert_close(model.decode(reference_codes), reference_images.clamp(-1, 1), rtol=1e-9, atol=1e-9)

    del loaded["decoder.up.1.upsample.conv.bias"]
    with pytest.raises(WeightsError, match="decoder.up.1.upsample.conv.bias"):
        load_state_dict_strict(VQGAN(config), loaded, str(path))


# ---------------------------------------------------------------- VQGAN invariants


def test_vqgan_decode_encode_equals_eval_forward():
    model = tiny_vqgan().eval()
    x = images(3)
    reconstruction, codes, losses = model(x)
    assert codes.shape == (3, 8, 8) and codes.dtype == torch.int64
    assert model.grid_size() == 8 and model.codebook_size == 32
    assert int(codes.min()) >= 0 and int(codes.max()) < model.codebook_size
    assert len(codes.unique()) > 1
    assert torch.equal(model.encode(x), codes)
    torch.testing.assert_close(model.decode(codes), reconstruction.clamp(-1, 1), rtol=0, atol=1e-6)
    assert set(losses) == {"codebook", "commitment"}
    with pytest.raises(ValueError, match="codes"):
        model.decode(torch.full((1, 8, 8), 32))
    with pytest.raises(ValueError, match="multiples of 2"):
        model.encode(images(1, 15))


def test_vqgan_gradients_reach_encoder_and_decoder_through_the_quantizer():
    model = tiny_vqgan().train()
    reconstruction, _, losses = model(images(2))
    (reconstruction.abs().mean() + losses["commitment"] + losses["codebook"]).backward()
    for parameter in (model.encoder.conv_in.weight, model.quant_conv.weight, model.decoder.conv_out.weight):
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0
    assert model.quantize.embedding.weight.grad.abs().sum() > 0


def test_save_load_round_trip(tmp_path):
    model = tiny_vqgan(use_ema=True, dead_code_steps=5).eval()
    x = images(2)
    model.save_pretrained(tmp_path / "vqgan")
    loaded = load_model(tmp_path / "vqgan").eval()
    assert isinstance(loaded, VQGAN) and loaded.config == model.config
    assert torch.equal(loaded.encode(x), model.encode(x))
    assert torch.equal(loaded.quantize.embed_avg, model.quantize.embed_avg)
    torch.testing.assert_close(loaded(x)[0], model(x)[0], rtol=0, atol=0)

    dvae = DVAE(DVAE_PRESETS["tiny"]).eval()
    dvae.save_pretrained(tmp_path / "dvae")
    loaded = load_model(tmp_path / "dvae").eval()
    assert isinstance(loaded, DVAE)
    assert torch.equal(loaded.decode(loaded.encode(x)), dvae.decode(dvae.encode(x)))


def test_config_errors_name_the_field():
    with pytest.raises(ConfigError, match="num_groups"):
        VQGANConfig(ch=24, num_groups=32)
    with pytest.raises(ConfigError, match="resolution"):
        VQGANConfig(resolution=100)
    with pytest.raises(ConfigError, match="image_size"):
        DVAEConfig(image_size=100)


# ---------------------------------------------------------------- vector quantizer


def test_straight_through_gradient_is_the_identity():
    quantizer = VectorQuantizer(n_embed=8, embed_dim=3)
    z = torch.randn(2, 3, 4, 4, requires_grad=True)
    quantized, indices, _ = quantizer(z)
    assert torch.equal(quantized, quantizer.embedding.weight[indices].permute(0, 3, 1, 2))
    upstream = torch.randn_like(quantized)
    (quantized * upstream).sum().backward()
    assert torch.equal(z.grad, upstream)


def test_commitment_gradient_goes_to_the_encoder_scaled_by_beta():
    beta = 0.3
    torch.manual_seed(0)
    quantizer = VectorQuantizer(n_embed=4, embed_dim=2, beta=beta)
    with torch.no_grad():
        quantizer.embedding.weight.copy_(torch.tensor([[0.0, 0.0], [1.0, 1.0], [-1.0, 1.0], [1.0, -1.0]]))
    z = torch.randn(1, 2, 3, 3, requires_grad=True)
    _, indices, losses = quantizer(z)
    (losses["codebook"] + losses["commitment"]).backward()

    flat = z.detach().permute(0, 2, 3, 1).reshape(-1, 2)
    codes = quantizer.embedding.weight.detach()[indices.reshape(-1)]
    count = flat.numel()
    expected_z = (beta * 2 * (flat - codes) / count).reshape(1, 3, 3, 2).permute(0, 3, 1, 2)
    torch.testing.assert_close(z.grad, expected_z)  # only the commitment term, times beta
    expected_codebook = torch.zeros(4, 2).index_add_(0, indices.reshape(-1), 2 * (codes - flat) / count)
    torch.testing.assert_close(quantizer.embedding.weight.grad, expected_codebook)  # codebook term, unscaled
    torch.testing.assert_close(losses["commitment"], beta * (flat - codes).pow(2).mean())
    torch.testing.assert_close(losses["codebook"], (flat - codes).pow(2).mean())


@pytest.mark.parametrize("epsilon", [0.0, 0.1])
def test_ema_update_on_a_hand_computed_case(epsilon):
    quantizer = VectorQuantizer(n_embed=2, embed_dim=2, use_ema=True, ema_decay=0.5, ema_epsilon=epsilon)
    start = torch.tensor([[0.0, 0.0], [10.0, 10.0]])
    with torch.no_grad():
        quantizer.embedding.weight.copy_(start)
        quantizer.embed_avg.copy_(start)
    # three encoder outputs: (1, 0) and (0, 1) go to code 0, (9, 9) to code 1
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0], [9.0, 9.0]]).t().reshape(1, 2, 1, 3)
    quantizer.eval()
    quantizer(z)
    assert torch.equal(quantizer.embedding.weight, start)  # no update outside training
    quantized, indices, losses = quantizer.train()(z)
    assert indices.tolist() == [[[0, 0, 1]]]
    # cluster sizes 0.5 * 1 + 0.5 * [2, 1]; sums 0.5 * start + 0.5 * [[1, 1], [9, 9]]
    torch.testing.assert_close(quantizer.cluster_size, torch.tensor([1.5, 1.0]))
    torch.testing.assert_close(quantizer.embed_avg, torch.tensor([[0.5, 0.5], [9.5, 9.5]]))
    total = 2.5
    smoothed = torch.tensor(
        [(1.5 + epsilon) / (total + 2 * epsilon) * total, (1.0 + epsilon) / (total + 2 * epsilon) * total]
    )
    expected = torch.tensor([[0.5, 0.5], [9.5, 9.5]]) / smoothed[:, None]
    torch.testing.assert_close(quantizer.embedding.weight, expected)
    if epsilon == 0:
        torch.testing.assert_close(quantizer.embedding.weight, torch.tensor([[1 / 3, 1 / 3], [9.5, 9.5]]))
    torch.testing.assert_close(quantized[0, :, 0, 2], expected[1])  # the output uses the updated codebook
    assert float(losses["codebook"]) == 0.0 and not quantizer.embedding.weight.requires_grad


def test_dead_codes_are_restarted_from_encoder_outputs_only_in_training():
    quantizer = VectorQuantizer(n_embed=4, embed_dim=2, dead_code_steps=2)
    start = torch.tensor([[0.0, 0.0], [100.0, 100.0], [200.0, 200.0], [300.0, 300.0]])
    with torch.no_grad():
        quantizer.embedding.weight.copy_(start)
    z = torch.randn(1, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    outputs = z.permute(0, 2, 3, 1).reshape(-1, 2)
    quantizer.eval()
    for _ in range(3):
        quantizer(z)
    assert torch.equal(quantizer.embedding.weight, start)
    quantizer.train()
    quantizer(z)  # codes 1..3 unused for 1 step
    assert torch.equal(quantizer.embedding.weight, start)
    assert quantizer.steps_unused.tolist() == [0, 1, 1, 1]
    quantizer(z)  # ... for 2 steps: restarted
    weight = quantizer.embedding.weight.detach()
    assert torch.equal(weight[0], start[0])
    for code in (1, 2, 3):
        assert (weight[code] == outputs).all(dim=1).any(), f"code {code} is not one of the encoder outputs"
    assert quantizer.steps_unused.tolist() == [0, 0, 0, 0]
    _, indices, _ = quantizer(z)
    assert len(indices.unique()) > 1  # the restarted codes are used


def test_codebook_stats():
    model = tiny_vqgan()
    stats = model.codebook_stats(torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]))
    assert stats["usage"] == pytest.approx(4 / 32)
    assert stats["perplexity"] == pytest.approx(4.0)


# ---------------------------------------------------------------- discrete VAE


def test_dvae_shapes_and_decode_encode_equals_eval_forward():
    torch.manual_seed(0)
    model = DVAE(DVAE_PRESETS["tiny"]).eval()
    x = images(2)
    reconstruction, codes, losses = model(x)
    assert reconstruction.shape == x.shape and codes.shape == (2, 4, 4) and codes.dtype == torch.int64
    assert model.grid_size() == 4 and model.codebook_size == 64
    assert int(codes.min()) >= 0 and int(codes.max()) < 64
    assert torch.equal(model.encode(x), codes)
    torch.testing.assert_close(model.decode(codes), reconstruction.clamp(-1, 1), rtol=0, atol=1e-6)
    log_q = F.log_softmax(model.logits(x).double(), dim=1)
    expected_kl = (log_q.exp() * (log_q + torch.log(torch.tensor(64.0)))).sum(1).mean()
    torch.testing.assert_close(losses["kl"].double(), expected_kl, rtol=1e-5, atol=1e-6)
    assert losses["kl"].item() > 0


def test_dvae_kl_is_zero_for_a_uniform_posterior():
    model = DVAE(DVAE_PRESETS["tiny"])
    with torch.no_grad():
        model.encoder[-1].weight.zero_()
        model.encoder[-1].bias.zero_()
    _, _, losses = model(images(2))
    assert abs(losses["kl"].item()) < 1e-6


def test_dvae_soft_and_hard_paths_agree_at_low_temperature():
    torch.manual_seed(0)
    model = DVAE(DVAE_PRESETS["tiny"]).double()
    x = images(2).double()
    with torch.no_grad():
        codes = model.encode(x)
        hard = model.decode_codes(codes)
        soft = model.decode_soft(torch.softmax(model.logits(x) / 1e-8, dim=1))
        torch.testing.assert_close(soft, hard, rtol=0, atol=1e-6)
        soft_warm = model.decode_soft(torch.softmax(model.logits(x), dim=1))
        assert (soft_warm - hard).abs().max() > 1e-3  # at temperature 1 the paths differ
        model.encoder[-1].weight.mul_(1e4)  # logits far apart: Gumbel noise cannot change the argmax
        model.encoder[-1].bias.mul_(1e4)
        relaxed, relaxed_codes, _ = model.train()(x, temperature=0.05)
        model.eval()
        torch.testing.assert_close(relaxed, model.decode_codes(model.encode(x)), rtol=0, atol=1e-5)


def test_dvae_training_forward_sends_gradients_to_encoder_and_codebook():
    torch.manual_seed(0)
    model = DVAE(DVAE_PRESETS["tiny"]).train()
    reconstruction, _, losses = model(images(2), temperature=1.0)
    ((reconstruction - images(2)).pow(2).mean() + losses["kl"]).backward()
    assert model.encoder[0].weight.grad.abs().sum() > 0
    assert model.codebook.weight.grad.abs().sum() > 0
