"""The DALL-E training task ("dalle"): the stage-2 transformer on pre-computed image codes, one frame at a time.

    storyviz data tokenize --tokenizer runs/vqgan/model --data data/digits --out data/digits-codes
    storyviz train dalle --preset small --data data/digits --out runs/dalle --set codes=data/digits-codes

Each item is one frame: text = its caption's BPE tokens (T,), image = its codes (N,) from the codes folder.
loss = CE(image tokens) + text_loss_weight * CE(text tokens), [PAD] targets ignored. With probability
`caption_dropout` a caption is replaced by all-[PAD] so that classifier-free guidance (the sampling engine's
empty-caption branch) has a trained unconditional model.

The BPE text tokenizer is trained at start on the training captions, with the data set's character names added
as whole tokens, and kept in the codes folder (`text_tokenizers/<hash>/`: the loop does not hand tasks the run
folder), so a resumed run reads the very same tokenizer. The transformer's `text_vocab_size`, `pad_id`,
`image_vocab_size` and `image_len` are set from the tokenizer and the codes. `export` writes a DALL-E bundle
(transformer + tokenizer + a copy of the image tokenizer), so `run_dir/model` loads with `load_pipeline`.

Measured on the shared 2-core machine: a training step of 32 frames (40 text + 64 image tokens, forward +
backward + AdamW) of the "small" preset (4 layers, width 256, 3.2 M parameters besides embeddings and heads)
takes 1.45 s on one thread (6 layers: 3.0 s), and 3.3 s through `storyviz train` while the load average was ~6
from other jobs. Its 2,400 steps (7.7 epochs of the 10,000 digits) take ~1 h on a quiet machine, ~2 h under that
load.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from storyviz.config import Config, ConfigError
from storyviz.convert.bundle import DALLE_BUNDLE, write_bundle
from storyviz.data import open_dataset
from storyviz.data.codes import check_codes_match, open_codes
from storyviz.models.dalle import PRESETS as DALLE_PRESETS
from storyviz.models.dalle import Dalle, DalleConfig
from storyviz.registry import load_model
from storyviz.sampling import Engine, SamplingConfig
from storyviz.text import TextTokenizer
from storyviz.training.task import Task, TrainConfig
from storyviz.weights import WeightsError, read_weights_config


@dataclasses.dataclass(frozen=True)
class DalleTaskConfig(Config):
    """The transformer (`model`) plus where its data comes from and the loss settings."""

    model: DalleConfig = DalleConfig()
    codes: str = ""  # folder from `storyviz data tokenize` (required)
    image_tokenizer: str = ""  # image tokenizer folder for sampling and export; "" = the one recorded in the codes
    text_loss_weight: float = 0.1
    caption_dropout: float = 0.1  # replace the caption by all-[PAD] (guidance's unconditional branch)
    captions: Literal["plain", "pronoun", "both"] = "plain"
    vocab_size: int = 1024  # BPE vocabulary trained on the training captions (before character names are added)

    def __post_init__(self):
        if not 0 <= self.caption_dropout < 1:
            raise ConfigError(
                f"DalleTaskConfig.caption_dropout: expected a value in [0, 1), got {self.caption_dropout}"
            )
        if self.text_loss_weight < 0:
            raise ConfigError(f"DalleTaskConfig.text_loss_weight: expected >= 0, got {self.text_loss_weight}")


class FrameTokens(Dataset):
    """Single frames as tokens: item -> {"text": int64 (T,), "image": int64 (N,)}.

    text (F, T) holds every frame's caption tokens (F = stories * L, or twice that with both caption versions,
    plain first); codes (stories, L, N) the image codes."""

    def __init__(self, text: torch.Tensor, codes: np.ndarray):
        self.text = text
        self.codes = torch.from_numpy(codes.reshape(-1, codes.shape[-1]))

    def __len__(self) -> int:
        return self.text.shape[0]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"text": self.text[index], "image": self.codes[index % self.codes.shape[0]]}


def split_captions(split, version: str) -> list[str]:
    """Every frame's caption of a split, story-major; version "plain", "pronoun" or "both" (plain, then pronoun)."""
    if version != "plain" and not split.has_pronouns:
        raise ConfigError(f"{split.path}: captions={version!r}, but the data set has no pronoun captions")
    tables = {"plain": [False], "pronoun": [True], "both": [False, True]}[version]
    return [caption for pronoun in tables for story in split.caption_table(pronoun) for caption in story]


def caption_tokenizer(data_set, codes, vocab_size: int, length: int) -> TextTokenizer:
    """The BPE trained on a data set's training captions (both versions), with character names as whole tokens.

    The `tokenizers` trainer numbers tokens in hash order, so two trainings on the same captions differ; the
    first one is therefore kept in the codes folder (text_tokenizers/<hash of captions and settings>/) and
    every later run with the same data and settings (a resume, in particular) reads it from there."""
    train = data_set.split("train")
    captions = sorted(split_captions(train, "both" if train.has_pronouns else "plain"))
    names = data_set.meta.get("labels", {}).get("characters", {}).get("classes", [])
    names = [name for name in names if name.strip() and " " not in name.strip()]
    key = json.dumps({"captions": captions, "names": names, "vocab_size": vocab_size, "length": length})
    cache = codes.path / "text_tokenizers" / hashlib.sha256(key.encode()).hexdigest()[:16]
    if (cache / "tokenizer.json").is_file():
        return TextTokenizer.from_pretrained(cache)
    tokenizer = TextTokenizer.train(captions, vocab_size, length=length)
    if names:
        tokenizer.add_tokens(names)
    try:
        tokenizer.save_pretrained(cache)
    except OSError as error:
        warnings.warn(
            f"{cache}: cannot keep the text tokenizer ({error}); a resumed run would train another", stacklevel=2
        )
    return tokenizer


