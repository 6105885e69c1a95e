"""The DALL-E training task: tokenizer, data, loss, a short real run exported as a bundle, resume."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from storyviz.config import ConfigError
from storyviz.convert.bundle import DalleBundle, read_bundle_config
from storyviz.data.build import build
from storyviz.data.codes import CodesError, tokenize_dataset
from storyviz.image_tokenizers.vqgan import PRESETS as VQGAN_PRESETS
from storyviz.image_tokenizers.vqgan import VQGAN
from storyviz.pipelines.base import load_pipeline
from storyviz.training.loop import train
from storyviz.training.task import task_class
from storyviz.training.tasks.dalle import DalleTask


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    root = tmp_path_factory.mktemp("dalle-task")
    build("digits", root / "digits", 24, size=16, seed=0)
    torch.manual_seed(0)
    VQGAN(VQGAN_PRESETS["tiny"]).save_pretrained(root / "vqgan")
    tokenize_dataset(root / "vqgan", root / "digits", root / "codes")
    return root


@pytest.fixture(scope="module")
def sprites(tmp_path_factory):
    root = tmp_path_factory.mktemp("dalle-sprites")
    build("sprites", root / "sprites", 6, size=32, seed=0)
    torch.manual_seed(0)
    config = VQGAN_PRESETS["tiny"].replace(resolution=32, ch_mult=(1, 2, 2), attn_resolutions=(8,))
    VQGAN(config).save_pretrained(root / "vqgan")
    tokenize_dataset(root / "vqgan", root / "sprites", root / "codes")
    return root


def tiny(root, **changes):
    return DalleTask.model_presets["tiny"].replace(codes=str(root / "codes"), **changes)


def test_task_is_registered_and_needs_codes(digits):
    assert task_class("dalle") is DalleTask
    with pytest.raises(ConfigError, match="no codes folder"):
        DalleTask(DalleTask.model_presets["tiny"], str(digits / "digits"))


def test_data_and_model_follow_the_codes_and_tokenizer(digits):
    task = DalleTask(tiny(digits), str(digits / "digits"))
    model = task.build_model()
    assert model.config.image_len == 64 and model.config.image_vocab_size == 32
    assert model.config.text_vocab_size == task.tokenizer.vocab_size and model.config.pad_id == task.tokenizer.pad_id
    items = task.dataset("val")
    assert len(items) == 20
    item = items[3]
    assert item["text"].shape == (model.config.text_len,) and item["image"].shape == (64,)
    assert torch.equal(item["image"], torch.from_numpy(task.codes.split("val")[3][0]))
    caption = task.data_set.split("val").captions(3)[0]
    assert torch.equal(item["text"], task.tokenizer.encode(caption).ids[0])
    # the BPE is deterministic: a second task (a resumed run) builds the same vocabulary
    again = DalleTask(tiny(digits), str(digits / "digits"))
    assert again.tokenizer.tokenizer.to_str() == task.tokenizer.tokenizer.to_str()


def test_sprites_names_become_tokens_and_both_caption_versions_are_read(sprites):
    task = DalleTask(tiny(sprites, captions="both", vocab_size=200), str(sprites / "sprites"))
    names = task.data_set.meta["labels"]["characters"]["classes"]
    for name in names:  # each name is one whole token (a new one, or an existing whole-word token)
        ids = task.tokenizer.encode(name).ids[0]
        assert (ids != task.tokenizer.pad_id).sum() == 1, name
    items = task.dataset("train")
    frames = 6 * 5
    assert len(items) == 2 * frames
    assert torch.equal(items[1]["image"], items[frames + 1]["image"])  # plain and pronoun caption, same frame
    stories = task.data_set.split("train")
    assert torch.equal(items[frames + 1]["text"], task.tokenizer.encode(stories[0]["captions_pronoun"][1]).ids[0])


def test_loss_ignores_padding_and_survives_caption_dropout(digits):
    task = DalleTask(tiny(digits, caption_dropout=0.0, text_loss_weight=0.5), str(digits / "digits"))
    torch.manual_seed(0)
    model = task.build_model().train()
    batch = task.collate([task.dataset("train")[i] for i in range(4)])
    loss, numbers = task.loss(model, batch, 0, torch.nn.ModuleDict())
    text_logits, image_logits = model(batch["text"], batch["image"])
    targets = batch["text"][:, 1:]
    real = targets != model.config.pad_id
    text_loss = F.cross_entropy(text_logits[real], targets[real])
    image_loss = F.cross_entropy(image_logits.flatten(0, 1), batch["image"].flatten())
    assert torch.allclose(loss, image_loss + 0.5 * text_loss, atol=1e-5)
    assert numbers["text_loss"] == pytest.approx(text_loss.item(), rel=1e-4)

    dropped = DalleTask(tiny(digits, caption_dropout=0.999), str(digits / "digits"))
    loss, numbers = dropped.loss(model, batch, 0, torch.nn.ModuleDict())
    assert torch.isfinite(loss) and numbers["text_loss"] == 0.0  # every caption became all-[PAD]
    loss.backward()


def test_short_run_exports_a_bundle_and_resumes(digits, tmp_path):
    train_config = DalleTask.train_presets["tiny"].replace(steps=3, checkpoint_every=3, sample_every=3)
    out = train("dalle", tiny(digits), train_config, str(digits / "digits"), tmp_path / "run", preset="tiny")
    info = read_bundle_config(out, "dalle-bundle")
    assert sorted(info["config"]["parts"]) == ["image_tokenizer", "tokenizer", "transformer"]
    assert info["training_step"] == 3 and info["codes"] == str(digits / "codes")
    bundle = DalleBundle.from_pretrained(out)
    assert isinstance(bundle.image_tokenizer, VQGAN)
    assert bundle.transformer.config.text_vocab_size == bundle.tokenizer.vocab_size
    pipeline = load_pipeline(out)
    assert pipeline.image_size == 16 and pipeline.text_length == bundle.transformer.config.text_len

    out = train("dalle", tiny(digits), train_config.replace(steps=5), str(digits / "digits"), tmp_path / "run",
                resume=True)  # fmt: skip
    assert json.loads((out / "config.json").read_text())["training_step"] == 5

    # a new run continues from the bundle (train.init_from takes its transformer): at lr 0 it keeps the weights
    again = train("dalle", tiny(digits), train_config.replace(steps=1, lr=0.0, sample_every=0, init_from=str(out)),
                  str(digits / "digits"), tmp_path / "again")  # fmt: skip
    before, after = DalleBundle.from_pretrained(out).transformer, DalleBundle.from_pretrained(again).transformer
    assert all(torch.equal(a, b) for a, b in zip(before.state_dict().values(), after.state_dict().values()))


def test_codes_of_another_data_set_or_tokenizer_are_refused(digits, tmp_path):
    build("digits", tmp_path / "other", 10, size=16, seed=3)
    with pytest.raises(CodesError, match="do not belong to the data set"):
        DalleTask(tiny(digits), str(tmp_path / "other"))
    VQGAN(VQGAN_PRESETS["tiny"].replace(n_embed=16)).save_pretrained(tmp_path / "vqgan16")
    with pytest.raises(ConfigError, match="is not the vqgan that computed the codes"):
        DalleTask(tiny(digits, image_tokenizer=str(tmp_path / "vqgan16")), str(digits / "digits"))
    with pytest.raises(ConfigError, match="image tokenizer: .*model folder not found"):
        DalleTask(tiny(digits, image_tokenizer=str(tmp_path / "nothing")), str(digits / "digits"))
