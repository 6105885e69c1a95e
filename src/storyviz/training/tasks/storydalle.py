"""Training StoryDALL-E ("storydalle"): adapt a pretrained DALL-E bundle to stories, or train from scratch.

One item is one story: the text tokens, image codes and MiniLM sentence embeddings of its L frames (plain and
pronoun captions; one version is drawn per story and step when `captions` is "both"). All L frames of a story are
rows of one batch: frame 1 without a source frame (the first frame of story visualization, when
`visualization_rows`), frames 2..L with frame 1 as the source (story continuation).

Loss (release): CE over image tokens + `text_loss_weight` x CE over text tokens, [PAD] ignored. Captions are
dropped (all-[PAD] text) with probability `caption_dropout`, which trains the unconditional branch of
classifier-free guidance. Optionally + `story_code_loss_weight` x an auxiliary loss on the story tokens: a linear
head trained alongside (not exported) predicts from each frame's story token which image codes that frame holds
(binary cross-entropy over the codebook). The image loss alone teaches the story encoder little: with teacher
forcing a frame's first tokens give its setting away, and a probe of the story tokens finds little beyond their
own caption (benchmarks/RESULTS.md). With `first_row_loss_weight` W, the image tokens of the first row of the code
grid weigh W times the others (weights normalised to mean 1, so W = 1 is the plain mean): a frame's background is
decided by its first tokens (teacher forcing gives the rest away), so a frame after a move teaches leaving the
source frame's background through about one token of its 256 (the image loss is the weighted mean).

With `change_loss_weight` C, the image tokens of frames 2..L that differ from the source frame's token at the same
position weigh C times the others of the frame (each frame's weights keep mean 1): they are where a character
enters, leaves or changes pose, which a model that copies the source frame gets wrong (on sprites it drew 36% of
the characters entering a story, 84% of those kept). With `onset_loss_weight` O, only the changed tokens whose
left and upper neighbours equal the source's (the first token of a change in raster order: where the model decides
to draw an arriving character or to drop a departed one, or a new pose) weigh O times the others; the copyable
tokens and the rest of a change keep their weight. With `input_noise` P, a share P of the image tokens that
frames 2..L are given as inputs (never the targets, nor the source frame) are replaced by random codes: with
teacher forcing a frame's own earlier tokens give most of the next one away (a character's look, once its first
tokens are drawn), so a model trained on clean inputs has little reason to read the source frame, and a copy path
never sees a drawn frame that went wrong; noisy inputs show it both (`corrupt_inputs`).

`mode` "prompt" in the model config trains only the new parts and the embeddings.

Recipe (sprites, 64 px): `storyviz train vqgan`, `storyviz data tokenize`, `storyviz train dalle` on single
frames, then `storyviz train storydalle --set model.pretrained=DALLE_RUN/model --set model.codes=CODES`.
`model.pretrained` may also be a trained StoryDALL-E bundle: training goes on from it, with more cross-attention
layers when `model.model.cross_attention_every` asks for them (e.g. 1 on a model trained with 3).
The product (`run_dir/model`) is a "storydalle-bundle": transformer/ (StoryDalle), tokenizer/, image_tokenizer/.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from storyviz.config import Config, ConfigError
from storyviz.convert.bundle import DALLE_BUNDLE, read_bundle_config, write_bundle
from storyviz.data.codes import check_codes_match, open_codes
from storyviz.data.sentences import story_sentence_embeddings
from storyviz.data.store import open_dataset
from storyviz.models.dalle import Dalle
from storyviz.models.storydalle import PRESETS as MODEL_PRESETS
from storyviz.models.storydalle import StoryDalle, StoryDalleConfig
from storyviz.registry import load_model
from storyviz.text import TextTokenizer
from storyviz.training.task import Task, TrainConfig
from storyviz.training.tasks.dalle import caption_tokenizer
from storyviz.weights import read_weights_config

BUNDLE_TYPE = "storydalle-bundle"


@dataclass(frozen=True)
class StoryDalleTaskConfig(Config):
    model: StoryDalleConfig = field(default_factory=lambda: MODEL_PRESETS["small"])
    # a DALL-E bundle folder (`storyviz train dalle`'s run_dir/model) to adapt to stories, or a StoryDALL-E one
    # to train further (its architecture, with model.cross_attention_every free to add layers); "" = from scratch
    pretrained: str = ""
    image_tokenizer: str = ""  # only when training from scratch (a pretrained bundle brings its own)
    codes: str = ""  # pre-computed codes of the data set (`storyviz data tokenize`)
    text_loss_weight: float = 0.1
    caption_dropout: float = 0.1
    captions: Literal["plain", "pronoun", "both"] = "both"
    visualization_rows: bool = True
    vocab_size: int = 1024  # BPE vocabulary when training from scratch
    story_code_loss_weight: float = 0.0  # the auxiliary story-token loss (module docstring); 0 = off
    first_row_loss_weight: float = 1.0  # weight of the first row of image tokens vs the others (module docstring)
    change_loss_weight: float = 1.0  # weight of tokens that differ from the source's at the same place (docstring)
    onset_loss_weight: float = 1.0  # weight of the first token of each change (module docstring)
    input_noise: float = 0.0  # share of frames 2..L's input image tokens replaced by random codes (docstring)

    def __post_init__(self):
        if self.first_row_loss_weight <= 0:
            raise ConfigError(f"first_row_loss_weight: expected > 0, got {self.first_row_loss_weight}")
        if self.story_code_loss_weight < 0:
            raise ConfigError(f"story_code_loss_weight: expected >= 0, got {self.story_code_loss_weight}")
        if self.change_loss_weight <= 0:
            raise ConfigError(f"change_loss_weight: expected > 0, got {self.change_loss_weight}")
        if self.onset_loss_weight <= 0:
            raise ConfigError(f"onset_loss_weight: expected > 0, got {self.onset_loss_weight}")
        if not 0.0 <= self.input_noise < 1.0:
            raise ConfigError(f"input_noise: expected a share in [0, 1), got {self.input_noise}")
        if self.story_code_loss_weight and not self.model.story_encoder:
            raise ConfigError("story_code_loss_weight > 0 needs a story encoder (model.story_encoder is false)")


class StoryItems(Dataset):
    """Story i -> {"codes" (L, N), "text_plain"/"text_pronoun" (L, T) int64, "sentences_plain"/... (L, E)}."""

    def __init__(self, codes, text: dict[str, np.ndarray], sentences: dict[str, np.ndarray]):
        self.codes, self.text, self.sentences = codes, text, sentences

    def __len__(self) -> int:
        return len(self.codes)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        item = {"codes": torch.as_tensor(self.codes[index], dtype=torch.long)}
        for version in self.text:
            item[f"text_{version}"] = torch.as_tensor(self.text[version][index])
            item[f"sentences_{version}"] = torch.as_tensor(self.sentences[version][index], dtype=torch.float32)
        return item


# CPU recipe: 4 stories (20 frames of [story token | 40 text | 256 image tokens]) per step
_CPU_TRAINING = TrainConfig(
    steps=3000, batch_size=4, lr=3e-4, warmup_steps=100, weight_decay=0.01, log_every=25, checkpoint_every=250
)


class StoryDalleTask(Task):
    name = "storydalle"
    model_presets = {
        "tiny": StoryDalleTaskConfig(model=MODEL_PRESETS["tiny"], vocab_size=64),
        "small": StoryDalleTaskConfig(),
        "small-prompt": StoryDalleTaskConfig(model=MODEL_PRESETS["small-prompt"]),
    }
    train_presets = {
        "tiny": TrainConfig(steps=4, batch_size=2, lr=1e-3, warmup_steps=1, log_every=1, checkpoint_every=2),
        "small": _CPU_TRAINING,
        "small-prompt": _CPU_TRAINING.replace(lr=1e-3, weight_decay=0.0),  # only the new parts train
    }

    def __init__(self, model_config: StoryDalleTaskConfig, data: str):
        super().__init__(model_config, data)
        if not model_config.codes:
            raise ConfigError("storydalle: set model.codes to the folder made by `storyviz data tokenize`")
        self.codes = open_codes(model_config.codes)
        dataset = open_dataset(data)
        check_codes_match(self.codes, dataset)
        self.meta = dataset.meta
        if model_config.pretrained:
            folder = Path(model_config.pretrained)
            kind = read_weights_config(folder)["model_type"]
            if kind not in (DALLE_BUNDLE, BUNDLE_TYPE):
                raise ConfigError(
                    f"model.pretrained {folder}: a {kind!r} folder; expected a DALL-E bundle "
                    f"(`storyviz train dalle`'s run_dir/model) or a StoryDALL-E one (`storyviz train storydalle`'s)"
                )
            parts = read_bundle_config(folder, kind)["config"]["parts"]
            if "image_tokenizer" not in parts:
                raise ConfigError(f"{folder}: the bundle has no image tokenizer to build the story model on")
            self.tokenizer = TextTokenizer.from_pretrained(folder / parts["tokenizer"])
            self.image_tokenizer_dir = folder / parts["image_tokenizer"]
            self.base_dir = folder / parts["transformer"]
        else:
            if not model_config.image_tokenizer:
                raise ConfigError("storydalle: from scratch, set model.image_tokenizer (or model.pretrained)")
            self.image_tokenizer_dir = Path(model_config.image_tokenizer)
            self.base_dir = None
            length = model_config.model.dalle.text_len
            self.tokenizer = caption_tokenizer(dataset, self.codes, model_config.vocab_size, length)
        self.versions = ["plain", "pronoun"] if model_config.captions == "both" else [model_config.captions]
        story = model_config.model
        self.minilm_sentences = story.story_encoder and story.story.sentences == "minilm"

    @functools.cached_property
    def _config(self) -> StoryDalleConfig:
        """The model config: from the pretrained DALL-E's architecture when adapting one (read once)."""
        config = self.model_config.model
        if self.base_dir is not None:
            base = load_model(self.base_dir).config
            if isinstance(base, StoryDalleConfig):  # a story model: its architecture, grown as asked
                config = base.grown(config)
            else:
                config = config.replace(dalle=base.replace(prefix_len=config.prefix_len))
        if self.base_dir is None:  # from scratch: the sizes follow the codes and the tokenizer
            dalle = config.dalle.replace(image_len=self.codes.image_len, image_vocab_size=self.codes.codebook_size)
            config = config.replace(dalle=dalle)
        if config.dalle.image_len != self.codes.image_len or config.dalle.image_vocab_size != self.codes.codebook_size:
            raise ConfigError(
                f"storydalle: the transformer takes {config.dalle.image_len} image tokens over "
                f"{config.dalle.image_vocab_size} codes; {self.codes.path} holds {self.codes.image_len} tokens over "
                f"{self.codes.codebook_size} codes"
            )
        return config.replace(dalle=config.dalle.replace(text_vocab_size=max(self.tokenizer.vocab_size, 1)))

    def build_model(self) -> nn.Module:
        config = self._config
        if self.base_dir is None:
            return StoryDalle(config)
        base: Dalle | StoryDalle = load_model(self.base_dir)
        if isinstance(base, StoryDalle):
            return StoryDalle.from_story(base, config)
        if base.config.text_vocab_size != config.dalle.text_vocab_size:
            base.resize_text_embeddings(config.dalle.text_vocab_size)
        return StoryDalle.from_dalle(base, config)

    def build_extras(self) -> dict[str, nn.Module]:
        if not self.model_config.story_code_loss_weight:
            return {}
        dalle = self._config.dalle
        head = nn.Linear(dalle.width, dalle.image_vocab_size)
        with torch.no_grad():  # start at the codebook's base rates, which the head would otherwise learn slowly
            presence = code_presence(self.codes.split("train"), self.codes.codebook_size)
            head.bias.copy_(torch.logit(presence, eps=1e-4))
        return {"story_codes": head}

    def dataset(self, split: str) -> Dataset:
        stories = open_dataset(self.data).split(split)
        text, sentences = {}, {}
        for version in self.versions:
            captions = stories.caption_table(pronoun=version == "pronoun")
            flat = [caption for row in captions for caption in row]
            ids = self.tokenizer.encode(flat).ids.numpy()
            text[version] = ids.reshape(len(captions), -1, ids.shape[-1])
            if self.minilm_sentences:
                sentences[version] = story_sentence_embeddings(self.data, split, version, self.model_config.codes)
            else:  # none needed: no story encoder, or a scratch sentence encoder that reads the text tokens
                sentences[version] = np.zeros((len(captions), text[version].shape[1], 1), dtype=np.float16)
        return StoryItems(self.codes.split(split), text, sentences)

    def loss(self, model: StoryDalle, batch: Any, step: int, extras: nn.ModuleDict) -> tuple[torch.Tensor, dict]:
        codes = batch["codes"]  # (S, L, N)
        stories, length, _ = codes.shape
        version = torch.randint(len(self.versions), (stories,))
        text = torch.stack([batch[f"text_{self.versions[v]}"][i] for i, v in enumerate(version.tolist())])
        sentences = torch.stack([batch[f"sentences_{self.versions[v]}"][i] for i, v in enumerate(version.tolist())])
        if model.sentence_encoder is not None:  # the scratch encoder reads the (un-dropped) caption tokens
            flat = text.flatten(0, 1)
            sentences = model.sentence_embeddings(flat, flat != model.config.dalle.pad_id).view(stories, length, -1)
        story = model.story_tokens(sentences)  # (S, L, D) or None
        dropped = torch.rand(stories, length) < self.model_config.caption_dropout
        text = text.masked_fill(dropped[..., None], model.config.dalle.pad_id)
        frames = torch.arange(length).expand(stories, length)
        source = codes[:, :1].expand(-1, length, -1)
        keep = frames >= (0 if self.model_config.visualization_rows else 1)
        rows = lambda t: t[keep]  # noqa: E731  (S, L, ...) -> (rows, ...)
        inputs = corrupt_inputs(codes, frames > 0, self.model_config.input_noise, model.config.dalle.image_vocab_size)
        text_logits, image_logits = model(
            rows(text),
            rows(inputs),
            story=None if story is None else rows(story),
            source=rows(source),
            source_rows=rows(frames) > 0,
        )
        token_losses = F.cross_entropy(image_logits.flatten(0, 1).float(), rows(codes).flatten(), reduction="none")
        image_loss = token_losses.mean()
        weights = image_position_weights(codes.shape[-1], self.model_config.first_row_loss_weight).to(codes.device)
        weights = weights * change_weights(
            rows(codes), rows(source), rows(frames) > 0, self.model_config.change_loss_weight
        )
        weights = weights * onset_weights(
            rows(codes), rows(source), rows(frames) > 0, self.model_config.onset_loss_weight
        )
        targets = rows(text)[:, -text_logits.shape[1] :]
        text_loss = F.cross_entropy(
            text_logits.flatten(0, 1).float(), targets.flatten(), ignore_index=model.config.dalle.pad_id
        )
        if not torch.isfinite(text_loss):  # every caption dropped: no text target
            text_loss = text_logits.sum() * 0.0
        weighted = (token_losses.view_as(weights) * weights).sum() / weights.sum()
        loss = weighted + self.model_config.text_loss_weight * text_loss
        logs = {"image_loss": image_loss.item(), "text_loss": text_loss.item()}
        if "story_codes" in extras:
            code_loss = story_code_loss(extras["story_codes"](story), codes)
            loss = loss + self.model_config.story_code_loss_weight * code_loss
            logs["story_code_loss"] = code_loss.item()
        return loss, logs

    def trainable_parameters(self, model: StoryDalle, extras: nn.ModuleDict):
        return model.trainable_parameters() + list(extras.parameters())

    def export(self, model: nn.Module, directory: Path, extra: dict[str, Any]) -> None:
        image_tokenizer = load_model(self.image_tokenizer_dir)
        parts = {"transformer": model, "tokenizer": self.tokenizer, "image_tokenizer": image_tokenizer}
        write_bundle(directory, BUNDLE_TYPE, parts, extra={**extra, "data": self.meta.get("name")})


