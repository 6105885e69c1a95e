"""Training task "scorer": the re-ranking scorer (storyviz.models.scorer) on a data set's captions and frames.

    storyviz train scorer --preset small --data DATA_DIR --out RUN_DIR

One item is one story (its L frames and captions); a batch of S stories gives S*L caption-frame pairs, and the
loss is CLIP's: symmetric cross-entropy over the S*L x S*L similarities, each caption's own frame the right one.
The other frames of the same story are among the wrong ones, so the scorer learns what tells the frames of one
story apart (who is there, what each one does, where they are), which is what re-ranking candidates of one
caption needs. With `name_negatives` N, each frame is also scored against N copies of its caption, each with
one name (a word capitalised inside a sentence) swapped for another name of the training captions: wrong
captions it must rank below its own, since the candidates of one caption differ mostly in who is drawn
(benchmarks/RESULTS.md, "How much re-ranking can gain"). With `cast_weight` W > 0 the scorer also gets its cast
heads (storyviz.models.scorer, `names`): the image head learns which names a frame's plain caption holds, the
text head what the image head sees in the caption's own frame (`cast_losses`), both added to the loss with
weight W; the names are kept in the bundle's config.json. With `--set model.model.context=K` each caption also
reads its story's K earlier captions (of the same version: "she" after "Luna sits."). No label of the data set is
read. Each story's captions are plain or pronoun ("both": one drawn per story and step). Frames are shifted by up
to 2 px, blurred by a random amount (generated frames are softer than the originals) and get faint noise.

The caption tokenizer is a word-level vocabulary of the training captions (`TextTokenizer.words`: the same one
on every resume). The product (`run_dir/model`) is a "scorer-bundle" (scorer/ + tokenizer/), whose config.json
records `retrieval`: on the held-out split, the share of captions whose own frame has the highest contrastive
similarity (the cast heads not counted) among the frames of its story (`retrieval_group` "story"), or among 32
frames for a data set of single frames.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from storyviz.config import Config, ConfigError
from storyviz.convert.bundle import write_bundle
from storyviz.data import open_dataset
from storyviz.models.scorer import PRESETS, Scorer, ScorerConfig, story_context
from storyviz.text import TextTokenizer
from storyviz.training.task import Task, TrainConfig
from storyviz.training.tasks.dalle import split_captions
from storyviz.training.tasks.judge import augment
from storyviz.weights import update_weights_config

SCORER_BUNDLE = "scorer-bundle"
HELDOUT_SPLIT = "val"
SINGLE_FRAME_GROUP = 32  # held-out retrieval among this many frames when stories have one frame


@dataclass(frozen=True)
class ScorerTaskConfig(Config):
    model: ScorerConfig = field(default_factory=lambda: PRESETS["small"])
    captions: Literal["plain", "pronoun", "both"] = "both"
    blur: float = 0.7  # the most a frame is blended with its 3x3 average (a uniform share in [0, blur])
    # each frame is also scored against this many copies of its caption with one name swapped for another (wrong
    # captions to reject; each copy swaps at random)
    name_negatives: int = 0
    # cast heads (storyviz.models.scorer, `names`) over the names of the training captions, trained with this
    # weight on their two losses (0: no heads)
    cast_weight: float = 0.0

    def __post_init__(self):
        if self.name_negatives < 0:
            raise ConfigError(f"ScorerTaskConfig.name_negatives: expected a count >= 0, got {self.name_negatives}")
        if self.cast_weight < 0:
            raise ConfigError(f"ScorerTaskConfig.cast_weight: expected a weight >= 0, got {self.cast_weight}")
        if not 0 <= self.blur <= 1:
            raise ConfigError(f"ScorerTaskConfig.blur: expected a value in [0, 1], got {self.blur}")


class StoryPairs(Dataset):
    """Story i -> {"frames": uint8 (L, H, W, 3), "text_<version>": int64 (L, T)} for each caption version."""

    def __init__(self, stories, text: dict[str, torch.Tensor]):
        self.stories, self.text = stories, text

    def __len__(self) -> int:
        return len(self.stories)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        item = {"frames": torch.from_numpy(np.ascontiguousarray(self.stories[index]["frames"]))}
        return item | {f"text_{version}": ids[index] for version, ids in self.text.items()}


def images_of(frames: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (..., H, W, 3) -> float (N, 3, size, size) in [-1, 1] (area-resized when H differs)."""
    images = frames.reshape(-1, *frames.shape[-3:]).permute(0, 3, 1, 2).float() / 127.5 - 1
    if images.shape[-1] != size:
        images = F.interpolate(images, size=(size, size), mode="area")
    return images


