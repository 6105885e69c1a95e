"""Training task "judge": a frame classifier on a data set's ground-truth labels (storyviz.models.judge).

    storyviz train judge --preset small --data DATA_DIR --out RUN_DIR

reads single frames of the train split (`open_dataset(path).split("train").frames()`), and minimises the sum over
label heads of cross-entropy ("single" heads, unknown = -1 ignored) and binary cross-entropy ("multi" heads). The
only augmentation is a shift of up to `SHIFT` pixels (edge pixels repeated) plus faint noise: no flips (left and
right slots are labels) and no colour changes (colours are labels). When no head labels a screen position (the
digits set), frames are also rotated, scaled and moved a little (`warp`): that changes no label there. When the
model config has no heads, they and the image size are taken from the data set's meta.json, so a judge describes
the data it was trained on.
After training, the judge's held-out accuracy on the val split must be measured and stored in its config.json,
without which `load_judge` refuses it: `train_judge(data, run_dir)` trains and certifies in one call;
`JudgeTask.export` certifies the exported judge, so `storyviz train judge` gives a usable judge;
`storyviz.evaluation.judges.certify_judge(model_dir, open_dataset(data))` does it by hand.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from storyviz.config import ConfigError
from storyviz.evaluation.judges import frames_to_images
from storyviz.models.judge import PRESETS, Judge, JudgeConfig
from storyviz.training.task import Task, TrainConfig

SHIFT = 2  # pixels, at 64 px
NOISE = 0.02  # standard deviation, images in [-1, 1]
HELDOUT_SPLIT = "val"
POSITION_HEADS = ("left.", "centre.", "right.")  # heads that label a screen position: no warp then


class JudgeFrames(Dataset):
    """The single frames of one split as {"image": float (3, S, S) in [-1, 1], "labels": {head: tensor}}.

    Multi heads give float (C,) multi-hot targets, single heads int64 scalars (-1 = unknown). A split of up to
    `MEMORY_LIMIT` bytes of frames is read into memory on first access (a judge's data is small; random frame
    access to the compressed story chunks would otherwise decompress a whole story per frame).
    """

    MEMORY_LIMIT = 2 * 1024**3

    def __init__(self, stories: Dataset, config: JudgeConfig):
        self.stories = stories
        self.frames = stories.frames()
        self.config = config
        self._memory: tuple[np.ndarray, dict[str, np.ndarray]] | None = None

    def __len__(self) -> int:
        return len(self.frames)

    def _load(self) -> tuple[np.ndarray, dict[str, np.ndarray]] | None:
        if self._memory is None:
            size = self.stories.meta["image_size"]
            if len(self.frames) * size * size * 3 > self.MEMORY_LIMIT:
                return None
            stories = [self.stories[index] for index in range(len(self.stories))]
            frames = np.concatenate([story["frames"] for story in stories])
            labels = {
                head.name: np.concatenate([story["labels"][head.name] for story in stories])
                for head in self.config.heads
            }
            self._memory = frames, labels
        return self._memory

    def __getitem__(self, index: int) -> dict[str, Any]:
        memory = self._load()
        if memory is None:
            item = self.frames[index]
            frame, values = item["image"], item["labels"]
        else:
            frame, values = memory[0][index], {name: value[index] for name, value in memory[1].items()}
        image = frames_to_images(np.asarray(frame)[None], self.config.image_size)[0]
        labels = {}
        for head in self.config.heads:
            value = np.asarray(values[head.name])
            if head.type == "multi":
                labels[head.name] = torch.from_numpy(value.astype(np.float32))
            else:
                labels[head.name] = torch.tensor(int(value), dtype=torch.int64)
        return {"image": image, "labels": labels}


def augment(images: torch.Tensor, shift: int = SHIFT, noise: float = NOISE) -> torch.Tensor:
    """images (B, 3, H, W) -> each shifted by up to `shift` pixels (scaled to the image size), plus Gaussian noise."""
    shift = max(0, round(shift * images.shape[-1] / 64))
    if shift:
        height, width = images.shape[-2:]
        padded = F.pad(images, (shift,) * 4, mode="replicate")
        offsets = torch.randint(0, 2 * shift + 1, (len(images), 2))
        images = torch.stack([padded[i, :, y : y + height, x : x + width] for i, (y, x) in enumerate(offsets.tolist())])
    return (images + noise * torch.randn_like(images)).clamp(-1, 1)


def warp(images: torch.Tensor, degrees: float = 10.0, scale: float = 0.1, move: float = 0.08) -> torch.Tensor:
    """images (B, 3, H, W) -> each rotated by up to `degrees`, scaled by 1 +- `scale`, moved by up to `move`
    of the image size (bilinear, edge pixels repeated)."""
    count = len(images)
    angle = (torch.rand(count) * 2 - 1) * degrees * torch.pi / 180
    factor = 1 + (torch.rand(count) * 2 - 1) * scale
    cos, sin = torch.cos(angle) / factor, torch.sin(angle) / factor
    offset = (torch.rand(count, 2) * 2 - 1) * move * 2
    theta = torch.stack([torch.stack([cos, -sin, offset[:, 0]], 1), torch.stack([sin, cos, offset[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def judge_loss(logits: dict[str, torch.Tensor], labels: dict[str, torch.Tensor], config: JudgeConfig):
    """Sum over heads of CE (single; -1 ignored) and BCE (multi; entries other than 0/1 ignored).

    Returns (scalar loss, {"loss/<head>": value}).
    """
    total = logits[config.heads[0].name].new_zeros(())
    logs = {}
    for head in config.heads:
        output, target = logits[head.name], labels[head.name]
        if head.type == "multi":
            known = (target == 0) | (target == 1)
            if not known.any():
                continue
            loss = F.binary_cross_entropy_with_logits(output[known], target[known].float())
        else:
            if not (target >= 0).any():
                continue
            loss = F.cross_entropy(output, target, ignore_index=-1)
        total = total + loss
        logs[f"loss/{head.name}"] = loss.item()
    return total, logs


class JudgeTask(Task):
    name = "judge"
    model_presets = PRESETS
    train_presets = {
        "tiny": TrainConfig(steps=20, batch_size=16, lr=3e-3, warmup_steps=2, log_every=5, checkpoint_every=10),
        "small": TrainConfig(steps=3000, batch_size=32, lr=2e-3, warmup_steps=50, log_every=50, checkpoint_every=500),
    }

    def __init__(self, model_config: JudgeConfig, data: str):
        from storyviz.data import open_dataset

        self.store = open_dataset(data)
        labels = self.store.meta.get("labels")
        if not labels:
            raise ConfigError(f"{data}: meta.json has no label heads to train a judge on")
        if not model_config.heads:
            model_config = model_config.replace(
                heads=JudgeConfig.heads_from_meta(labels), image_size=int(self.store.meta["image_size"])
            )
        missing = sorted(set(head.name for head in model_config.heads) - set(labels))
        if missing:
            raise ConfigError(f"{data}: the judge config has head(s) {missing} that the data set does not label")
        super().__init__(model_config, data)
        self.position_free = not any(head.name.startswith(POSITION_HEADS) for head in model_config.heads)

    def build_model(self) -> nn.Module:
        return Judge(self.model_config)

    def dataset(self, split: str) -> Dataset:
        return JudgeFrames(self.store.split(split), self.model_config)

    def loss(self, model: nn.Module, batch: Any, step: int, extras: nn.ModuleDict):
        images = batch["image"]
        if model.training:
            images = augment(warp(images) if self.position_free else images)
        return judge_loss(model(images), batch["labels"], self.model_config)

    def sample_images(self, model: nn.Module, batch: Any) -> torch.Tensor | None:
        return (batch["image"][:8] + 1) / 2

    def export(self, model: nn.Module, directory: Path, extra: dict[str, Any]) -> None:
        """Saves the judge, then measures it on the held-out split and stores its accuracy in config.json."""
        from storyviz.evaluation.judges import certify_judge

        super().export(model, directory, extra)
        certify_judge(directory, self.store, HELDOUT_SPLIT)


def train_judge(
    data: str,
    run_dir: str,
    preset: str = "small",
    steps: int | None = None,
    heldout_split: str = HELDOUT_SPLIT,
    **kwargs,
):
    """Trains a judge with the one training loop, then measures and stores its held-out accuracy.

    Returns (exported model folder, {head: held-out accuracy}). `kwargs` go to `storyviz.training.loop.train`.
    """
    from storyviz.config import pick_preset
    from storyviz.data import open_dataset
    from storyviz.evaluation.judges import certify_judge
    from storyviz.training.loop import train

    model_config = pick_preset(JudgeTask.model_presets, preset, "judge")
    train_config = pick_preset(JudgeTask.train_presets, preset, "judge training")
    if steps is not None:
        train_config = train_config.replace(steps=steps)
    model_dir = train("judge", model_config, train_config, data, run_dir, **kwargs)
    return model_dir, certify_judge(model_dir, open_dataset(data), heldout_split)