def image_position_weights(image_len: int, first_row_weight: float) -> torch.Tensor:
    """(image_len,) loss weights of the image positions: the first row of the square code grid `first_row_weight`
    times the others, normalised to mean 1."""
    weights = torch.ones(image_len)
    weights[: math.isqrt(image_len)] = first_row_weight
    return weights / weights.mean()


def change_weights(codes: torch.Tensor, source: torch.Tensor, has_source: torch.Tensor, weight: float) -> torch.Tensor:
    """codes, source (B, N), has_source (B,) bool -> (B, N) loss weights: in a row with a source frame, the tokens
    that differ from the source's at the same position weigh `weight` times the others; every row's weights have
    mean 1, so a frame that changes everywhere (a new setting) weighs as before (module docstring)."""
    return _lifted((codes != source) & has_source[:, None], weight)


def onset_weights(codes: torch.Tensor, source: torch.Tensor, has_source: torch.Tensor, weight: float) -> torch.Tensor:
    """codes, source (B, N) on a square grid, has_source (B,) bool -> (B, N) loss weights: in a row with a source
    frame, a token that differs from the source's while its left and upper neighbours (where the grid has them) equal
    theirs weighs `weight` times the others; each row's weights have mean 1 (module docstring)."""
    side = math.isqrt(codes.shape[-1])
    agrees = (codes == source).view(-1, side, side)
    left, up = torch.ones_like(agrees), torch.ones_like(agrees)
    left[:, :, 1:], up[:, 1:] = agrees[:, :, :-1], agrees[:, :-1]
    return _lifted((~agrees & left & up).flatten(1) & has_source[:, None], weight)