def soften(images: torch.Tensor, most: float) -> torch.Tensor:
    """images (B, 3, H, W) -> each blended with its 3x3 average by a uniform random share in [0, most]."""
    share = torch.rand(len(images), 1, 1, 1) * most
    blurred = F.avg_pool2d(F.pad(images, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    return images + share * (blurred - images)


def contrastive_loss(
    model: Scorer,
    words: torch.Tensor,
    features: torch.Tensor,
    negatives: list[tuple[torch.Tensor, torch.Tensor]] = (),
    context: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """CLIP's symmetric loss over B pairs, from the captions' `text_features` (B, W) and the frames'
    `image_features` (B, F) -> (loss, similarities (B, B)). With `negatives` ([(ids (B, T) of one more wrong
    caption per frame, valid (B,) bool)]), each frame's row of the frame-to-caption cross-entropy also holds its
    wrong captions where valid; they read the true captions' `context` (B, K, T), if any."""
    pictures = model.image_embedding(features)
    similarity = model.similarity(model.text_embedding(words), pictures)
    target = torch.arange(len(words), device=words.device)
    per_frame = similarity.t()
    for wrong_ids, valid in negatives:
        wrong = model.scale() * (model.embed_text(wrong_ids, context) * pictures).sum(-1)
        per_frame = torch.cat([per_frame, wrong.masked_fill(~valid, float("-inf"))[:, None]], dim=1)
    loss = (F.cross_entropy(similarity, target) + F.cross_entropy(per_frame, target)) / 2
    return loss, similarity


def cast_losses(
    model: Scorer, words: torch.Tensor, features: torch.Tensor, named: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The cast heads' losses -> (image, text). The image head learns which names the frame's plain caption
    holds (`named`, (B, N) 0/1: a caption names everyone in its frame, and rarely one who is not, such as who
    leaves). The text head learns what the image head sees in the caption's own frame (detached), so it
    learns who a caption puts in the frame: not "Bo" in "Bo leaves", and whom "she" is likely to be."""
    drawn = model.image_names(features)
    image = F.binary_cross_entropy_with_logits(drawn, named)
    text = F.binary_cross_entropy_with_logits(model.text_names(words), torch.sigmoid(drawn.detach()))
    return image, text


def proper_nouns(captions) -> list[str]:
    """The words written with a capital letter inside a sentence (in story captions: the names), lowercased."""
    names = set()
    for caption in captions:
        for sentence in re.split(r"[.!?]", caption):
            words = re.findall(r"[A-Za-z']+", sentence)
            names.update(word.lower() for word in words[1:] if word[0].isupper())
    return sorted(names)


def swap_names(ids: torch.Tensor, name_ids: torch.Tensor, tries: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """ids (B, T) -> (the same with one name token, chosen at random, replaced by another name that the caption
    does not hold; valid (B,) bool: the rows that had a name and got a new one)."""
    is_name = torch.isin(ids, name_ids)
    has_name = is_name.any(1)
    position = torch.multinomial(is_name.float() + (~has_name)[:, None].float(), 1)[:, 0]
    choice = name_ids[torch.randint(len(name_ids), (len(ids),))]
    for _ in range(tries):  # draw again where the new name is already in the caption
        held = (ids == choice[:, None]).any(1)
        choice = torch.where(held, name_ids[torch.randint(len(name_ids), (len(ids),))], choice)
    swapped = ids.clone()
    swapped[torch.arange(len(ids)), position] = choice
    return swapped, has_name & ~(ids == choice[:, None]).any(1)


def context_of(model: Scorer, ids: torch.Tensor, stories: int) -> torch.Tensor | None:
    """The caption ids (S*L, T) of S whole stories, in story order -> what each caption reads before it (S*L, K, T),
    or None for a scorer without context."""
    if not model.config.context:
        return None
    story_ids = ids.view(stories, -1, ids.shape[-1])
    return story_context(story_ids, model.config.context, model.config.pad_id).flatten(0, 1)


@torch.no_grad()
def retrieval(model: Scorer, tokenizer: TextTokenizer, stories, group: int = 0, stories_at_once: int = 64) -> float:
    """The share of captions (plain) whose own frame scores highest among a group of frames: the frames of their
    story (group 0), or `group` frames in story order (for data sets of single frames)."""
    model.eval()
    images, text = [], []
    for first in range(0, len(stories), stories_at_once):
        chunk = [stories[index] for index in range(first, min(first + stories_at_once, len(stories)))]
        frames = torch.from_numpy(np.stack([story["frames"] for story in chunk]))  # (S, L, H, W, 3)
        images.append(model.embed_images(images_of(frames, model.config.image_size)))
        ids = tokenizer.encode([c for story in chunk for c in story["captions"]]).ids
        text.append(model.embed_text(ids, context_of(model, ids, len(chunk))))
    images, text = torch.cat(images), torch.cat(text)
    size = min(group or len(stories[0]["captions"]), len(images))
    count = len(images) // size * size
    images, text = images[:count].view(-1, size, images.shape[-1]), text[:count]
    best = (text.view(images.shape) @ images.transpose(1, 2)).argmax(-1)  # (groups, size): the frame each picks
    return float((best == torch.arange(size)).float().mean())


class ScorerTask(Task):
    name = "scorer"
    model_presets = {
        "tiny": ScorerTaskConfig(model=PRESETS["tiny"]),
        "small": ScorerTaskConfig(),
    }
    train_presets = {
        "tiny": TrainConfig(steps=4, batch_size=2, lr=1e-3, warmup_steps=1, log_every=1, checkpoint_every=0),
        "small": TrainConfig(
            steps=3000, batch_size=16, lr=1e-3, warmup_steps=100, weight_decay=0.01, log_every=50,
            checkpoint_every=500,
        ),
    }  # fmt: skip

    def __init__(self, model_config: ScorerTaskConfig, data: str):
        self.store = open_dataset(data)
        train = self.store.split("train")
        self.versions = ["plain", "pronoun"] if model_config.captions == "both" else [model_config.captions]
        if "pronoun" in self.versions and not train.has_pronouns:
            if model_config.captions == "pronoun":
                raise ConfigError(f"{data}: captions='pronoun', but the data set has no pronoun captions")
            self.versions = ["plain"]
        length = model_config.model.text_len
        captions = split_captions(train, model_config.captions if len(self.versions) == 2 else self.versions[0])
        self.tokenizer = TextTokenizer.words(captions, length=length)
        vocab = self.tokenizer.tokenizer.get_vocab()
        self.names = [name for name in proper_nouns(captions) if name in vocab]
        self.name_ids = torch.tensor([vocab[name] for name in self.names], dtype=torch.long)
        wanted = [option for option in ("name_negatives", "cast_weight") if getattr(model_config, option)]
        if wanted and len(self.names) < 2:
            raise ConfigError(f"{data}: {wanted[0]} needs at least 2 names in the captions, found {len(self.names)}")
        if model_config.cast_weight and "plain" not in self.versions:
            raise ConfigError(f"{data}: cast_weight needs plain captions (captions='plain' or 'both')")
        model = model_config.model.replace(
            names=len(self.names) if model_config.cast_weight else 0,
            text_vocab_size=self.tokenizer.vocab_size,
            pad_id=self.tokenizer.pad_id,
            image_size=int(self.store.meta["image_size"]),
        )
        super().__init__(model_config.replace(model=model), data)

    def build_model(self) -> nn.Module:
        return Scorer(self.model_config.model)

    def dataset(self, split: str) -> Dataset:
        stories = self.store.split(split)
        text = {}
        for version in self.versions:
            captions = stories.caption_table(pronoun=version == "pronoun")
            ids = self.tokenizer.encode([caption for story in captions for caption in story]).ids
            text[version] = ids.view(len(captions), -1, ids.shape[-1])
        return StoryPairs(stories, text)

    def loss(self, model: Scorer, batch: Any, step: int, extras: nn.ModuleDict) -> tuple[torch.Tensor, dict]:
        frames = batch["frames"]  # (S, L, H, W, 3)
        version = torch.randint(len(self.versions), (frames.shape[0],)).tolist()
        ids = torch.stack([batch[f"text_{self.versions[v]}"][i] for i, v in enumerate(version)]).flatten(0, 1)
        images = images_of(frames, model.config.image_size)
        if model.training:
            images = augment(soften(images, self.model_config.blur))
        count = self.model_config.name_negatives if model.training else 0
        negatives = [swap_names(ids, self.name_ids) for _ in range(count)]
        context = context_of(model, ids, frames.shape[0])
        words, features = model.text_features(ids, context), model.image_features(images)
        loss, similarity = contrastive_loss(model, words, features, negatives, context)
        length = frames.shape[1]
        logs = {
            "accuracy": (similarity.argmax(1) == torch.arange(len(ids))).float().mean().item(),
            "scale": model.scale().item(),
        }
        if model.config.names:
            named = (batch["text_plain"].flatten(0, 1)[:, :, None] == self.name_ids).any(1).float()  # (S*L, N)
            image_loss, text_loss = cast_losses(model, words, features, named)
            loss = loss + self.model_config.cast_weight * (image_loss + text_loss)
            logs |= {"cast_image": image_loss.item(), "cast_text": text_loss.item()}
        if length > 1:
            same_story = similarity.view(-1, length, frames.shape[0], length).diagonal(dim1=0, dim2=2)  # (L, L, S)
            picks = same_story.argmax(dim=1)  # (L, S): the frame of its story each caption picks
            logs["story_accuracy"] = (picks == torch.arange(length)[:, None]).float().mean().item()
        return loss, logs

    def export(self, model: nn.Module, directory: Path, extra: dict[str, Any]) -> None:
        """Writes the scorer bundle, then measures it on the held-out split (config.json `retrieval`)."""
        parts = {"scorer": model, "tokenizer": self.tokenizer}
        names = {"names": self.names} if self.model_config.model.names else {}
        write_bundle(directory, SCORER_BUNDLE, parts, extra={**extra, "data": self.store.meta.get("name"), **names})
        if HELDOUT_SPLIT in self.store.splits:
            stories = self.store.split(HELDOUT_SPLIT)
            group = 0 if self.store.meta["frames_per_story"] > 1 else SINGLE_FRAME_GROUP
            accuracy = retrieval(model, self.tokenizer, stories, group)
            fields = {"heldout_split": HELDOUT_SPLIT, "retrieval": accuracy, "retrieval_group": group or "story"}
            update_weights_config(directory, fields)
