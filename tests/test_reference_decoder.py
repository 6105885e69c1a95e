"""A VQGAN whose decoder reads a reference frame: the blocks, look twins, its training from a trained tokenizer,
and the reconstructions the evaluation makes with it."""

import numpy as np
import pytest
import torch

from storyviz.config import ConfigError
from storyviz.data import open_dataset
from storyviz.data.build import build
from storyviz.data.sprites.draw import draw_frame
from storyviz.data.sprites.twins import look_twin
from storyviz.evaluation.run import _reconstruct, reconstructions
from storyviz.image_tokenizers.vqgan import VQGAN
from storyviz.registry import load_model
from storyviz.training.loop import train
from storyviz.training.tasks.tokenizers import VQGANTask, VQGANTaskConfig, repair_loss
from tiny_models import TINY_VQGAN, with_random_outputs

REFERENCE = TINY_VQGAN.replace(reference_resolutions=(8, 16))  # 32 px: decoder levels at 4, 8, 16 and 32 px


def images(batch: int, seed: int) -> torch.Tensor:
    return torch.rand(batch, 3, 32, 32, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.fixture(scope="module")
def sprites32(tmp_path_factory):
    root = tmp_path_factory.mktemp("reference")
    build("sprites", root / "data", 6, size=32, seed=0)
    torch.manual_seed(0)
    VQGAN(TINY_VQGAN).save_pretrained(root / "vqgan")
    return root


def test_reference_blocks_start_as_the_plain_decoder_and_train_only_their_own_side():
    torch.manual_seed(0)
    model = VQGAN(REFERENCE).eval()
    x, reference = images(2, 0), images(2, 1)
    codes = model.encode(x)
    assert model.reads_reference and not VQGAN(TINY_VQGAN).reads_reference
    assert torch.equal(model.decode(codes, reference), model.decode(codes))
    with_random_outputs(model)
    assert not torch.allclose(model.decode(codes, reference), model.decode(codes))
    assert not torch.allclose(model.decode(codes, reference), model.decode(codes, images(2, 2)))
    latents, features = model.quantize.lookup(codes), model.reference_features(reference)
    kept = model.decode_latents(latents, features, keep=torch.tensor([0.0, 1.0]))  # row 0 as without reference
    assert torch.allclose(kept[0], model.decode_latents(latents)[0], atol=1e-6)
    assert torch.allclose(kept[1], model.decode_latents(latents, features)[1], atol=1e-6)
    model.decode_latents(latents, features).sum().backward()
    grads = {name for name, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert any(name.startswith("reference.") for name in grads)
    assert any(".reference." in name for name in grads)
    assert not any(name.startswith(("encoder.", "quant_conv.")) for name in grads)  # the codes stay
    with pytest.raises(ValueError, match="3 frames for 2"):
        model.decode(codes, images(3, 0))
    with pytest.raises(ConfigError, match=r"\[12\] is not a decoder resolution"):
        TINY_VQGAN.replace(reference_resolutions=(12,))


def test_look_twins_change_only_characters_that_the_source_shows(sprites32):
    story = open_dataset(sprites32 / "data").split("train")[0]
    frames, annotation = story["frames"], story["annotation"]
    rng = np.random.default_rng(0)
    assert look_twin(annotation[1], annotation[0], 32, 0.0, rng) is None
    assert look_twin(annotation[1], {"characters": []}, 32, 1.0, rng) is None
    first = annotation[0]
    assert first["characters"], "story 0 starts with nobody"
    twin = look_twin(first, first, 32, 1.0, rng)
    redrawn = draw_frame(32, first["setting"], first["background_variant"], first["characters"])
    assert np.array_equal(redrawn, frames[0]) and not np.array_equal(twin, frames[0])


def test_training_a_reference_decoder_from_a_trained_tokenizer(sprites32, tmp_path):
    data, start = str(sprites32 / "data"), sprites32 / "vqgan"
    config = VQGANTaskConfig.from_dict({**REFERENCE.to_dict(), "decoder_only": True, "look_swap": 1.0})
    task = VQGANTask(config.replace(reference_drop=0.0), data)
    batch = task.collate([task.dataset("train")[i] for i in range(3)])
    assert sorted(batch) == ["images", "input", "keep", "reference"] and batch["images"].shape == (3, 3, 32, 32)
    assert not torch.equal(batch["input"], batch["images"])  # look twins of frames 2.. of the first story
    assert batch["keep"].tolist() == [1.0, 1.0, 1.0]
    repairing = VQGANTask(config.replace(reference_drop=0.0, repair_weight=1.0), data)
    _, logs = repairing.loss(repairing.build_model(), batch, 0, torch.nn.ModuleDict())
    assert logs["repair"] > 0
    task = VQGANTask(config.replace(reference_drop=1.0), data)  # without the reference: only the frame's own codes
    batch = task.collate([task.dataset("train")[i] for i in range(3)])
    assert torch.equal(batch["input"], batch["images"]) and batch["keep"].tolist() == [0.0, 0.0, 0.0]
    train_config = VQGANTask.train_presets["tiny"].replace(steps=3, init_from=str(start))
    out = train("vqgan", config, train_config, data, tmp_path / "run")
    before, after = load_model(start).eval(), load_model(out).eval()
    assert after.config.reference_resolutions == (8, 16)
    x = images(2, 3)
    assert torch.equal(after.encode(x), before.encode(x))
    kept = before.state_dict()
    changed = {key for key, value in after.state_dict().items() if key not in kept or not torch.equal(value, kept[key])}
    assert all(key.startswith(("decoder.", "post_quant_conv.", "reference.")) for key in changed), sorted(changed)
    assert any("reference" in key for key in changed)

    with pytest.raises(ConfigError, match="decoder_only=true"):
        VQGANTask(config.replace(decoder_only=False), data)
    with pytest.raises(ConfigError, match=r"repair_weight=1.0: .*look_swap > 0"):
        VQGANTask(config.replace(look_swap=0.0, repair_weight=1.0), data)
    with pytest.raises(ConfigError, match=r"fields \['ch'"):
        train("vqgan", config.replace(ch=16), train_config, data, tmp_path / "other")


def test_the_repair_loss_weighs_only_the_pixels_that_a_twin_changed_and_their_outline():
    target = torch.zeros(1, 3, 8, 8)
    twin = target.clone()
    twin[0, :, 3, 3] = 1.0  # one pixel changed: with its outline, 9 pixels count
    far, near = target.clone(), target.clone()
    far[0, :, 7, 7] = 0.5
    near[0, :, 3, 4] = 0.9
    assert repair_loss(far, target, twin).item() == 0
    assert repair_loss(near, target, twin).item() == pytest.approx(0.9 / 9)
    assert repair_loss(near, target, target).item() == 0  # no twin: nothing to repair


def test_reconstructions_read_each_story_s_first_frame(sprites32):
    model = with_random_outputs(VQGAN(REFERENCE))
    model.save_pretrained(sprites32 / "reference")
    frames = open_dataset(sprites32 / "data").split("test")[0]["frames"]
    reconstruct = reconstructions(sprites32 / "reference")
    plain = reconstruct(frames, [None] * len(frames))
    read = reconstruct(frames, [None, *[frames[0]] * (len(frames) - 1)])
    assert np.array_equal(plain[0], read[0]) and not np.array_equal(plain[1:], read[1:])
    # `storyviz evaluate --model TOKENIZER` reconstructs story by story: frame 0 is the reference
    assert np.array_equal(_reconstruct(load_model(sprites32 / "reference").eval(), frames), read)


def test_a_reference_encoder_starts_as_the_tokenizer_s_encoder_and_trains_alone(sprites32, tmp_path):
    data, start = str(sprites32 / "data"), sprites32 / "vqgan"
    config = VQGANTaskConfig.from_dict({**REFERENCE.to_dict(), "decoder_only": True, "reference_encoder": True})
    train_config = VQGANTask.train_presets["tiny"].replace(steps=3, init_from=str(start))
    task = VQGANTask(config, data)
    model = task.build_model()
    trained = {id(p) for p in task.trainable_parameters(model, torch.nn.ModuleDict())}
    assert all(id(p) in trained for p in model.reference_encoder.parameters())
    assert not any(id(p) in trained for p in model.encoder.parameters())
    out = train("vqgan", config, train_config, data, tmp_path / "run")
    before, after = load_model(start).eval(), load_model(out).eval()
    x = images(2, 4)
    assert torch.equal(after.encode(x), before.encode(x))  # the codes stay
    encoder = before.encoder.state_dict()
    gaps = {
        name: (value - encoder[name]).abs().max().item() for name, value in after.reference_encoder.state_dict().items()
    }
    # it started as the encoder (3 steps at lr 1e-3 move a weight by at most about 3e-3), then trained
    assert max(gaps.values()) < 0.01 and any(gap > 0 for gap in gaps.values())
    after.reference_features(x).sum().backward()
    assert any(p.grad is not None for p in after.reference_encoder.parameters())
    with pytest.raises(ConfigError, match="reference_encoder: needs reference_resolutions"):
        TINY_VQGAN.replace(reference_encoder=True)


def test_a_reference_encoder_starts_from_the_loaded_encoder():
    torch.manual_seed(0)
    plain, model = VQGAN(TINY_VQGAN), VQGAN(REFERENCE.replace(reference_encoder=True))
    loaded = plain.state_dict()
    new = {key: value for key, value in model.state_dict().items() if key not in loaded}
    started = model.start_added(new, loaded)
    assert started.keys() == new.keys()
    for key, value in started.items():
        if key.startswith("reference_encoder."):
            assert torch.equal(value, loaded["encoder." + key[len("reference_encoder.") :]])
        else:
            assert value is new[key]
