"""The training tasks of the image tokenizers: losses, the GAN's gradient separation, data, a short run."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from storyviz.config import ConfigError
from storyviz.image_tokenizers import DVAE, VQGAN
from storyviz.image_tokenizers.discriminator import PatchDiscriminator, hinge_discriminator_loss
from storyviz.registry import load_model
from storyviz.training.task import task_class
from storyviz.training.tasks.tokenizers import (
    DVAETask,
    VQGANTask,
    VQGANTaskConfig,
    psnr,
    temperature_at,
)


def images(batch: int = 4, size: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def gan_task(**changes) -> tuple[VQGANTask, VQGAN, nn.ModuleDict]:
    config = VQGANTask.model_presets["tiny"].replace(disc_weight=0.5, **changes)
    task = VQGANTask(config, data="unused")
    torch.manual_seed(0)
    model = task.build_model().train()
    with torch.no_grad():
        model.quantize.embedding.weight.normal_()
    return task, model, nn.ModuleDict(task.build_extras())


def grads(module: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.grad.clone() for name, p in module.named_parameters() if p.grad is not None}


def test_registered_and_presets_match():
    assert task_class("vqgan") is VQGANTask and task_class("dvae") is DVAETask
    for task in (VQGANTask, DVAETask):
        assert set(task.model_presets) == set(task.train_presets)
    exported = VQGANTask(VQGANTask.model_presets["small"], "unused").build_model().config
    assert type(exported).__name__ == "VQGANConfig" and "l1_weight" not in exported.to_dict()


def test_temperature_schedule():
    assert temperature_at(0, 1.0, 1 / 16, 100) == 1.0
    assert temperature_at(50, 1.0, 1 / 16, 100) == pytest.approx(0.25)
    assert temperature_at(100, 1.0, 1 / 16, 100) == pytest.approx(1 / 16)
    assert temperature_at(1000, 1.0, 1 / 16, 100) == pytest.approx(1 / 16)
    assert temperature_at(7, 0.9, 0.9, 0) == 0.9
    task = DVAETask(DVAETask.model_presets["small"], "unused")
    assert task.kl_weight(0) == 0.0 and task.kl_weight(250) == pytest.approx(task.model_config.kl_weight / 2)


def test_psnr_on_a_hand_computed_case():
    x = images(2) * 0.5
    assert psnr(x + 0.2, x) == pytest.approx(20.0, abs=1e-3)  # error 0.1 on [0, 1] pixels: 10 log10(1 / 0.01)


def test_vqgan_generator_term_sends_no_gradient_into_the_discriminator():
    task, model, extras = gan_task()
    x = images()
    loss, logs = task.loss(model, x, step=0, extras=extras)
    assert {"psnr", "perplexity", "usage", "generator", "discriminator", "adaptive_weight"} <= set(logs)
    loss.backward()
    from_task = grads(extras)

    extras.zero_grad()
    reconstruction = model(x)[0].detach()
    discriminator = extras["discriminator"]
    hinge_discriminator_loss(discriminator(x), discriminator(reconstruction)).backward()
    alone = grads(extras)
    assert from_task.keys() == alone.keys() and from_task
    for name in alone:
        torch.testing.assert_close(from_task[name], alone[name], rtol=1e-5, atol=1e-7)


def test_vqgan_discriminator_term_sends_no_gradient_into_the_vqgan():
    task, model, extras = gan_task()
    x = images()
    loss, logs = task.loss(model, x, step=0, extras=extras)
    loss.backward()
    from_task = grads(model)

    model.zero_grad()
    reconstruction, _, vq = model(x)
    c = task.model_config
    rec = (reconstruction - x).abs().mean()
    discriminator = PatchDiscriminator(3, c.disc_channels, c.disc_layers)
    discriminator.load_state_dict(extras["discriminator"].state_dict())
    generator = -discriminator(reconstruction).mean()
    (rec + vq["codebook"] + vq["commitment"] + c.disc_weight * logs["adaptive_weight"] * generator).backward()
    for name, grad in grads(model).items():
        torch.testing.assert_close(from_task[name], grad, rtol=1e-4, atol=1e-7)


def test_adaptive_weight_is_the_ratio_of_gradient_norms_at_the_last_layer():
    task, model, extras = gan_task()
    x = images()
    _, logs = task.loss(model, x, step=0, extras=extras)
    reconstruction = model(x)[0]
    rec = (reconstruction - x).abs().mean()
    generator = -extras["discriminator"](reconstruction).mean()
    rec_grad = torch.autograd.grad(rec, model.decoder.conv_out.weight, retain_graph=True)[0]
    gen_grad = torch.autograd.grad(generator, model.decoder.conv_out.weight)[0]
    expected = float(rec_grad.norm() / (gen_grad.norm() + 1e-4))
    assert logs["adaptive_weight"] == pytest.approx(min(expected, 1e4), rel=1e-4)
    assert logs["adaptive_weight"] > 0


def test_gan_terms_start_at_disc_start():
    task, model, extras = gan_task(disc_start=5)
    loss, logs = task.loss(model, images(), step=4, extras=extras)
    loss.backward()
    assert "generator" not in logs and not grads(extras)
    _, logs = task.loss(model, images(), step=5, extras=extras)
    assert "generator" in logs
    assert VQGANTask(VQGANTaskConfig(), "unused").build_extras() == {}  # disc_weight 0: no discriminator


def test_dvae_task_loss_and_samples():
    task = DVAETask(DVAETask.model_presets["tiny"], data="unused")
    torch.manual_seed(0)
    model = task.build_model().train()
    x = images()
    loss, logs = task.loss(model, x, step=5, extras=nn.ModuleDict())
    assert math.isfinite(loss.item()) and logs["temperature"] == pytest.approx(task.temperature(5))
    assert logs["temperature"] < 1.0 and 0 < logs["usage"] <= 1
    loss.backward()
    assert model.encoder[0].weight.grad.abs().sum() > 0
    samples = task.sample_images(model, x)
    assert samples.shape == (1, 3, 32, 64) and samples.min() >= 0 and samples.max() <= 1
    torch.testing.assert_close(samples[0, :, :16, 16:32], (x[1] + 1) / 2)  # originals on top
    torch.testing.assert_close(samples[0, :, 16:, 16:32], (model.decode(model.encode(x[1:2]))[0] + 1) / 2)


def test_vqgan_sample_images_leave_the_codebook_alone():
    task, model, _ = gan_task(use_ema=True, dead_code_steps=1)
    model = VQGAN(model.config).train()
    before = model.state_dict()
    samples = task.sample_images(model, images())
    assert samples.shape == (1, 3, 32, 64) and model.training
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    expected = (model.eval().decode(model.encode(images())) + 1) / 2
    torch.testing.assert_close(samples[0, :, 16:, 48:], expected[3])


# ---------------------------------------------------------------- with real data


@pytest.fixture(scope="module")
def digits16(tmp_path_factory):
    build = pytest.importorskip("storyviz.data.build")
    path = tmp_path_factory.mktemp("data") / "digits16"
    build.build("digits", path, count=20, size=16, seed=0)
    return path


def test_tasks_read_frames_as_images(digits16):
    task = VQGANTask(VQGANTask.model_presets["tiny"], str(digits16))
    dataset = task.dataset("train")
    batch = task.collate([dataset[i] for i in range(3)])
    assert batch.shape == (3, 3, 16, 16) and batch.dtype == torch.float32
    assert -1 <= float(batch.min()) < float(batch.max()) <= 1
    with pytest.raises(ConfigError, match="resolution=16"):
        VQGANTask(VQGANTask.model_presets["small"], str(digits16)).dataset("train")


@pytest.mark.parametrize("name", ["vqgan", "dvae"])
def test_a_short_training_run_exports_a_working_tokenizer(digits16, tmp_path, name):
    loop = pytest.importorskip("storyviz.training.loop")
    task = task_class(name)
    model_config = task.model_presets["tiny"]
    if name == "vqgan":
        model_config = model_config.replace(disc_weight=0.5, disc_start=2, use_ema=True, dead_code_steps=2)
    train_config = task.train_presets["tiny"].replace(steps=4, log_every=1)
    out = loop.train(name, model_config, train_config, str(digits16), tmp_path / "run")
    model = load_model(out).eval()
    assert isinstance(model, VQGAN if name == "vqgan" else DVAE)
    assert type(model.config).__name__ in ("VQGANConfig", "DVAEConfig")
    x = task(model_config, str(digits16)).collate([task(model_config, str(digits16)).dataset("val")[0]])
    assert model.decode(model.encode(x)).shape == x.shape
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 4 and '"psnr"' in lines[-1] and '"perplexity"' in lines[-1]


def test_decoder_only_training_keeps_the_codes_and_refines_the_decoder(digits16, tmp_path):
    loop = pytest.importorskip("storyviz.training.loop")
    model_config = VQGANTask.model_presets["tiny"].replace(use_ema=True, dead_code_steps=1)
    train_config = VQGANTask.train_presets["tiny"].replace(steps=3)
    first = loop.train("vqgan", model_config, train_config, str(digits16), tmp_path / "first")
    refined = loop.train(
        "vqgan",
        model_config.replace(decoder_only=True, disc_weight=0.5),
        train_config.replace(init_from=str(first)),
        str(digits16),
        tmp_path / "refined",
    )
    before, after = load_model(first).eval(), load_model(refined).eval()
    changed = {key for key, value in after.state_dict().items() if not torch.equal(value, before.state_dict()[key])}
    assert changed and all(key.startswith(("decoder.", "post_quant_conv.")) for key in changed), sorted(changed)
    x = images(3, 16, seed=1)
    assert torch.equal(after.encode(x), before.encode(x))
    assert not torch.equal(after.decode(after.encode(x)), before.decode(before.encode(x)))