class DalleTask(Task):
    name = "dalle"
    model_presets = {
        "tiny": DalleTaskConfig(model=DALLE_PRESETS["tiny"], vocab_size=64, text_loss_weight=0.1),
        "small": DalleTaskConfig(
            model=DalleConfig(
                text_vocab_size=512,
                image_vocab_size=512,
                text_len=40,
                image_len=64,
                width=256,
                layers=4,
                heads=8,
                embed_dropout=0.1,
                attention_dropout=0.0,
                residual_dropout=0.1,
            ),
            vocab_size=512,
        ),
    }
    train_presets = {
        "tiny": TrainConfig(steps=4, batch_size=4, lr=3e-3, warmup_steps=1, log_every=2, checkpoint_every=0),
        "small": TrainConfig(
            steps=2400, batch_size=32, lr=1e-3, warmup_steps=100, weight_decay=0.01, log_every=50, checkpoint_every=300
        ),
    }

    def __init__(self, model_config: DalleTaskConfig, data: str):
        super().__init__(model_config, data)
        config = self.model_config
        if not config.codes:
            raise ConfigError("dalle task: no codes folder; pass --set codes=DIR (from `storyviz data tokenize`)")
        self.data_set = open_dataset(data)
        self.codes = open_codes(config.codes)
        check_codes_match(self.codes, self.data_set)
        self.image_tokenizer_dir = Path(config.image_tokenizer or self.codes.meta["tokenizer"]["path"])
        self.check_image_tokenizer()
        self._image_tokenizer: nn.Module | None = None
        self.tokenizer = self.build_tokenizer()

    def check_image_tokenizer(self) -> None:
        """The image tokenizer folder must be the kind and configuration that computed the codes."""
        recorded = self.codes.meta["tokenizer"]
        try:
            found = read_weights_config(self.image_tokenizer_dir)
        except WeightsError as error:
            raise ConfigError(f"dalle task: image tokenizer: {error} (set image_tokenizer=DIR)") from None
        if found["model_type"] != recorded["model_type"] or found["config"] != recorded["config"]:
            raise ConfigError(
                f"dalle task: the image tokenizer {self.image_tokenizer_dir} is not the {recorded['model_type']} "
                f"that computed the codes {self.codes.path} ({recorded['path']})"
            )

    def build_tokenizer(self) -> TextTokenizer:
        return caption_tokenizer(
            self.data_set, self.codes, self.model_config.vocab_size, self.model_config.model.text_len
        )

    def transformer_config(self) -> DalleConfig:
        """The preset's transformer with the vocabularies and lengths of this tokenizer and these codes."""
        return self.model_config.model.replace(
            text_vocab_size=self.tokenizer.vocab_size,
            pad_id=self.tokenizer.pad_id,
            image_vocab_size=self.codes.codebook_size,
            image_len=self.codes.image_len,
        )

    def build_model(self) -> Dalle:
        return Dalle(self.transformer_config())

    def dataset(self, split: str) -> FrameTokens:
        stories = self.data_set.split(split)
        text = self.tokenizer.encode(split_captions(stories, self.model_config.captions)).ids
        return FrameTokens(text, self.codes.split(split).array())

    def loss(self, model: Dalle, batch: dict, step: int, extras: nn.ModuleDict) -> tuple[torch.Tensor, dict]:
        text, image = batch["text"], batch["image"]
        pad = model.config.pad_id
        if model.training and self.model_config.caption_dropout > 0:
            drop = torch.rand(text.shape[0], device=text.device) < self.model_config.caption_dropout
            text = torch.where(drop[:, None], torch.full_like(text, pad), text)
        text_logits, image_logits = model(text, image)
        image_loss = F.cross_entropy(image_logits.float().flatten(0, 1), image.flatten())
        targets = text[:, 1:].flatten()
        per_token = F.cross_entropy(text_logits.float().flatten(0, 1), targets, reduction="none")
        real = (targets != pad).float()
        text_loss = (per_token * real).sum() / real.sum().clamp_min(1.0)
        loss = image_loss + self.model_config.text_loss_weight * text_loss
        accuracy = (image_logits.argmax(-1) == image).float().mean()
        return loss, {"image_loss": image_loss.item(), "text_loss": text_loss.item(), "image_accuracy": accuracy.item()}

    def image_tokenizer(self) -> nn.Module:
        if self._image_tokenizer is None:
            self._image_tokenizer = load_model(self.image_tokenizer_dir).eval()
        return self._image_tokenizer

    def export(self, model: nn.Module, directory: Path, extra: dict[str, Any]) -> None:
        """Writes a DALL-E bundle: transformer, text tokenizer and a copy of the image tokenizer folder."""
        parts = {"transformer": model, "tokenizer": self.tokenizer, "image_tokenizer": self.image_tokenizer_dir}
        extra = {**extra, "source": "storyviz train dalle", "data": self.data, "codes": self.model_config.codes}
        write_bundle(directory, DALLE_BUNDLE, parts, extra)

    def sample_images(self, model: Dalle, batch: dict) -> torch.Tensor:
        """Greedy samples for the first 4 captions of the batch over their real images, (8, 3, H, W) in [0, 1]."""
        text, image = batch["text"][:4], batch["image"][:4]
        was_training = model.training
        model.eval()
        tokens = Engine(model).generate(text, SamplingConfig(top_k=1)).tokens[:, 0]
        model.train(was_training)
        side = self.codes.grid
        tokenizer = self.image_tokenizer()
        with torch.no_grad():
            images = tokenizer.decode(torch.cat([tokens, image]).reshape(-1, *side).cpu())
        return (images + 1) / 2