def _lifted(marked: torch.Tensor, weight: float) -> torch.Tensor:
    """marked (B, N) bool -> (B, N) loss weights: the marked tokens `weight` times the others, each row of mean 1."""
    weights = 1.0 + (weight - 1.0) * marked.float()
    return weights / weights.mean(dim=-1, keepdim=True)


def corrupt_inputs(codes: torch.Tensor, frames: torch.Tensor, share: float, codebook_size: int) -> torch.Tensor:
    """codes (S, L, N), frames (S, L) bool: the frames to corrupt -> a copy of codes in which each token of those
    frames is replaced by a uniformly random code with probability `share` (module docstring)."""
    if not share:
        return codes
    hit = (torch.rand(codes.shape, device=codes.device) < share) & frames[..., None]
    return torch.where(hit, torch.randint_like(codes, codebook_size), codes)


def story_code_loss(logits: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """logits (S, L, V) from the story tokens, codes (S, L, N) -> binary cross-entropy of "code v occurs in frame
    l", averaged over codebook entries and frames."""
    return F.binary_cross_entropy_with_logits(logits.float(), _multi_hot(codes, logits.shape[-1]))


def code_presence(codes, codebook_size: int, stories: int = 1000) -> torch.Tensor:
    """The share of frames in which each code occurs (codebook_size,), over the first `stories` stories of a
    CodeSplit."""
    sample = torch.as_tensor(np.stack([codes[index] for index in range(min(stories, len(codes)))]), dtype=torch.long)
    return _multi_hot(sample, codebook_size).flatten(0, -2).mean(dim=0)


def _multi_hot(codes: torch.Tensor, size: int) -> torch.Tensor:
    """codes (..., N) int64 -> (..., size) float: 1 where the code occurs among the N."""
    return torch.zeros(*codes.shape[:-1], size, device=codes.device).scatter_(-1, codes, 1.0)
